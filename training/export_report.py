"""Parity of exported files with the Keras model, measured on the run's real held-out test split.

For the SavedModel (its `serving_default` signature, reloaded with `tf.saved_model.load`) and
each TFLite file (run on the LiteRT interpreter): max abs probability difference from Keras, top-1
agreement, test accuracy, file size and per-image latency, each checked against the targets below.
Written as `export_report.json` and `export_report.md` (a table), atomically.
"""

import os
import time

import numpy as np

from training.files import write_json_atomically, write_text_atomically

# Targets per export: max abs probability difference, or (top-1 agreement, accuracy drop).
TARGETS = {
    "saved_model": {"max_abs_difference": 1e-5},
    "saved_model_bfloat16": {"top1_agreement": 0.995, "accuracy_drop": 0.005},
    "float32": {"max_abs_difference": 1e-4},
    "float16": {"max_abs_difference": 1e-2},
    "dynamic_int8": {"top1_agreement": 0.98, "accuracy_drop": 0.01},
    "int8": {"top1_agreement": 0.98, "accuracy_drop": 0.01},
}


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _row(name, probabilities, reference, labels, size_bytes, seconds):
    top1 = probabilities.argmax(-1)
    row = {
        "export": name,
        "size_bytes": int(size_bytes),
        "max_abs_difference": float(np.abs(probabilities - reference).max()),
        "top1_agreement": float((top1 == reference.argmax(-1)).mean()),
        "accuracy": float((top1 == labels).mean()),
        "milliseconds_per_image": 1000.0 * seconds / len(labels),
    }
    target = TARGETS.get(name, {})
    keras_accuracy = float((reference.argmax(-1) == labels).mean())
    checks = []
    if "max_abs_difference" in target:
        checks.append(row["max_abs_difference"] <= target["max_abs_difference"])
    if "top1_agreement" in target:
        checks.append(row["top1_agreement"] >= target["top1_agreement"])
        checks.append(keras_accuracy - row["accuracy"] <= target["accuracy_drop"])
    row["target"] = target
    row["meets_target"] = all(checks)
    return row


def _predict_saved_model(path, images, batch_size=500):
    import tensorflow as tf  # noqa: PLC0415

    serve = tf.saved_model.load(path).signatures["serving_default"]
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    return np.concatenate([serve(images=tf.constant(batch))["probabilities"].numpy() for batch in batches])


def parity_report(model, images, labels, saved_models=None, tflite_files=None, split="test"):
    """Compare exports with `model` on `images` (float pixels) and integer `labels`; returns the report dict.

    Args:
        saved_models: {"saved_model" or "saved_model_bfloat16": version folder written by `export_saved_model`}.
        tflite_files: {mode: path} of files written by `export_tflite`.
    """
    import keras  # noqa: PLC0415

    from keras_mixer.lite import TFLiteClassifier  # noqa: PLC0415

    started = time.perf_counter()
    reference = np.asarray(model.predict(images, batch_size=256, verbose=0), np.float64)
    if model.classifier_activation != "softmax":
        reference = np.asarray(keras.ops.softmax(reference, axis=-1), np.float64)
    keras_seconds = time.perf_counter() - started
    rows = [_row("keras", reference, reference, labels, 0, keras_seconds)]
    for name, folder in (saved_models or {}).items():
        started = time.perf_counter()
        probabilities = _predict_saved_model(folder, images)
        seconds = time.perf_counter() - started
        rows.append(_row(name, probabilities, reference, labels, _folder_bytes(folder), seconds))
    for mode, path in (tflite_files or {}).items():
        classifier = TFLiteClassifier(path)
        started = time.perf_counter()
        probabilities = classifier.predict(images)
        rows.append(_row(mode, probabilities, reference, labels, os.path.getsize(path), time.perf_counter() - started))
    return {
        "split": split,
        "examples": len(labels),
        "keras_accuracy": rows[0]["accuracy"],
        "all_targets_met": all(row["meets_target"] for row in rows),
        "rows": rows,
    }


def report_markdown(report):
    """The report as a markdown table."""
    lines = [
        f"Parity with the Keras model on {report['examples']:,} images of the `{report['split']}` split "
        "(ms/image: Keras and SavedModel in batches, TFLite one image at a time).",
        "",
        "| export | size | max abs prob. diff | top-1 agreement | accuracy | ms/image | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in report["rows"]:
        target = ", ".join(f"{key} {value:g}" for key, value in row["target"].items()) or "(reference)"
        size = f"{row['size_bytes'] / 1024:,.0f} KiB" if row["size_bytes"] else "–"
        lines.append(
            f"| {row['export']} | {size} | {row['max_abs_difference']:.2e} | {100 * row['top1_agreement']:.2f} % "
            f"| {100 * row['accuracy']:.2f} % | {row['milliseconds_per_image']:.3f} | {target} "
            f"| {'yes' if row['meets_target'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report, folder):
    """`export_report.json` and `export_report.md` in `folder`, each written atomically; returns the md path."""
    os.makedirs(folder, exist_ok=True)
    write_json_atomically(os.path.join(folder, "export_report.json"), report)
    path = os.path.join(folder, "export_report.md")
    write_text_atomically(path, report_markdown(report))
    return path
