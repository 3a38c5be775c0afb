"""Checks of `MLPMixer`'s constructor arguments: one `ValueError` (or `TypeError`) per bad argument, naming
what is allowed and what was received. Used by the model and by the checkpoint code (no Keras layers here).
"""

import difflib
import inspect
import types

from keras_mixer.layers import check_mlp_activation

POOLINGS = ("avg", "max")
CLASSIFIER_ACTIVATIONS = (None, "softmax")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _check_size_pair(name, value):
    """Accept an int or a pair of ints, all positive; return the pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width) of positive ints. Received: {name}={value!r}"
        )
    return tuple(pair)


def _check_rate(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")


def validate_mixer_arguments(arguments):
    """Check every constructor argument; return `(image_size, patch_size)` as (h, w) pairs.

    `arguments` maps every constructor argument's name to its value. Raises one `ValueError`
    naming the argument, what is allowed and what was received.
    """
    a = types.SimpleNamespace(**arguments)
    image_size, patch_size = validate_size_pairs(a.image_size, a.patch_size)
    for name in ("num_blocks", "hidden_dim", "tokens_mlp_dim", "channels_mlp_dim", "num_channels"):
        _check_positive_int(name, arguments[name])
    if a.include_top:
        _check_positive_int("num_classes", a.num_classes)
    _check_rate("dropout_rate", a.dropout_rate)
    _check_rate("drop_path_rate", a.drop_path_rate)
    allowed_poolings = POOLINGS if a.include_top else (None, *POOLINGS)
    if a.pooling not in allowed_poolings:
        raise ValueError(
            f"`pooling` must be one of {allowed_poolings} when include_top={a.include_top}. "
            f"Received: pooling={a.pooling!r}"
        )
    if a.classifier_activation not in CLASSIFIER_ACTIVATIONS:
        raise ValueError(
            f"`classifier_activation` must be one of {CLASSIFIER_ACTIVATIONS} (None gives logits). "
            f"Received: classifier_activation={a.classifier_activation!r}"
        )
    check_mlp_activation(a.activation)
    if not isinstance(a.flip_average, bool):
        raise ValueError(f"`flip_average` must be True or False. Received: flip_average={a.flip_average!r}")
    if a.flip_average and not a.include_top and a.pooling is None:
        raise ValueError(
            "`flip_average=True` averages an image's output with its mirror image's, which needs one vector "
            "per image: use include_top=True or a pooling. Received: include_top=False, pooling=None"
        )
    check_class_names(a.class_names, a.num_classes if a.include_top else None)
    if not isinstance(a.layer_norm_epsilon, (int, float)) or a.layer_norm_epsilon <= 0:
        raise ValueError(
            f"`layer_norm_epsilon` must be a positive float. Received: layer_norm_epsilon={a.layer_norm_epsilon!r}"
        )
    return image_size, patch_size


# What `keras.Model` itself takes besides `name`; anything else unknown is a typo.
KERAS_MODEL_KEYWORDS = ("trainable", "dtype")


def check_keyword_arguments(cls, kwargs):
    """Refuse an unknown keyword argument (a misspelt `num_clases=10` would otherwise be dropped
    silently), naming it and the closest valid name."""
    valid = [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "kwargs")]
    valid += KERAS_MODEL_KEYWORDS
    for name in kwargs:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise TypeError(
                f"{cls.__name__} got an unexpected keyword argument `{name}`.{hint} Valid arguments: {sorted(valid)}"
            )


def check_class_names(class_names, num_classes):
    """`class_names` is None or one string per output class (a model with a head)."""
    if class_names is None:
        return
    if num_classes is None:
        raise ValueError("`class_names` names the head's outputs, but include_top=False: pass class_names=None.")
    if (
        isinstance(class_names, str)
        or not isinstance(class_names, (list, tuple))
        or not all(isinstance(name, str) for name in class_names)
    ):
        raise ValueError(
            f"`class_names` must be a list of strings, one per class. Received: a {type(class_names).__name__}"
        )
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must have one name per class: num_classes={num_classes}, but "
            f"{len(class_names)} names were given."
        )


def validate_size_pairs(image_size, patch_size):
    """Check `image_size` and `patch_size` (ints or pairs) and that patches tile the image.

    Returns both as (height, width) pairs.

    Example:
    >>> validate_size_pairs(224, (16, 16))
    ((224, 224), (16, 16))
    """
    image_size = _check_size_pair("image_size", image_size)
    patch_size = _check_size_pair("patch_size", patch_size)
    for axis, size, patch in zip(("height", "width"), image_size, patch_size):
        if size % patch:
            raise ValueError(
                f"`image_size` must be divisible by `patch_size` so that the image splits into "
                f"whole patches, but the {axis} {size} is not a multiple of the patch {axis} "
                f"{patch}. Received: image_size={image_size}, patch_size={patch_size}"
            )
    return image_size, patch_size


def drop_path_rates(drop_path_rate, num_blocks):
    """Stochastic-depth rate of each block: linear from 0 to `drop_path_rate`, i / (N - 1) · s."""
    return [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
