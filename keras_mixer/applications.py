"""keras.applications-style constructors, one per paper preset, generated from `PRESETS`.

    >>> from keras_mixer import MixerS32
    >>> MixerS32(num_classes=10, image_size=64).count_params() > 0
    True

`MixerB16(weights="imagenet1k", num_classes=...)` is `MLPMixer.from_preset("mixer_b16", ...)`; adding a preset
to `PRESETS` adds its constructor here and at the package's top level.
"""

from keras_mixer.model import MLPMixer
from keras_mixer.presets import PRESETS, constructor_name


def _preset_constructor(preset):
    function_name = constructor_name(preset)

    def constructor(weights=None, **overrides):
        return MLPMixer.from_preset(preset, weights=weights, **overrides)

    constructor.__name__ = constructor.__qualname__ = function_name
    constructor.__module__ = "keras_mixer"
    constructor.__doc__ = (
        f"{PRESETS[preset]['metadata']['description']} Same as "
        f"`MLPMixer.from_preset({preset!r}, weights=weights, **overrides)`.\n\n"
        f"Example: `{function_name}(num_classes=10, weights=None)`.\n"
    )
    return constructor


PRESET_CONSTRUCTORS = {constructor_name(preset): _preset_constructor(preset) for preset in PRESETS}
globals().update(PRESET_CONSTRUCTORS)
__all__ = ["PRESET_CONSTRUCTORS"]
__all__ += list(PRESET_CONSTRUCTORS)
