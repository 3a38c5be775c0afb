"""Export a trained Mixer for serving: `python -m training.export --model runs/default/best.keras --name fashion_mixer`.

Writes `saved_models/<name>/<version>/` (TF Serving layout, next integer version, atomic) and,
with `--formats saved_model,tflite`, `saved_models/<name>/tflite/<mode>.tflite`. Class names
come from the run's summary.json (the tfds metadata) when the model sits in a run dir. A run
trained with `--test-flip-average` is exported flip-averaged (each image's output is the mean over
it and its mirror image), so the exports compute what the run's test accuracy measured.
A thin CLI over `keras_mixer.export`.
"""

import argparse
import json
import os
import sys

from training import EXIT_BAD_INPUT
from training.runs import FLIP_AVERAGE_CHOICES, flip_average_choice

FORMATS = ("saved_model", "tflite")


def _class_names(model_path):
    """Names from the run's summary.json, for models saved before they carried their own."""
    summary = os.path.join(os.path.dirname(os.path.abspath(model_path)), "summary.json")
    if os.path.exists(summary):
        with open(summary) as file:
            return json.load(file).get("class_names")
    return None


def _run_dir(model_path):
    """The training run the model file sits in, or None (then there is no data to calibrate or report on)."""
    folder = os.path.dirname(os.path.abspath(model_path))
    return folder if os.path.exists(os.path.join(folder, "config.json")) else None


def _representative_batches(run_dir, count, num_channels):
    """`count` training images of the run, for full-int8 calibration."""
    from training.runs import run_split  # noqa: PLC0415

    data, _ = run_split(run_dir, "train", batch_size=32, num_channels=num_channels)
    return [images.numpy() for images, _ in data.take(max(count // 32, 1))]


def _test_examples(run_dir, limit, num_channels):
    """The run's held-out test split as (images, integer labels), at most `limit` examples (0: all)."""
    import numpy as np  # noqa: PLC0415

    from training.runs import run_split  # noqa: PLC0415

    data, spec = run_split(run_dir, "test", batch_size=500, num_channels=num_channels)
    if limit:
        data = data.unbatch().take(limit).batch(500)
    images, labels = zip(*((x.numpy(), y.numpy().argmax(-1)) for x, y in data))
    return np.concatenate(images), np.concatenate(labels), spec.splits["test"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/default/best.keras", help="a .keras file holding an MLPMixer")
    parser.add_argument("--name", default="fashion_mixer", help="model name: saved_models/<name>/")
    parser.add_argument("--base-dir", default="saved_models", help="where exports land")
    parser.add_argument("--formats", default="saved_model", help=f"comma-separated: {', '.join(FORMATS)}")
    parser.add_argument("--tflite-modes", default="float32", help="comma-separated: float32,float16,dynamic_int8,int8")
    parser.add_argument("--representative-images", type=int, default=256, help="training images for int8 calibration")
    parser.add_argument("--top-k", type=int, default=5, help="classes returned by the serving signature")
    parser.add_argument(
        "--report",
        choices=("auto", "on", "off"),
        default="auto",
        help="parity report on the run's test split (auto: when the model sits in a training run's dir)",
    )
    parser.add_argument("--report-examples", type=int, default=0, help="test examples in the report (0: all)")
    parser.add_argument(
        "--flip-average",
        choices=FLIP_AVERAGE_CHOICES,
        default="auto",
        help="export a model whose output is the mean over each image and its mirror image "
        "(auto: as the run was evaluated, its --test-flip-average)",
    )
    args = parser.parse_args(argv)

    from keras_mixer.export import TFLITE_MODES  # noqa: PLC0415

    formats = [f for f in args.formats.split(",") if f]
    modes = [m for m in args.tflite_modes.split(",") if m]
    problems = [f"unknown format {f!r} (expected {FORMATS})" for f in formats if f not in FORMATS]
    problems += [f"unknown TFLite mode {m!r} (expected {TFLITE_MODES})" for m in modes if m not in TFLITE_MODES]
    if not os.path.isfile(args.model):
        problems.append(f"model file not found: {args.model}")
    run_dir = _run_dir(args.model)
    if run_dir is None and "tflite" in formats and "int8" in modes:
        problems.append(
            f"full int8 calibrates on the training data of the run {args.model} came from, but there is no "
            "config.json beside it: export a model from a training run's --model-dir, or call "
            "keras_mixer.export.export_tflite(model, path, mode='int8', representative_data=...) yourself"
        )
    if args.report == "on" and run_dir is None:
        problems.append(f"--report on needs the model's training run (config.json beside {args.model})")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    import keras  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import export_saved_model, export_tflite  # noqa: PLC0415
    from training.export_report import parity_report, report_markdown, write_report  # noqa: PLC0415

    try:
        model = keras.saving.load_model(args.model)
        if flip_average_choice(args.flip_average, run_dir) and isinstance(model, MLPMixer) and not model.flip_average:
            model = model.flip_averaged()
            print("Exporting the flip-averaged model: each output is the mean over the image and its mirror image.")
        base = os.path.join(args.base_dir, args.name)
        tflite_files = {}
        if "tflite" in formats:
            # Calibration data first: a run without it fails before any file is written.
            calibration = (
                _representative_batches(run_dir, args.representative_images, model.num_channels)
                if "int8" in modes
                else None
            )
            for mode in modes:
                path = export_tflite(model, os.path.join(base, "tflite", f"{mode}.tflite"), mode, calibration)
                tflite_files[mode] = path
                print(f"TFLite {mode}: {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
        version_dir = None
        if "saved_model" in formats:
            version_dir = export_saved_model(
                model, base, class_names=None if model.class_names else _class_names(args.model), top_k=args.top_k
            )
            print(f"SavedModel: {version_dir}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.report != "off" and run_dir is not None:
        images, labels, split = _test_examples(run_dir, args.report_examples, model.num_channels)
        report = parity_report(model, images, labels, version_dir, tflite_files, split=split)
        folder = os.path.join(version_dir, "assets") if version_dir else os.path.join(base, "tflite")
        path = write_report(report, folder)
        print(report_markdown(report) + f"Report: {path} (and export_report.json)")
        if not report["all_targets_met"]:
            print("warning: some exports miss their parity target (see the report)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
