"""`fused_residual`: the token mixing's bias, transpose back, residual add and `LayerNorm_1` as one compiled
function give the float64 formula's values and gradients, and a MixerBlock trains with it with the gradients of
the separate Keras ops; it applies only in training, without dropout or stochastic depth."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import fused_norm, layers
from keras_mixer.fused_norm import portable_graph
from keras_mixer.fused_residual import token_residual_layer_norm, token_residual_norm_applies
from keras_mixer.layers import MixerBlock, MlpBlock

BATCH, TOKENS, CHANNELS = 2, 256, 256  # 65,536 values per image: the compiled norm's threshold


@pytest.fixture(autouse=True)
def any_thread_count(monkeypatch):
    """The compiled norm's thread condition met on any machine."""
    monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)


def _float64_formula_and_gradients(residual, branch, bias, gamma, beta, upstreams):
    """(residual + branchᵀ + bias, its layer norm), and the gradients of Σ outputs · upstreams for the five
    inputs by TensorFlow's autodiff of that float64 formula."""
    inputs = [tf.constant(np.asarray(v, np.float64)) for v in (residual, branch, bias, gamma, beta)]
    residual, branch, bias, gamma, beta = inputs
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        summed = residual + tf.transpose(branch, (0, 2, 1)) + bias[:, None]
        mean = tf.reduce_mean(summed, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(summed - mean), axis=-1, keepdims=True)
        normalized = (summed - mean) / tf.sqrt(variance + 1e-6) * gamma + beta
        loss = sum(tf.reduce_sum(out * tf.constant(up, tf.float64)) for out, up in zip((summed, normalized), upstreams))
    return [summed.numpy(), normalized.numpy(), *(gradient.numpy() for gradient in tape.gradient(loss, inputs))]


@pytest.mark.parametrize(
    "residual_dtype, branch_dtype, tolerance",
    [("float64", "float64", 1e-12), ("float32", "float32", 2e-5), ("bfloat16", "bfloat16", 2**-6)],
)
def test_the_compiled_function_has_the_float64_formulas_values_and_gradients(residual_dtype, branch_dtype, tolerance):
    rng = np.random.default_rng(8)
    residual = tf.cast(rng.standard_normal((BATCH, TOKENS, CHANNELS)) * 3 + 1, residual_dtype)
    branch = tf.cast(rng.standard_normal((BATCH, CHANNELS, TOKENS)), branch_dtype)
    bias = tf.constant(rng.standard_normal(TOKENS), "float32")
    gamma, beta = (tf.constant(rng.standard_normal(CHANNELS) + offset, "float32") for offset in (1, 0))
    upstreams = [tf.cast(rng.standard_normal((BATCH, TOKENS, CHANNELS)), residual_dtype) for _ in range(2)]
    # The reference sees the inputs the function sees (bfloat16-rounded where they are bfloat16).
    expected = _float64_formula_and_gradients(
        *(tf.cast(v, tf.float64) for v in (residual, branch, bias, gamma, beta)),
        [tf.cast(up, tf.float64) for up in upstreams],
    )

    @tf.function
    def values_and_gradients(residual, branch, bias, gamma, beta):
        with tf.GradientTape() as tape:
            tape.watch([residual, branch, bias, gamma, beta])
            outputs = token_residual_layer_norm(residual, branch, bias, gamma, beta, 1e-6, residual_dtype)
            loss = sum(tf.reduce_sum(tf.cast(out, tf.float64) * tf.cast(up, tf.float64))
                       for out, up in zip(outputs, upstreams))  # fmt: skip
        return [*outputs, *tape.gradient(loss, [residual, branch, bias, gamma, beta])]

    got = values_and_gradients(residual, branch, bias, gamma, beta)
    names = ("summed", "normalized", "d_residual", "d_branch", "d_bias", "d_gamma", "d_beta")
    dtypes = (residual_dtype, residual_dtype, residual_dtype, branch_dtype, "float32", "float32", "float32")
    for name, value, want, dtype in zip(names, got, expected, dtypes):
        assert value.dtype == dtype, name
        np.testing.assert_allclose(
            tf.cast(value, tf.float64).numpy(), want, atol=tolerance * np.abs(want).max(), err_msg=name
        )


def _block_with_random_weights(dtype, **kwargs):
    keras.utils.set_random_seed(1)
    block = MixerBlock(tokens_mlp_dim=16, channels_mlp_dim=32, dtype=dtype, **kwargs)
    block.build((None, TOKENS, CHANNELS))
    rng = np.random.default_rng(2)
    for weight in block.weights:  # zero biases and unit gammas would hide a bias or a gamma left out
        weight.assign(rng.standard_normal(weight.shape) * (0.1 if weight.path.endswith("kernel") else 1))
    return block


def test_a_training_block_runs_it_with_the_gradients_of_the_separate_keras_ops(monkeypatch):
    block = _block_with_random_weights("float32")
    rng = np.random.default_rng(3)
    x, upstream = (tf.constant(rng.standard_normal((BATCH, TOKENS, CHANNELS)), tf.float32) for _ in range(2))
    assert token_residual_norm_applies(block, x, training=True)
    calls = []

    def counted(*args):
        calls.append(1)
        return token_residual_layer_norm(*args)

    monkeypatch.setattr(layers, "token_residual_layer_norm", counted)

    def output_and_gradients():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        return [y, *tape.gradient(loss, [x, *block.trainable_variables])]

    fused = [value.numpy() for value in tf.function(output_and_gradients)()]
    assert calls == [1]
    with portable_graph():  # no XLA: the token MLP's Dense, Keras' transpose, add and layer norm
        separate = [value.numpy() for value in tf.function(output_and_gradients)()]
    assert calls == [1]
    names = ["output", "x"] + [variable.path for variable in block.trainable_variables]
    for name, ours, theirs in zip(names, fused, separate):
        # The token MLP's output bias is removed by the next norm: its gradient is zero up to float noise.
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-5 * np.abs(theirs).max() + 1e-5, err_msg=name)


@pytest.mark.parametrize("setting", [{"dropout_rate": 0.1}, {"drop_path_rate": 0.1}, {"training": False}])
def test_dropout_stochastic_depth_and_inference_keep_the_separate_ops(setting):
    setting = dict(setting)
    training = setting.pop("training", True)
    block = _block_with_random_weights("float32", **setting)
    assert not token_residual_norm_applies(block, tf.zeros((BATCH, TOKENS, CHANNELS)), training=training)
    # A small norm keeps them too (below the compiled norm's size).
    small = _block_with_random_weights("float32")
    assert not token_residual_norm_applies(small, tf.zeros((BATCH, 16, CHANNELS)), training=True)


def test_an_mlp_without_its_output_bias_is_the_mlp_less_that_bias_and_refuses_dropout():
    x = np.random.default_rng(4).standard_normal((2, 5, 8)).astype("float32")
    mlp = MlpBlock(mlp_dim=16)
    mlp.build(x.shape)
    mlp.dense_1.bias.assign(np.arange(8, dtype="float32"))
    with_bias, without = (keras.ops.convert_to_numpy(mlp(x, output_bias=flag)) for flag in (True, False))
    np.testing.assert_allclose(with_bias - without, np.broadcast_to(np.arange(8.0), with_bias.shape), atol=1e-5)
    with pytest.raises(ValueError, match="output_bias=False needs dropout_rate 0. Received: dropout_rate=0.1"):
        MlpBlock(mlp_dim=16, dropout_rate=0.1)(x, output_bias=False)
