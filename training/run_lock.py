"""One training process per model dir: an exclusive OS lock held for the whole run.

`fcntl.flock` on `<model_dir>/.lock` is released by the operating system when the process ends,
however it ends (a SIGKILL included), so a dead run never leaves a stale lock. The holder writes its
pid, host and start time into the file; a second process that finds the lock taken reads them for
its error message and changes nothing. Under MultiWorkerMirroredStrategy only the chief locks.
"""

import fcntl
import json
import os
import socket
import time

LOCK_FILE = ".lock"


class RunDirLockedError(ValueError):
    """Another process is training into the same model dir."""


def holder_of(model_dir):
    """The lock holder's record ({"pid", "host", "started"}) or None."""
    try:
        with open(os.path.join(model_dir, LOCK_FILE)) as file:
            return json.loads(file.read() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder):
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def is_locked(model_dir):
    """Whether a live process holds the model dir's lock (checked without taking it for long)."""
    path = os.path.join(model_dir, LOCK_FILE)
    if not os.path.exists(path):
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


class RunLock:
    """`with RunLock(model_dir):` holds the dir's lock; raises `RunDirLockedError` if it is taken.

    Creates `model_dir` if needed (the only thing it writes before the lock is held).

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with RunLock(folder):
    ...     is_locked(folder)
    True
    """

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self._descriptor = None

    def __enter__(self):
        os.makedirs(self.model_dir, exist_ok=True)
        descriptor = os.open(os.path.join(self.model_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunDirLockedError(
                f"{self.model_dir} is in use by {_describe(holder_of(self.model_dir))}: two runs never write one "
                "model dir. Wait for it to finish (rerunning the same command then resumes or reports it), or use "
                "another --model-dir."
            ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps(record).encode())
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info):
        if self._descriptor is not None:
            os.close(self._descriptor)  # releases the lock
            self._descriptor = None
        return False
