"""Run artefacts on disk: atomic writes, reading `.keras` files back, the CSV history, the curves PNG."""

import csv
import os
import tempfile
import zipfile

from keras_mixer.atomic import (  # noqa: F401  (re-exported: the run code imports them from here)
    WriteError,
    atomic_path,
    save_figure_atomically,
    write_json_atomically,
    write_text_atomically,
)


def writable_dir_problem(path, flag="--model-dir"):
    """Why a folder could not be created or written at `path`, or None.

    It writes nothing that stays: the nearest folder that exists gets a temporary file, removed at once
    (no permission, a read-only file system, or a folder such as /proc where nothing can be created).

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
    try:  # the permission bits alone do not tell: root passes os.access on /proc
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"{flag} {path!r} is not writable: no file can be created in {existing!r} ({error.strerror or error})"
    return None


def load_keras_file(path, flag="--model"):
    """`keras.saving.load_model(path)`, with one clear error for a missing, truncated or damaged `.keras` file.

    Keras answers a file that is not a zip archive with "File not found", which misleads when the file
    is there but cut off (a copy or a download that stopped). `FileNotFoundError` when nothing is at
    `path`; `ValueError`, naming `flag` and the file, when it is not a whole `.keras` archive or Keras
    cannot build a model from it.

    Example:
    >>> load_keras_file("no/such/model.keras")
    Traceback (most recent call last):
    FileNotFoundError: --model: no file at 'no/such/model.keras'
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: no file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{flag} {path!r} is not a .keras file (a zip archive): is it truncated or corrupt?")
    import keras  # noqa: PLC0415  (MLPMixer's classes are registered: keras_mixer is imported above)

    try:
        return keras.saving.load_model(path)
    except Exception as error:  # a damaged member inside a whole archive: Keras' errors vary by member
        raise ValueError(f"{flag} {path!r} could not be loaded as a Keras model: {error}") from error


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
    save_figure_atomically(figure, path)
