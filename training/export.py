"""Export a trained Mixer for serving: `python -m training.export --model runs/default/best.keras --name fashion_mixer`.

Writes `saved_models/<name>/<version>/` (TF Serving layout, next integer version, atomic) and,
with `--formats saved_model,tflite`, `saved_models/<name>/tflite/<mode>.tflite`. Class names
come from the run's summary.json (the tfds metadata) when the model sits in a run dir.
A thin CLI over `keras_mixer.export`.
"""

import argparse
import json
import os
import sys

from training import EXIT_BAD_INPUT

FORMATS = ("saved_model", "tflite")


def _class_names(model_path):
    summary = os.path.join(os.path.dirname(os.path.abspath(model_path)), "summary.json")
    if os.path.exists(summary):
        with open(summary) as file:
            return json.load(file).get("class_names")
    return None


def _representative_batches(model_path, count):
    """`count` training images of the run the model came from, for full-int8 calibration."""
    from training.config import TrainConfig  # noqa: PLC0415
    from training.data import dataset_spec, load_split, make_pipeline, open_builder  # noqa: PLC0415

    with open(os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")) as file:
        config = TrainConfig.from_dict(json.load(file))
    builder = open_builder(config.data.dataset, config.data.data_dir)
    spec = dataset_spec(builder, config.data.train_split, config.data.test_split, config.data.validation_fraction)
    data = make_pipeline(
        load_split(builder, spec.splits["train"]),
        image_size=config.model.image_size,
        num_classes=spec.num_classes,
        batch_size=32,
        training=False,
    )
    return [images.numpy() for images, _ in data.take(max(count // 32, 1))]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/default/best.keras", help="a .keras file holding an MLPMixer")
    parser.add_argument("--name", default="fashion_mixer", help="model name: saved_models/<name>/")
    parser.add_argument("--base-dir", default="saved_models", help="where exports land")
    parser.add_argument("--formats", default="saved_model", help=f"comma-separated: {', '.join(FORMATS)}")
    parser.add_argument("--tflite-modes", default="float32", help="comma-separated: float32,float16,dynamic_int8,int8")
    parser.add_argument("--representative-images", type=int, default=256, help="training images for int8 calibration")
    parser.add_argument("--top-k", type=int, default=5, help="classes returned by the serving signature")
    args = parser.parse_args(argv)

    from keras_mixer.export import TFLITE_MODES  # noqa: PLC0415

    formats = [f for f in args.formats.split(",") if f]
    modes = [m for m in args.tflite_modes.split(",") if m]
    problems = [f"unknown format {f!r} (expected {FORMATS})" for f in formats if f not in FORMATS]
    problems += [f"unknown TFLite mode {m!r} (expected {TFLITE_MODES})" for m in modes if m not in TFLITE_MODES]
    if not os.path.isfile(args.model):
        problems.append(f"model file not found: {args.model}")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT

    import keras  # noqa: PLC0415

    from keras_mixer.export import export_saved_model, export_tflite  # noqa: PLC0415

    try:
        model = keras.saving.load_model(args.model)
        base = os.path.join(args.base_dir, args.name)
        if "saved_model" in formats:
            path = export_saved_model(model, base, class_names=_class_names(args.model), top_k=args.top_k)
            print(f"SavedModel: {path}")
        if "tflite" in formats:
            for mode in modes:
                data = _representative_batches(args.model, args.representative_images) if mode == "int8" else None
                path = export_tflite(model, os.path.join(base, "tflite", f"{mode}.tflite"), mode, data)
                print(f"TFLite {mode}: {path} ({os.path.getsize(path) / 1024:.0f} KiB)")
    except (ValueError, FileNotFoundError) as error:  # FileNotFoundError: int8 needs the run's config.json
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
