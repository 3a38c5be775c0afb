import argparse
import dataclasses

import pytest

from keras_mixer.checkpoints import TOKEN_MIXING_RESIZES
from keras_mixer.layers import MLP_ACTIVATIONS
from training.config import RECIPES, SECTIONS, TrainConfig, add_config_flags, config_from_args, recipe_config
from training.machine import xla_for_training


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
