"""Quiet command-line output: what a user needs, not TensorFlow's start-up log.

Importing TensorFlow prints half a dozen C++ log lines (oneDNN notices, "Could not find cuda drivers"
or "failed call to cuInit" on a machine without a GPU, which reads like a failure) before any logging
setting applies; tfds and absl add warnings of their own. `quiet_logs()` silences them for a CLI:
it raises TensorFlow's C++ log threshold, imports TensorFlow with the process's stderr pointed at a
scratch file (replayed if the import itself fails), and sets the Python loggers to errors only.
Every CLI calls it first, unless `--verbose`.
"""

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings

# Set by `quiet_logs()` without --verbose: `native_stderr_silenced` then silences.
_quiet = False


@contextlib.contextmanager
def _stderr_fd_to(file):
    """Point the process's stderr (file descriptor 2, where C++ and C libraries write) at `file` in this block."""
    stderr_fd = 2  # not sys.stderr.fileno(): a test runner's capture may have replaced sys.stderr
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    os.dup2(file.fileno(), stderr_fd)
    try:
        yield saved  # the real stderr's descriptor, for what should still show
    finally:
        os.dup2(saved, stderr_fd)
        os.close(saved)


def _import_tensorflow_silently():
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        try:
            with _stderr_fd_to(scratch):
                import tensorflow  # noqa: F401, PLC0415
        except BaseException:
            scratch.seek(0)
            sys.stderr.write(scratch.read().decode(errors="replace"))
            raise


@contextlib.contextmanager
def native_stderr_silenced():
    """In a quiet CLI (`quiet_logs()` without --verbose), drop what native code writes to stderr in this block.

    Yields a text stream to the real stderr, for what should still show (a progress bar). libjpeg, for
    one, prints "Unsupported marker type 0x20" for a corrupt JPEG before TensorFlow raises the error
    that the CLI reports in its own words.
    """
    if not _quiet:
        yield sys.stderr
        return
    with open(os.devnull, "wb") as devnull, _stderr_fd_to(devnull) as real_stderr:
        with os.fdopen(os.dup(real_stderr), "w", buffering=1) as visible:
            yield visible


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
    global _quiet  # noqa: PLW0603  (one switch per process, as the log thresholds it sits beside)
    if verbose:
        return
    _quiet = True
    quiet_tensorflow_import(())
    import absl.logging  # noqa: PLC0415

    absl.logging.set_verbosity(absl.logging.ERROR)
    for name in ("tensorflow", "absl", "tensorflow_datasets", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")


def add_verbose_flag(parser):
    """`--verbose`: keep TensorFlow's own logs (every CLI has it)."""
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own logs")
