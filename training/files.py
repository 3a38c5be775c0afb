"""Run artefacts on disk: atomic writes, the CSV history, and the loss/accuracy curves PNG."""

import contextlib
import csv
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
    folder, name = os.path.split(os.path.abspath(final))
    stem, extension = os.path.splitext(name)
    temporary = os.path.join(folder, f".{stem}.partial-{os.getpid()}{extension}")
    try:
        yield temporary
        os.replace(temporary, final)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(
                f"Could not write {final}: {error.strerror or error}. Its previous version is intact; "
                "free some space (or fix the folder's permissions) and run the same command again."
            ) from error
        raise


def write_text_atomically(path, text):
    """Write `text` through `atomic_path`."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write(text)


def write_json_atomically(path, payload):
    """Write JSON through `atomic_path` (a reader never sees half a file)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def writable_dir_problem(path, flag="--model-dir"):
    """Why a folder could not be created or written at `path`, or None; checks without writing.

    Example:
    >>> writable_dir_problem("")
    '--model-dir is empty: name a folder to write the run into'
    """
    if not path:
        return f"{flag} is empty: name a folder to write the run into"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):  # the nearest part of the path that exists must be writable
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{flag} {path!r} cannot be a folder: {existing!r} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{flag} {path!r} is not writable (no write permission on {existing!r}, or a read-only file system)"
    return None


def read_history(path):
    """The CSVLogger history as a list of {metric: float} rows (empty when absent).

    A metric the epoch did not log is left out of its row: Keras' CSVLogger always writes the
    `val_` columns and fills them with "NA" when a run has no validation data.
    """
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [{k: float(v) for k, v in row.items() if v not in ("NA", "")} for row in csv.DictReader(file)]


def trim_history(path, epochs):
    """Keep the first `epochs` rows of a CSVLogger history (a resumed run repeats the ones after).

    A kill between the history write and the backup swap at an epoch's end leaves a row for an
    epoch the backup does not hold; the resumed run trains that epoch again and would log it twice.
    Returns how many rows were dropped.
    """
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as file:
        lines = file.read().splitlines(keepends=True)
    header, rows = lines[:1], lines[1:]
    kept = [row for row in rows if int(float(row.split(",", 1)[0])) < epochs]
    if len(kept) != len(rows):
        write_text_atomically(path, "".join(header + kept))
    return len(rows) - len(kept)


def save_curves(history_csv, path):
    """loss and accuracy per epoch (train and validation) as a PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = read_history(history_csv)
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + metric in rows[0]:
                axis.plot(epochs, [r[prefix + metric] for r in rows], style, label=(prefix or "train_") + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
