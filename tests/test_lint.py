"""One linter configuration (ruff.toml) applied to the whole tree: lint and format."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
