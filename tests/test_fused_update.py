"""`training.fused_update`: the optimiser's update as one XLA call trains exactly as Keras' own update."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import training.fused_update
from keras_mixer import MLPMixer
from training.config import TrainConfig
from training.train import compile_for_training


def _fit(policy="float32", xla=False, fused=True, monkeypatch=None):
    keras.config.set_dtype_policy(policy)
    if not fused:
        monkeypatch.setattr(training.fused_update, "compile_update_with_xla", lambda optimizer: optimizer)
    config = TrainConfig()
    config.distribute.xla, config.optim.ema_decay = xla, 0.5  # clipping, weight decay and the EMA all in the update
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():  # as training.train runs on a CPU
        keras.utils.set_random_seed(0)
        model = MLPMixer(num_classes=3, image_size=8, patch_size=4, num_channels=1, num_blocks=2, hidden_dim=8,
                         tokens_mlp_dim=4, channels_mlp_dim=16)  # fmt: skip
        compile_for_training(model, config, steps_per_epoch=4)
    model.initial_weights = model.get_weights()
    images = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    data = tf.data.Dataset.from_tensors((images, keras.ops.one_hot([0, 2, 1, 0], 3))).repeat()
    model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, shuffle=False)
    if monkeypatch:
        monkeypatch.undo()
    return model


def _compiled_traces(model):
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    compiled = getattr(optimizer.apply, "compiled", None)
    return None if compiled is None else compiled.experimental_get_tracing_count()


def test_the_compiled_update_trains_as_keras_update_does(monkeypatch):
    fused, keras_update = _fit(), _fit(fused=False, monkeypatch=monkeypatch)
    assert _compiled_traces(fused) == 1 and _compiled_traces(keras_update) is None  # it ran, and only in one
    assert int(fused.optimizer.iterations.numpy()) == int(keras_update.optimizer.iterations.numpy()) == 8
    moved = False
    for a, b, start in zip(fused.get_weights(), keras_update.get_weights(), fused.initial_weights):
        np.testing.assert_allclose(a, b, atol=2e-5)  # rounding; the weights moved by up to 8 steps of 4e-3
        moved |= not np.allclose(a, start, atol=1e-3)
    assert moved  # the runs trained: equal weights are not two untouched models


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_the_compiled_update(policy):
    model = _fit(policy)
    assert _compiled_traces(model) == 1 and int(model.optimizer.iterations.numpy()) == 8
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_a_step_compiled_whole_by_xla_keeps_keras_update():
    assert _compiled_traces(_fit(xla=True)) is None
