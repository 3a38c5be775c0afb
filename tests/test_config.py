import argparse
import dataclasses

import pytest

from keras_mixer.checkpoints import TOKEN_MIXING_RESIZES
from keras_mixer.layers import MLP_ACTIVATIONS
from training.config import RECIPES, SECTIONS, TrainConfig, add_config_flags, config_from_args, recipe_config
from training.machine import MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512, channel_mixing_macs, xla_for_training


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return config_from_args(parser.parse_args(argv))


def test_every_field_is_a_flag_with_help():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    help_text = parser.format_help()
    config = TrainConfig()
    for section in SECTIONS:
        for field in dataclasses.fields(getattr(config, section)):
            assert "--" + field.name.replace("_", "-") in help_text
            assert field.metadata["help"]


def test_activation_choices_are_the_models():
    (field,) = [f for f in dataclasses.fields(TrainConfig().model) if f.name == "activation"]
    assert field.metadata["choices"] == MLP_ACTIVATIONS


def test_token_mixing_resize_choices_are_the_checkpoint_loaders():
    (field,) = [f for f in dataclasses.fields(TrainConfig().model) if f.name == "token_mixing_resize"]
    assert field.metadata["choices"] == TOKEN_MIXING_RESIZES


def test_flags_override_the_recipe():
    config = _parse("--recipe", "cifar10", "--lr", "0.03", "--hidden-dim", "64", "--xla", "--cache", "false")
    assert config.data.dataset == "cifar10" and config.optim.learning_rate == 0.03
    assert config.model.hidden_dim == 64 and config.distribute.xla is True and config.data.cache is False


def test_xla_is_auto_unless_asked_for(capsys):
    assert _parse().distribute.xla is None
    assert _parse("--xla", "auto").distribute.xla is None
    assert _parse("--xla", "false").distribute.xla is False and _parse("--xla", "on").distribute.xla is True
    onednn = {"onednn": True, "gpus": []}
    assert xla_for_training(None, "float32", **onednn)[0] is True
    assert xla_for_training(None, "bfloat16", **onednn)[0] is False
    assert xla_for_training(None, "float32", onednn=False, gpus=[])[0] is False
    assert xla_for_training(None, "float32", onednn=True, gpus=["GPU:0"])[0] is False
    assert xla_for_training(False, "float32", **onednn) == (False, "asked for (--xla)")
    assert xla_for_training(True, "bfloat16", onednn=False, gpus=[])[0] is True
    with pytest.raises(SystemExit):
        _parse("--xla", "sometimes")
    assert "--xla: expected true, false or auto, got 'sometimes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse("--cache", "auto")  # a plain bool has no auto
    assert "--cache: expected true or false, got 'auto'" in capsys.readouterr().err


def test_auto_xla_follows_the_channel_mixing_size_on_a_cpu_without_avx512():
    avx2 = {"onednn": True, "gpus": [], "cpu_flags": ["avx2"]}
    # The sizes measured (README's XLA A/B table), as `channel_mixing_macs` gives them.
    fashion_b128, s32_b8, b32_b8 = 128 * 16 * 128 * 512, 8 * 49 * 512 * 2048, 8 * 49 * 768 * 3072
    s16_b8, s32_b32, b16_b8 = 8 * 196 * 512 * 2048, 32 * 49 * 512 * 2048, 8 * 196 * 768 * 3072
    for on in (fashion_b128, s32_b8, b32_b8, MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512):  # 1.27x, 1.17x, 1.13x
        assert xla_for_training(None, "float32", channel_macs=on, **avx2)[0] is True, on
    for off in (s16_b8, s32_b32, b16_b8, MAX_XLA_CHANNEL_MACS_WITHOUT_AVX512 + 1):  # 0.94x, 1.03x, 0.92x
        assert xla_for_training(None, "float32", channel_macs=off, **avx2)[0] is False, off
    because = xla_for_training(None, "float32", channel_macs=s16_b8, **avx2)[1]
    assert "1.64 G multiply-adds per channel-mixing matmul and step on a CPU without AVX-512" in because
    avx512 = {**avx2, "cpu_flags": ["avx512f", "avx2"]}
    assert xla_for_training(None, "float32", channel_macs=s16_b8, **avx512)[0] is True  # S/16 1.17x there
    assert xla_for_training(True, "float32", channel_macs=s16_b8, **avx2) == (True, "asked for (--xla)")
    assert xla_for_training(None, "float32", **avx2)[0] is True  # size unknown


@pytest.mark.parametrize(
    ("image_size", "flags", "xla"), [(40, ["avx2"], False), (36, ["avx2"], True), (40, ["avx512f"], True)]
)
def test_compile_for_training_gives_the_rule_the_step_size(monkeypatch, image_size, flags, xla):
    import training.machine  # noqa: PLC0415
    from keras_mixer import MLPMixer, fused_norm  # noqa: PLC0415
    from training.train import compile_for_training  # noqa: PLC0415

    monkeypatch.setattr(training.machine, "cpu_model_and_flags", lambda: ("a CPU", flags))
    monkeypatch.setattr(fused_norm, "onednn_enabled", lambda: True)
    model = MLPMixer(num_classes=2, image_size=image_size, patch_size=4, num_channels=1, num_blocks=1, hidden_dim=128,
                     tokens_mlp_dim=4, channels_mlp_dim=768)  # fmt: skip  # 100 or 81 tokens
    config = TrainConfig()  # batch 128, one replica: 1.26 G or 1.02 G multiply-adds per channel-mixing matmul
    assert channel_mixing_macs(model, config.schedule.batch_size) in (128 * 100 * 128 * 768, 128 * 81 * 128 * 768)
    compile_for_training(model, config, steps_per_epoch=1)
    assert model.jit_compile is xla


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_are_complete_configs(name):
    config = recipe_config(name)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_paper_recipes_follow_the_paper():
    pretrain, finetune = recipe_config("imagenet_pretrain"), recipe_config("finetune")
    assert (pretrain.optim.optimizer, pretrain.optim.weight_decay, pretrain.schedule.batch_size) == ("adamw", 0.1, 4096)
    assert (pretrain.augment.randaugment_layers, pretrain.augment.mixup_alpha, pretrain.model.drop_path_rate) == (
        2,
        0.5,
        0.1,
    )
    assert (finetune.optim.optimizer, finetune.optim.weight_decay, finetune.schedule.batch_size) == ("sgd", 0.0, 512)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Expected one of"):
        recipe_config("mnist_fast")


def test_bad_choice_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        _parse("--strategy", "parameter_server")
