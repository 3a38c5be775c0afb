"""Evaluate a trained run on its held-out test split: `python -m training.evaluate --model-dir runs/default`.

Reads the run's `config.json` (dataset, splits, image size) and `best.keras` (or `--checkpoint`),
evaluates once on the test split and writes `evaluation.json` beside them. When the run asks for
test-time flip averaging (`--test-flip-average`), the headline figures are those of the mean over
each image and its mirror image, and the single-view figures are recorded beside them.
"""

import argparse
import os
import sys

from training import EXIT_BAD_INPUT
from training.files import write_json_atomically
from training.runs import load_run_config, run_split


def _test_metrics(model, test_data, verbose):
    import keras  # noqa: PLC0415

    model.compile(
        loss=keras.losses.CategoricalCrossentropy(from_logits=model.classifier_activation is None),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model.evaluate(test_data, return_dict=True, verbose=verbose)


def evaluate(model_dir, checkpoint="best.keras", data_dir=None, verbose=0, flip_average=None):
    """Test loss and accuracy of `model_dir/checkpoint` on the run's test split; returns a dict.

    `flip_average`: None follows the run's `--test-flip-average`; True / False force it.
    """
    import keras  # noqa: PLC0415

    import keras_mixer  # noqa: F401, PLC0415  (registers MLPMixer and its layers for load_model)

    model_path = os.path.join(model_dir, checkpoint)
    config = load_run_config(model_dir)  # a missing config.json is reported before anything else
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path} not found: is {model_dir!r} a training run's --model-dir?")
    model = keras.saving.load_model(model_path)
    test_data, spec = run_split(model_dir, "test", data_dir=data_dir)
    single_view = _test_metrics(model, test_data, verbose)
    flip_average = config.augment.test_flip_average if flip_average is None else flip_average
    metrics = _test_metrics(model.flip_averaged(), test_data, verbose) if flip_average else single_view
    result = {
        "checkpoint": model_path,
        "dataset": spec.name,
        "split": spec.splits["test"],
        "examples": spec.test_examples,
        "flip_average": bool(flip_average),
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        "single_view_test_accuracy": single_view["accuracy"],
        "single_view_test_loss": single_view["loss"],
    }
    write_json_atomically(os.path.join(model_dir, "evaluation.json"), result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="runs/default", help="a training run's --model-dir")
    parser.add_argument("--checkpoint", default="best.keras", help="file in the model dir (best.keras or last.keras)")
    parser.add_argument("--data-dir", default=None, help="tfds data dir, if not the run's")
    parser.add_argument(
        "--flip-average",
        choices=("auto", "on", "off"),
        default="auto",
        help="average each test image with its mirror image (auto: as the run's --test-flip-average)",
    )
    args = parser.parse_args(argv)
    from training.data import DatasetError  # noqa: PLC0415

    try:
        flip_average = {"auto": None, "on": True, "off": False}[args.flip_average]
        result = evaluate(args.model_dir, args.checkpoint, args.data_dir, verbose=1, flip_average=flip_average)
    except (FileNotFoundError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    views = (
        f" (mean over each image and its mirror; one view: {result['single_view_test_accuracy']:.4f})"
        if result["flip_average"]
        else ""
    )
    print(f"test accuracy {result['test_accuracy']:.4f} on {result['examples']} images of {result['split']}{views}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
