import pytest

import keras_mixer
from keras_mixer import PRESETS, MLPMixer

OFFICIAL_COUNTS = {  # paper-facts / official tests, at 224x224x3 with 1000 classes
    "mixer_s16": 18_528_264,
    "mixer_b32": 60_293_428,
    "mixer_b16": 59_880_472,
    "mixer_l16": 208_196_168,
}


# Paper Table 1, written here independently of presets.py: blocks, C, D_S, D_C, patch.
TABLE_1 = {
    "mixer_s32": (8, 512, 256, 2048, 32),
    "mixer_s16": (8, 512, 256, 2048, 16),
    "mixer_b32": (12, 768, 384, 3072, 32),
    "mixer_b16": (12, 768, 384, 3072, 16),
    "mixer_l32": (24, 1024, 512, 4096, 32),
    "mixer_l16": (24, 1024, 512, 4096, 16),
    "mixer_h14": (32, 1280, 640, 5120, 14),
}


def closed_form_parameter_count(blocks, hidden, tokens_mlp, channels_mlp, patch, image=224, channels=3, classes=1000):
    """Stem + blocks (two LayerNorms, token MLP, channel MLP) + pre-head LayerNorm + head."""
    tokens = (image // patch) ** 2
    stem = patch * patch * channels * hidden + hidden
    token_mlp = tokens * tokens_mlp + tokens_mlp + tokens_mlp * tokens + tokens
    channel_mlp = hidden * channels_mlp + channels_mlp + channels_mlp * hidden + hidden
    block = 2 * 2 * hidden + token_mlp + channel_mlp
    return stem + blocks * block + 2 * hidden + hidden * classes + classes


def test_the_closed_form_count_reproduces_the_official_counts():
    for name, count in OFFICIAL_COUNTS.items():
        assert closed_form_parameter_count(*TABLE_1[name]) == count


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_preset_configs_and_counts_follow_table_1(name):
    config = PRESETS[name]["config"]
    assert (
        tuple(config[k] for k in ("num_blocks", "hidden_dim", "tokens_mlp_dim", "channels_mlp_dim", "patch_size"))
        == (TABLE_1[name])
    )
    assert PRESETS[name]["metadata"]["params"] == closed_form_parameter_count(*TABLE_1[name])


def test_seven_presets_from_table_1():
    assert sorted(PRESETS) == sorted(
        ["mixer_s32", "mixer_s16", "mixer_b32", "mixer_b16", "mixer_l32", "mixer_l16", "mixer_h14"]
    )
    for name, count in OFFICIAL_COUNTS.items():
        assert PRESETS[name]["metadata"]["params"] == count


@pytest.mark.parametrize(
    "function, preset",
    [
        ("MixerS32", "mixer_s32"),
        ("MixerS16", "mixer_s16"),
        ("MixerB32", "mixer_b32"),
        ("MixerB16", "mixer_b16"),
        ("MixerL32", "mixer_l32"),
        ("MixerL16", "mixer_l16"),
        ("MixerH14", "mixer_h14"),
    ],
)
def test_application_functions_build_their_preset_with_its_parameter_count(function, preset):
    # One full-size build per preset (H/14 alone takes seconds): the function, which is
    # MLPMixer.from_preset, gives the preset's layout and the count that Table 1's closed form gives.
    config = PRESETS[preset]["config"]
    model = getattr(keras_mixer, function)()
    assert model.count_params() == closed_form_parameter_count(*TABLE_1[preset])
    assert model.hidden_dim == config["hidden_dim"] and model.num_blocks == config["num_blocks"]
    patch = config["patch_size"]
    assert model.patch_size == (patch, patch) and model.num_tokens == (224 // patch) ** 2
    assert model.num_classes == 1000 and model.include_top


def test_overrides_reach_the_model():
    model = MLPMixer.from_preset("mixer_s32", num_classes=10, image_size=64, drop_path_rate=0.1, include_top=False)
    assert model.num_tokens == 4 and not model.include_top and model.drop_path_rate == 0.1


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Expected one of \['mixer_b16'.*'mixer_s32'\]. Received: preset='mixer_x9'"):
        MLPMixer.from_preset("mixer_x9")
