"""The seven MLP-Mixer configurations of the paper (Table 1) as data, and their constructors.

`PRESETS[name]["config"]` holds constructor arguments; `["metadata"]` holds what a user wants
to know before building one (description, parameter count at 224 px with 1000 classes, where
official weights come from). `MixerS32(...)` ... `MixerH14(...)` are keras.applications-style
shortcuts for `MLPMixer.from_preset`.
"""

from keras_mixer.model import MLPMixer

_OFFICIAL = "google-research/vision_transformer (imagenet21k, imagenet1k, sam, gsam .npz)"


def _preset(blocks, hidden, tokens_mlp, channels_mlp, patch, params, description):
    return {
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
            "official_weights": _OFFICIAL,
        },
    }


PRESETS = {
    "mixer_s32": _preset(8, 512, 256, 2048, 32, 19_104_624, "Mixer-S/32: 8 blocks, C=512, 49 tokens."),
    "mixer_s16": _preset(8, 512, 256, 2048, 16, 18_528_264, "Mixer-S/16: 8 blocks, C=512, 196 tokens."),
    "mixer_b32": _preset(12, 768, 384, 3072, 32, 60_293_428, "Mixer-B/32: 12 blocks, C=768, 49 tokens."),
    "mixer_b16": _preset(12, 768, 384, 3072, 16, 59_880_472, "Mixer-B/16: 12 blocks, C=768, 196 tokens."),
    "mixer_l32": _preset(24, 1024, 512, 4096, 32, 206_939_264, "Mixer-L/32: 24 blocks, C=1024, 49 tokens."),
    "mixer_l16": _preset(24, 1024, 512, 4096, 16, 208_196_168, "Mixer-L/16: 24 blocks, C=1024, 196 tokens."),
    "mixer_h14": _preset(32, 1280, 640, 5120, 14, 432_350_952, "Mixer-H/14: 32 blocks, C=1280, 256 tokens."),
}


def preset_config(name):
    """The constructor arguments of preset `name` (a fresh dict); unknown names list the valid ones.

    Example:
    >>> preset_config("mixer_b16")["hidden_dim"]
    768
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset. Expected one of {sorted(PRESETS)}. Received: preset={name!r}")
    return dict(PRESETS[name]["config"])


def _preset_constructor(preset, function_name):
    def constructor(weights=None, **overrides):
        return MLPMixer.from_preset(preset, weights=weights, **overrides)

    constructor.__name__ = constructor.__qualname__ = function_name
    constructor.__doc__ = (
        f"{PRESETS[preset]['metadata']['description']} Same as "
        f"`MLPMixer.from_preset({preset!r}, weights=weights, **overrides)`.\n\n"
        f"Example: `{function_name}(num_classes=10, weights=None)`.\n"
    )
    return constructor


MixerS32 = _preset_constructor("mixer_s32", "MixerS32")
MixerS16 = _preset_constructor("mixer_s16", "MixerS16")
MixerB32 = _preset_constructor("mixer_b32", "MixerB32")
MixerB16 = _preset_constructor("mixer_b16", "MixerB16")
MixerL32 = _preset_constructor("mixer_l32", "MixerL32")
MixerL16 = _preset_constructor("mixer_l16", "MixerL16")
MixerH14 = _preset_constructor("mixer_h14", "MixerH14")
