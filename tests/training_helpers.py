"""Shared pieces of the training tests: a prepared offline Fashion-MNIST and a tiny-run CLI."""

import contextlib
import importlib
import io
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A Mixer small enough that an epoch of 1,024 images takes about a second on 2 cores.
TINY_RUN = [
    "--train-split", "train[:1024]",
    "--test-split", "test[:256]",
    "--validation-fraction", "0.125",
    "--patch-size", "7",
    "--num-blocks", "1",
    "--hidden-dim", "16",
    "--tokens-mlp-dim", "8",
    "--channels-mlp-dim", "32",
    "--batch-size", "64",
    "--steps-per-execution", "1",
    "--xla", "false",  # compiling this model costs more than XLA saves; one test runs the default (auto)
]  # fmt: skip


def run_module(module, *flags, env=None, timeout=600):
    """`python -m MODULE FLAGS...` from the repository root in a new process; returns the CompletedProcess.

    Every CLI test starts its command here (flags may be paths or numbers; they are passed as text).
    """
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, flags)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_train(*flags, env=None, timeout=300):
    """`python -m training.train` in a subprocess; returns the CompletedProcess."""
    return run_module("training.train", *flags, env=env, timeout=timeout)


def run_main_in_process(module, *flags):
    """`MODULE.main(FLAGS)` in this process, its output captured; returns a CompletedProcess like `run_module`.

    For bad-input cases, which each CLI refuses before any heavy work: a new process would spend most of
    its time importing TensorFlow. What a new process prints on bad input (one line, no framework logs)
    is tested through `run_module` in `test_robustness.py`.
    """
    argv = list(map(str, flags))
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            returncode = importlib.import_module(module).main(argv)
        except SystemExit as exit_:  # argparse refuses a flag this way
            returncode = exit_.code
    return subprocess.CompletedProcess([module, *argv], returncode, stdout.getvalue(), stderr.getvalue())
