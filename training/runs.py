"""A finished training run's data, read back from its model dir (`config.json`).

Evaluation, export calibration and the export report all need the run's own splits at the run's
image size; this is the one place that rebuilds them.
"""

import json
import os

from training.choices import AUTO_ON_OFF
from training.config import TrainConfig


def load_run_config(model_dir):
    """The `TrainConfig` a run in `model_dir` was trained with."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {model_dir!r} a training run's --model-dir?")
    with open(path) as file:
        return TrainConfig.from_dict(json.load(file))


def run_split(model_dir, role, batch_size=None, data_dir=None, num_channels=None):
    """(pipeline, spec) of the run's `role` split ("train", "validation" or "test"), unaugmented.

    Images are float32 pixels in [0, 255] at the run's image size, labels one-hot; with
    `num_channels` (the model's), converted to that many channels. An image folder's run reads
    the file lists it was trained with (`splits.json`).
    """
    import dataclasses  # noqa: PLC0415

    from training.data import make_pipeline, open_source  # noqa: PLC0415

    config = load_run_config(model_dir)
    data = dataclasses.replace(config.data, data_dir=data_dir or config.data.data_dir)
    source = open_source(data, model_dir, progress=False)
    pipeline = make_pipeline(
        source.examples(role),
        image_size=config.model.image_size,
        num_classes=source.spec.num_classes,
        batch_size=batch_size or config.schedule.batch_size,
        training=False,
        cache=False,  # one pass: nothing to gain, and a large test folder would not fit in memory
        decode=source.decode,
        num_channels=num_channels,
    )
    return pipeline, source.spec


FLIP_AVERAGE_CHOICES = AUTO_ON_OFF


def flip_average_choice(choice, model_dir):
    """`--flip-average auto|on|off` as a bool; auto is the run's `--test-flip-average` (off without a run)."""
    if choice != "auto":
        return choice == "on"
    return model_dir is not None and load_run_config(model_dir).augment.test_flip_average
