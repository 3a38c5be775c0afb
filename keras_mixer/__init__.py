"""keras-mixer: the MLP-Mixer (Tolstikhin et al., NeurIPS 2021) for Keras 3.

Public API only. Example:
>>> import keras_mixer
>>> model = keras_mixer.MLPMixer.from_preset("mixer_s32", num_classes=10, image_size=64)
>>> model.count_params() > 0
True
"""

from keras_mixer import flip_average, layers, schedules
from keras_mixer.checkpoints import (
    change_resolution,
    load_official_weights,
    read_official_checkpoint,
    resize_token_mixing,
    save_official_weights,
)
from keras_mixer.model import MLPMixer
from keras_mixer.presets import (
    PRESETS,
    MixerB16,
    MixerB32,
    MixerH14,
    MixerL16,
    MixerL32,
    MixerS16,
    MixerS32,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "MLPMixer",
    "MixerB16",
    "MixerB32",
    "MixerH14",
    "MixerL16",
    "MixerL32",
    "MixerS16",
    "MixerS32",
    "change_resolution",
    "flip_average",
    "layers",
    "load_official_weights",
    "read_official_checkpoint",
    "resize_token_mixing",
    "save_official_weights",
    "schedules",
]
