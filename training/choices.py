"""The choice lists of the training CLIs that no library module owns (TensorFlow-free, so the config imports it).

The library owns its own: MLP activations (`keras_mixer.layers.MLP_ACTIVATIONS`), TFLite modes and
SavedModel precisions (`keras_mixer.export`), token-mixing resizes (`keras_mixer.checkpoints`).
"""

STRATEGIES = ("auto", "mirrored", "multi_worker", "tpu", "one_device")  # training/distribute.py
PRECISIONS = ("float32", "bfloat16", "float16")  # mixed precision policies of training
AUTO_ON_OFF = ("auto", "on", "off")  # --report, --flip-average: auto follows the run


def one_of(choices):
    """`a | b | c`, for help texts.

    >>> one_of(("auto", "on", "off"))
    'auto | on | off'
    """
    return " | ".join(choices)
