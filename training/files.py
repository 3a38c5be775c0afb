"""Run artefacts on disk: atomic JSON, the CSV history, and the loss/accuracy curves PNG."""

import csv
import json
import os


def write_json_atomically(path, payload):
    """Write JSON to a temporary file, then rename it into place (a reader never sees half a file)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(payload, file, indent=2, sort_keys=True, default=str)
    os.replace(temporary, path)


def read_history(path):
    """The CSVLogger history as a list of {metric: float} rows (empty when absent).

    A metric the epoch did not log is left out of its row: Keras' CSVLogger always writes the
    `val_` columns and fills them with "NA" when a run has no validation data.
    """
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [{k: float(v) for k, v in row.items() if v not in ("NA", "")} for row in csv.DictReader(file)]


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
