"""keras-mixer: the MLP-Mixer (Tolstikhin et al., NeurIPS 2021) for Keras 3.

Public API only. Example:
>>> import keras_mixer
>>> model = keras_mixer.MLPMixer.from_preset("mixer_s32", num_classes=10, image_size=64)
>>> model.count_params() > 0
True
"""

from keras_mixer import flip_average, layers, schedules
from keras_mixer.applications import PRESET_CONSTRUCTORS
from keras_mixer.checkpoints import (
    TOKEN_MIXING_RESIZES,
    change_resolution,
    interpolate_token_mixing,
    load_official_weights,
    read_official_checkpoint,
    resize_token_mixing,
    save_official_weights,
)
from keras_mixer.fused_norm import portable_graph
from keras_mixer.model import MLPMixer
from keras_mixer.presets import PRESETS, PUBLISHED_WEIGHTS
from keras_mixer.weights import WeightsDownloadError, download_weights, imagenet1k_class_names

__version__ = "0.1.0"

globals().update(PRESET_CONSTRUCTORS)  # MixerS32 ... MixerH14, one per preset

__all__ = [
    "PRESETS",
    "PUBLISHED_WEIGHTS",
    "TOKEN_MIXING_RESIZES",
    "WeightsDownloadError",
    "MLPMixer",
    "change_resolution",
    "download_weights",
    "flip_average",
    "imagenet1k_class_names",
    "interpolate_token_mixing",
    "layers",
    "load_official_weights",
    "portable_graph",
    "read_official_checkpoint",
    "resize_token_mixing",
    "save_official_weights",
    "schedules",
]
__all__ += list(PRESET_CONSTRUCTORS)  # MixerS32 ... MixerH14
