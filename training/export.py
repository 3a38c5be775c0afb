"""Export a trained Mixer for serving: `python -m training.export --model runs/default/best.keras --name fashion_mixer`.

Writes `saved_models/<name>/<version>/` (TF Serving layout, next integer version) and, with
`--formats saved_model,tflite`, `saved_models/<name>/tflite/<version>/<mode>.tflite`; with
`saved_model_bfloat16`, `saved_models/<name>/bfloat16/<version>/`: the same model computed in bfloat16
(float32 inputs and outputs; faster only on CPUs with bfloat16 units). All are built
in temporary folders and published (renamed into place, 0755/0644) only after the parity report is
written into them, so no published version lacks its report and no export overwrites another's.
Class names come from the model (or, for older models, the run's summary.json). A run
trained with `--test-flip-average` is exported flip-averaged (each image's output is the mean over
it and its mirror image), so the exports compute what the run's test accuracy measured.
A thin CLI over `keras_mixer.export`.
"""

import argparse
import contextlib
import json
import os
import sys

from keras_mixer.export import TFLITE_MODES
from training import EXIT_BAD_INPUT
from training.choices import AUTO_ON_OFF
from training.quiet import add_verbose_flag, native_stderr_silenced, quiet_logs
from training.runs import FLIP_AVERAGE_CHOICES, flip_average_choice

FORMATS = ("saved_model", "saved_model_bfloat16", "tflite")


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
    parser.add_argument("--tflite-modes", default="float32", help=f"comma-separated: {','.join(TFLITE_MODES)}")
    parser.add_argument("--representative-images", type=int, default=256, help="training images for int8 calibration")
    parser.add_argument("--top-k", type=int, default=5, help="classes returned by the serving signature")
    parser.add_argument(
        "--report",
        choices=AUTO_ON_OFF,
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
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)

    formats = [f for f in args.formats.split(",") if f]
    modes = [m for m in args.tflite_modes.split(",") if m]
    problems = [f"unknown format {f!r} (expected {FORMATS})" for f in formats if f not in FORMATS]
    problems += [f"unknown TFLite mode {m!r} (expected {TFLITE_MODES})" for m in modes if m not in TFLITE_MODES]
    if not formats:
        problems.append(f"--formats names no format (expected one or more of {FORMATS}). Received: {args.formats!r}")
    if "tflite" in formats and not modes:
        problems.append(f"--tflite-modes names no mode (expected one or more of {TFLITE_MODES})")
    if args.name in ("", ".", "..") or "/" in args.name or (os.altsep and os.altsep in args.name):
        problems.append(f"--name must be one folder name, as TF Serving's model name (no '/'). Received: {args.name!r}")
    if not os.path.isfile(args.model):
        problems.append(f"model file not found: {args.model}")
    run_dir = _run_dir(args.model)
    if run_dir is None and "tflite" in formats and "int8" in modes:
        problems.append(
            f"full int8 calibrates on the training data of the run {args.model} came from, but there is no "
            "config.json beside it: export a model from a training run's --model-dir, or call "
            "keras_mixer.export.export_tflite(model, path, mode='int8', representative_data=...) yourself"
        )
    base = os.path.join(args.base_dir, args.name)
    for folder in (args.base_dir, base, os.path.join(base, "tflite"), os.path.join(base, "bfloat16")):
        if os.path.exists(folder) and not os.path.isdir(folder):
            problems.append(f"{folder} is a file; exports need a folder there (choose another --name or --base-dir)")
    for flag, value, least in (
        ("--top-k", args.top_k, 1),
        ("--representative-images", args.representative_images, 1),
        ("--report-examples", args.report_examples, 0),
    ):
        if value < least:
            problems.append(f"{flag} must be >= {least}. Received: {value}")
    if args.report == "on" and run_dir is None:
        problems.append(f"--report on needs the model's training run (config.json beside {args.model})")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from keras_mixer.export import BFLOAT16_FOLDER, TFLITE_FOLDER, next_version, staged_folder  # noqa: PLC0415
    from training.files import load_keras_file  # noqa: PLC0415

    try:
        model = load_keras_file(args.model)
        if flip_average_choice(args.flip_average, run_dir) and isinstance(model, MLPMixer) and not model.flip_average:
            model = model.flip_averaged()
            print("Exporting the flip-averaged model: each output is the mean over the image and its mirror image.")
        # Calibration data first: a run without it fails before any file is written.
        int8 = "tflite" in formats and "int8" in modes
        calibration = _representative_batches(run_dir, args.representative_images, model.num_channels) if int8 else None
        version = next_version(base)
        # Everything of this version is built in temporary folders and published together at the end,
        # after its report is written: a kill leaves no published version without its report.
        with contextlib.ExitStack() as publish:
            folders = {}
            for export_format, parent in (("tflite", os.path.join(base, TFLITE_FOLDER)), ("saved_model", base),
                                          ("saved_model_bfloat16", os.path.join(base, BFLOAT16_FOLDER))):  # fmt: skip
                if export_format in formats:
                    folders[export_format] = publish.enter_context(staged_folder(os.path.join(parent, str(version))))
            _write_exports(model, args, modes, calibration, folders, run_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if "saved_model" in formats:
        print(f"SavedModel: {os.path.join(base, str(version))}")
    if "saved_model_bfloat16" in formats:
        print(f"SavedModel (bfloat16): {os.path.join(base, BFLOAT16_FOLDER, str(version))}")
    if "tflite" in formats:
        folder = os.path.join(base, TFLITE_FOLDER, str(version))
        for mode in modes:
            path = os.path.join(folder, f"{mode}.tflite")
            print(f"TFLite {mode}: {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
    return 0


def _write_exports(model, args, modes, calibration, folders, run_dir):
    """The SavedModels, the TFLite files and the parity report, into the (staged) version folders.

    `folders` maps each format asked for ("saved_model", "saved_model_bfloat16", "tflite") to its folder.
    """
    from keras_mixer.export import export_tflite, model_class_names, write_saved_model  # noqa: PLC0415
    from training.export_report import parity_report, report_markdown, write_report  # noqa: PLC0415

    tflite_files = {}
    for mode in modes if "tflite" in folders else ():
        with native_stderr_silenced():  # the converter's C++ prints "fully_quantize: 0, inference_type: 6, ..."
            tflite_files[mode] = export_tflite(
                model, os.path.join(folders["tflite"], f"{mode}.tflite"), mode, calibration
            )
    class_names = model.class_names or _class_names(args.model) or model_class_names(model)
    saved_models = {}
    for export_format, precision in (("saved_model", "float32"), ("saved_model_bfloat16", "bfloat16")):
        if export_format in folders:
            top_k = min(args.top_k, model.num_classes)
            write_saved_model(model, folders[export_format], class_names, top_k, precision)
            saved_models[export_format] = folders[export_format]
    if args.report == "off" or run_dir is None:
        return
    images, labels, split = _test_examples(run_dir, args.report_examples, model.num_channels)
    with native_stderr_silenced():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        report = parity_report(model, images, labels, saved_models, tflite_files, split=split)
    for export_format, folder in folders.items():
        write_report(report, folder if export_format == "tflite" else os.path.join(folder, "assets"))
    print(report_markdown(report) + "Report: export_report.md and .json in each version's assets/ and tflite/ folders")
    if not report["all_targets_met"]:
        print("warning: some exports miss their parity target (see the report)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
