"""Evaluate a trained run: `python -m training.evaluate --model-dir runs/default [--split validation]`.

Reads the run's `config.json` (dataset, splits, image size) and `best.keras` (or `--checkpoint`),
evaluates once on the held-out test split (or on the run's validation part, the one to compare
recipes on) and writes `evaluation.json` (`validation_evaluation.json`) beside them. With
test-time flip averaging (the run's `--test-flip-average`, or `--flip-average on`), the headline
figures are those of the mean over each image and its mirror image, and the single-view figures
are recorded beside them.
"""

import argparse
import os
import sys

from training import EXIT_BAD_INPUT
from training.files import load_keras_file, write_json_atomically
from training.quiet import add_verbose_flag, quiet_logs
from training.runs import FLIP_AVERAGE_CHOICES, flip_average_choice, load_run_config, run_split

SPLITS = ("test", "validation")


def _metrics(model, data, verbose):
    import keras  # noqa: PLC0415

    model.compile(
        loss=keras.losses.CategoricalCrossentropy(from_logits=model.classifier_activation is None),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model.evaluate(data, return_dict=True, verbose=verbose)


def evaluate(model_dir, checkpoint="best.keras", data_dir=None, verbose=0, flip_average="auto", split="test"):
    """Loss and accuracy of `model_dir/checkpoint` on the run's `split` ("test" or "validation").

    `flip_average`: "auto" follows the run's `--test-flip-average`; "on" / "off" force it.
    Returns a dict whose figures are named after the split (`test_accuracy`, ...).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    model_path = os.path.join(model_dir, checkpoint)
    config = load_run_config(model_dir)  # a missing config.json is reported before anything else
    if split == "validation" and not config.data.validation_fraction:
        raise ValueError(f"The run in {model_dir} held out no validation part (validation_fraction=0).")
    if not os.path.exists(model_path):
        raise FileNotFoundError(f"{model_path} not found: is {model_dir!r} a training run's --model-dir?")
    model = load_keras_file(model_path, flag="--checkpoint")
    data, spec = run_split(model_dir, split, data_dir=data_dir, num_channels=model.num_channels)
    single_view = _metrics(model, data, verbose)
    averaged = flip_average_choice(flip_average, model_dir)
    metrics = _metrics(model.flip_averaged(), data, verbose) if averaged else single_view
    result = {
        "checkpoint": model_path,
        "dataset": spec.name,
        "split": spec.splits[split],
        "examples": spec.test_examples if split == "test" else spec.validation_examples,
        "flip_average": averaged,
        f"{split}_accuracy": metrics["accuracy"],
        f"{split}_loss": metrics["loss"],
        f"single_view_{split}_accuracy": single_view["accuracy"],
        f"single_view_{split}_loss": single_view["loss"],
    }
    name = "evaluation.json" if split == "test" else f"{split}_evaluation.json"
    write_json_atomically(os.path.join(model_dir, name), result)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="runs/default", help="a training run's --model-dir")
    parser.add_argument("--checkpoint", default="best.keras", help="file in the model dir (best.keras or last.keras)")
    parser.add_argument("--data-dir", default=None, help="tfds data dir, if not the run's")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="the held-out test split, or the run's validation part (for comparing recipes)",
    )
    parser.add_argument(
        "--flip-average",
        choices=FLIP_AVERAGE_CHOICES,
        default="auto",
        help="average each image with its mirror image (auto: as the run's --test-flip-average)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    quiet_logs(args.verbose)
    from training.data import DatasetError  # noqa: PLC0415

    try:
        result = evaluate(
            args.model_dir, args.checkpoint, args.data_dir, verbose=1, flip_average=args.flip_average, split=args.split
        )
    except (FileNotFoundError, DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    split = args.split
    views = (
        f" (mean over each image and its mirror; one view: {result[f'single_view_{split}_accuracy']:.4f})"
        if result["flip_average"]
        else ""
    )
    print(
        f"{split} accuracy {result[f'{split}_accuracy']:.4f} on {result['examples']} images of {result['split']}{views}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
