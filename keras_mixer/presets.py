"""The seven MLP-Mixer configurations of the paper (Table 1) as data, and their constructors.

`PRESETS[name]["config"]` holds constructor arguments; `["metadata"]` holds what a user wants
to know before building one (description, parameter count at 224 px with 1000 classes, where
official weights come from). Everything else is derived from this table: the keras.applications-style
constructors `MixerS32(...)` ... `MixerH14(...)` (`keras_mixer.applications`), the README's preset table
(checked by `tests/test_presets.py`) and the benchmark's timm names. Plain data: no Keras import.
"""

# The official checkpoints published with the JAX code (bucket `gs://mixer_models/`), one row per
# (preset, set). All were trained at 224 px and take pixels mapped to [-1, 1]. No sha256 sums are
# published; `sha256` is filled in where a file's sum is known, and a download without one is only
# checked for being a whole .npz archive. `MIXER_WEIGHTS_URL` is the bucket's public https form;
# `KERAS_MIXER_WEIGHTS_URL` in the environment replaces it with a mirror.
MIXER_WEIGHTS_URL = "https://storage.googleapis.com/mixer_models"
IMAGENET21K_CLASSES = 21_843

_WEIGHT_SETS = {
    "imagenet1k": (1000, "ImageNet-1k only, from scratch (B/16 76.44 %, L/16 71.76 % top-1); not 21k->1k fine-tuned"),
    "imagenet21k": (IMAGENET21K_CLASSES, "pre-trained on ImageNet-21k (21,843-class head)"),
    "sam": (1000, "ImageNet-1k with the SAM optimiser"),
    "gsam": (1000, "ImageNet-1k with the GSAM optimiser"),
}
_PUBLISHED_FILES = {
    "imagenet1k": ("mixer_b16", "mixer_l16"),
    "imagenet21k": ("mixer_b16", "mixer_l16"),
    "sam": ("mixer_b16", "mixer_b32"),
    "gsam": ("mixer_s16", "mixer_s32", "mixer_b16", "mixer_b32"),  # also Mixer-S_8.npz, not a paper preset
}


def _official_file_name(preset):
    size, patch = preset.removeprefix("mixer_")[0].upper(), preset.removeprefix("mixer_")[1:]
    return f"Mixer-{size}_{patch}.npz"


PUBLISHED_WEIGHTS = {
    (preset, weight_set): {
        "preset": preset,
        "weights": weight_set,
        "url": f"{MIXER_WEIGHTS_URL}/{weight_set}/{_official_file_name(preset)}",
        "num_classes": _WEIGHT_SETS[weight_set][0],
        "image_size": 224,
        "sha256": None,
        "description": _WEIGHT_SETS[weight_set][1],
    }
    for weight_set, presets in _PUBLISHED_FILES.items()
    for preset in presets
}
WEIGHT_SET_NAMES = tuple(_WEIGHT_SETS)


def published_weights(preset, weight_set):
    """The `PUBLISHED_WEIGHTS` row of `preset` and `weight_set`; a missing pair lists what exists.

    Example:
    >>> published_weights("mixer_b16", "imagenet21k")["num_classes"]
    21843
    """
    row = PUBLISHED_WEIGHTS.get((preset, weight_set))
    if row is None:
        available = sorted(name for p, name in PUBLISHED_WEIGHTS if p == preset)
        raise ValueError(
            f"No published {weight_set!r} weights for {preset!r}. Published for {preset!r}: "
            f"{available or 'none'}; or pass the path of an .npz file. Received: preset={preset!r}, "
            f"weights={weight_set!r}"
        )
    return dict(row)


def _preset(name, blocks, hidden, tokens_mlp, channels_mlp, patch, params, description):
    return name, {
        "config": {
            "num_blocks": blocks,
            "hidden_dim": hidden,
            "tokens_mlp_dim": tokens_mlp,
            "channels_mlp_dim": channels_mlp,
            "patch_size": patch,
            "image_size": 224,
            "num_classes": 1000,
        },
        "metadata": {
            "description": description,
            # count_params() at 224x224x3 with a 1000-class head; tests check every one.
            "params": params,
            # Names for `weights=`: rows of PUBLISHED_WEIGHTS.
            "official_weights": sorted(w for p, w in PUBLISHED_WEIGHTS if p == name),
        },
    }


PRESETS = dict(
    [
        _preset("mixer_s32", 8, 512, 256, 2048, 32, 19_104_624, "Mixer-S/32: 8 blocks, C=512, 49 tokens."),
        _preset("mixer_s16", 8, 512, 256, 2048, 16, 18_528_264, "Mixer-S/16: 8 blocks, C=512, 196 tokens."),
        _preset("mixer_b32", 12, 768, 384, 3072, 32, 60_293_428, "Mixer-B/32: 12 blocks, C=768, 49 tokens."),
        _preset("mixer_b16", 12, 768, 384, 3072, 16, 59_880_472, "Mixer-B/16: 12 blocks, C=768, 196 tokens."),
        _preset("mixer_l32", 24, 1024, 512, 4096, 32, 206_939_264, "Mixer-L/32: 24 blocks, C=1024, 49 tokens."),
        _preset("mixer_l16", 24, 1024, 512, 4096, 16, 208_196_168, "Mixer-L/16: 24 blocks, C=1024, 196 tokens."),
        _preset("mixer_h14", 32, 1280, 640, 5120, 14, 432_350_952, "Mixer-H/14: 32 blocks, C=1280, 256 tokens."),
    ]
)


def preset_config(name):
    """The constructor arguments of preset `name` (a fresh dict); unknown names list the valid ones.

    Example:
    >>> preset_config("mixer_b16")["hidden_dim"]
    768
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: preset={name!r}")
    return dict(PRESETS[name]["config"])


def constructor_name(preset):
    """The keras.applications-style function name of a preset.

    >>> constructor_name("mixer_b16")
    'MixerB16'
    """
    return "Mixer" + preset.removeprefix("mixer_").upper()
