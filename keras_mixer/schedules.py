"""Learning-rate schedule: linear warm-up to a peak, then cosine or linear decay to zero.

It lives in the library, not in `training/`, because saved `.keras` files of trained models carry
their optimizer and its schedule: whoever loads them (export, evaluation) imports `keras_mixer`,
which registers this class.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mixer")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * step / warmup_steps` during warm-up, then cosine or linear decay to 0 at `total_steps`.

    Example:
    >>> schedule = WarmupDecay(peak=1.0, warmup_steps=10, total_steps=110, decay="linear")
    >>> [round(float(schedule(s)), 3) for s in (0, 5, 10, 60, 110)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, peak, warmup_steps, total_steps, decay="cosine"):
        if decay not in ("cosine", "linear"):
            raise ValueError(f"decay must be 'cosine' or 'linear'. Received: decay={decay!r}")
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.decay = decay

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.maximum(float(self.warmup_steps), 1.0)
        decay_steps = ops.maximum(float(self.total_steps - self.warmup_steps), 1.0)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.decay == "cosine":
            decayed = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            decayed = 1.0 - progress
        return self.peak * ops.where(step < self.warmup_steps, step / warmup, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
        }
