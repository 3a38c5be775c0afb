"""Shared pieces of the training tests: a prepared offline Fashion-MNIST and a tiny-run CLI."""

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
