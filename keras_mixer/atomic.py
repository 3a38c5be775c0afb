"""Atomic writes: a reader never sees half a file, and a failed write leaves the old file intact.

The one helper that the library, `training/` and `benchmarks/` all use for files (standard library
only). Folders are published whole by `keras_mixer.export.staged_folder`.
"""

import contextlib
import json
import os


class WriteError(OSError):
    """A file could not be written (a full disk, say); the previous version of it is intact."""


@contextlib.contextmanager
def atomic_path(final):
    """A temporary path beside `final` (same extension) that becomes `final` when the block succeeds.

    A reader never sees half a file: the rename is atomic. On any failure the temporary file is
    removed and `final` keeps its previous content; an `OSError` (a full disk, say) becomes one
    `WriteError` that says so.

    Example:
    >>> import tempfile
    >>> final = os.path.join(tempfile.mkdtemp(), "x.txt")
    >>> with atomic_path(final) as temporary:
    ...     _ = open(temporary, "w").write("done")
    >>> open(final).read()
    'done'
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(final)))
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(folder, f".{stem}.partial-{os.getpid()}{extension}")
    existed = os.path.exists(final)
    try:
        yield temporary
        os.replace(temporary, final)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            if not os.path.isdir(folder):
                raise WriteError(f"Could not write {final}: its folder {folder} does not exist.") from error
            kept = "Its previous version is intact" if existed else "Nothing was left in its place"
            raise WriteError(
                f"Could not write {final}: {error.strerror or error}. {kept}; "
                "free some space (or fix the folder's permissions) and run the same command again."
            ) from error
        raise


def write_bytes_atomically(path, data):
    """Write `data` through `atomic_path`; returns `path`."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
    return path


def write_text_atomically(path, text):
    """Write `text` (UTF-8) through `atomic_path`; returns `path`."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path, payload):
    """Write JSON through `atomic_path` (a reader never sees half a file); returns `path`."""
    return write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def save_figure_atomically(figure, path, dpi=100):
    """Save a matplotlib figure as a PNG through `atomic_path`, close it, return `path`."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    plt.close(figure)
    return path
