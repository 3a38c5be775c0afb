"""The README's promises that a file can check: .ci/run runs the README's test command verbatim."""

import fnmatch
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _setup_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in command for command in commands)
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _setup_commands()[1] in ci_lines


def test_the_readme_preset_table_is_the_presets_data():
    from keras_mixer import PRESETS  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Presets", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `mixer_")]
    assert [row[0].strip().strip("`") for row in rows] == list(PRESETS)
    for row in rows:
        name, cells = row[0].strip().strip("`"), [cell.strip().replace(",", "") for cell in row]
        config = PRESETS[name]["config"]
        expected = [config[k] for k in ("num_blocks", "hidden_dim", "tokens_mlp_dim", "channels_mlp_dim", "patch_size")]
        assert [int(c) for c in cells[2:7]] == expected, name
        assert int(cells[8]) == PRESETS[name]["metadata"]["params"], name


def _checkout_files():
    """The repository's files as a fresh clone has them: git's tracked files (on disk if not a git checkout)."""
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listing.returncode == 0:
        return listing.stdout.splitlines()
    return [str(path.relative_to(ROOT)) for path in ROOT.rglob("*") if path.is_file()]


def test_every_repository_file_the_readme_names_is_in_a_fresh_clone():
    # Results JSON cited as evidence but ignored by git would be missing from every clone.
    readme = (ROOT / "README.md").read_text()
    folders = "benchmarks|docs|keras_mixer|training|tests|\\.ci"
    named = set(re.findall(rf"(?<![\w./*-])((?:{folders})/[\w./*-]*[\w*])", readme))
    files = _checkout_files()
    missing = sorted(
        path
        for path in named
        if not any(fnmatch.fnmatch(file, path) or file.startswith(path.rstrip("/") + "/") for file in files)
    )
    assert len(named) > 20 and not missing, missing
