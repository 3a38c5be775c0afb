"""Quiet command-line output: what a user needs, not TensorFlow's start-up log.

Importing TensorFlow prints half a dozen C++ log lines (oneDNN notices, "Could not find cuda drivers"
or "failed call to cuInit" on a machine without a GPU, which reads like a failure) before any logging
setting applies; tfds and absl add warnings of their own. `quiet_logs()` silences them for a CLI:
it raises TensorFlow's C++ log threshold, imports TensorFlow with the process's stderr pointed at a
scratch file (replayed if the import itself fails), and sets the Python loggers to errors only.
Every CLI calls it first, unless `--verbose`.
"""

import importlib.util
import logging
import os
import sys
import tempfile
import warnings


def _import_tensorflow_silently():
    stderr_fd = sys.stderr.fileno()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), stderr_fd)
        try:
            import tensorflow  # noqa: F401, PLC0415
        except BaseException:
            os.dup2(saved, stderr_fd)
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)


def quiet_tensorflow_import(argv):
    """Import TensorFlow without its start-up log now, unless `--verbose` is in `argv`.

    `training/__init__.py` calls this, so that a CLI module may import `keras_mixer` (and with it
    TensorFlow) at its top, before its `main()` has parsed the flags and called `quiet_logs`.
    """
    if "--verbose" in argv:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured by a test runner, say)
        return
    _import_tensorflow_silently()


def quiet_logs(verbose=False):
    """Silence TensorFlow's, tfds' and absl's start-up and info logs (all of them unless `verbose`)."""
    if verbose:
        return
    quiet_tensorflow_import(())
    import absl.logging  # noqa: PLC0415

    absl.logging.set_verbosity(absl.logging.ERROR)
    for name in ("tensorflow", "absl", "tensorflow_datasets", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")


def add_verbose_flag(parser):
    """`--verbose`: keep TensorFlow's own logs (every CLI has it)."""
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own logs")
