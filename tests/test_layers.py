import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer.layers import DropPath, MixerBlock, MlpBlock, PatchEmbedding
from tests.model_checks import run_layer_checks
from tests.reference_mixer import gelu_tanh, layer_norm, patchify


def test_patch_embedding_is_a_raster_order_linear_map_of_patches():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 12, 8, 3)).astype("float32")
    stem = PatchEmbedding(hidden_dim=5, patch_size=(4, 2))
    tokens = keras.ops.convert_to_numpy(stem(images))
    kernel = keras.ops.convert_to_numpy(stem.kernel)
    # Reference: patches (raster order, HWC inside) times the flattened kernel.
    n, h, w, c = images.shape
    patches = images.reshape(n, h // 4, 4, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, 4 * 2 * c)
    np.testing.assert_allclose(tokens, patches @ kernel.reshape(-1, 5), rtol=1e-5, atol=1e-5)
    assert tokens.shape == (2, 3 * 4, 5)
    run_layer_checks(stem, images)


def test_in_training_the_stem_has_the_convolutions_values_and_gradients():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((3, 12, 8, 2))  # float64: a difference would be the form's, not rounding
    upstream = rng.standard_normal((3, 12, 5))
    stem = PatchEmbedding(hidden_dim=5, patch_size=(4, 2), dtype="float64")
    stem.build(images.shape)
    stem.bias.assign(rng.standard_normal(5))

    def value_and_gradients(training):
        with tf.GradientTape() as tape:
            tokens = stem(tf.constant(images), training=training)
        gradients = tape.gradient(tokens, [stem.kernel.value, stem.bias.value], output_gradients=tf.constant(upstream))
        return [tokens.numpy(), *(gradient.numpy() for gradient in gradients)]

    # The float64 reference: the stem is a linear map of the patches (raster order, HWC inside), so its kernel's
    # gradient is patches^T @ upstream and its bias's the sum of upstream.
    patches = images.reshape(3, 3, 4, 4, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(3, 12, 4 * 2 * 2)
    kernel_gradient = np.einsum("nsk,nsd->kd", patches, upstream).reshape(4, 2, 2, 5)
    tokens, *gradients = value_and_gradients(training=True)
    np.testing.assert_allclose(tokens, value_and_gradients(training=False)[0], rtol=1e-12, atol=1e-12)
    for gradient, reference in zip(gradients, [kernel_gradient, upstream.sum(axis=(0, 1))]):
        np.testing.assert_allclose(gradient, reference, rtol=1e-12, atol=1e-12)
    # Sizes that are not whole patches (the layer alone; the model refuses them): both forms leave out the
    # pixels past the last whole patch, with the size known or not when traced.
    ragged = tf.constant(rng.standard_normal((2, 14, 9, 2)))
    inference = stem(ragged, training=False).numpy()
    unknown_size = tf.function(
        lambda t: stem(t, training=True), input_signature=[tf.TensorSpec((None,) * 3 + (2,), tf.float64)]
    )
    for training_form in (stem(ragged, training=True), unknown_size(ragged)):
        assert training_form.shape == inference.shape == (2, 3 * 4, 5)
        np.testing.assert_allclose(training_form.numpy(), inference, rtol=1e-12, atol=1e-12)


def test_patchify_helper_matches_square_case():
    images = np.arange(2 * 4 * 4 * 1, dtype="float64").reshape(2, 4, 4, 1)
    patches = patchify(images, 2)
    np.testing.assert_array_equal(patches[0, 1], [2, 3, 6, 7])  # top-right patch, row-major


def test_patch_embedding_rejects_a_wrong_channel_count():
    stem = PatchEmbedding(hidden_dim=4, patch_size=2)
    stem(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="axis -1"):
        stem(np.zeros((1, 4, 4, 1), "float32"))


@pytest.mark.parametrize(("activation", "approximate"), [("gelu", True), ("gelu", False), ("relu", True)])
def test_mlp_block_matches_numpy(activation, approximate):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 6)).astype("float32")
    block = MlpBlock(mlp_dim=11, gelu_approximate=approximate, activation=activation)
    out = keras.ops.convert_to_numpy(block(x))
    w0, b0, w1, b1 = (
        keras.ops.convert_to_numpy(v)
        for v in (block.dense_0.kernel, block.dense_0.bias, block.dense_1.kernel, block.dense_1.bias)
    )
    pre = x.astype("float64") @ w0 + b0
    if activation == "relu":
        hidden = np.maximum(pre, 0.0)
    elif approximate:
        hidden = gelu_tanh(pre)
    else:
        hidden = 0.5 * pre * (1 + np.vectorize(math.erf)(pre / np.sqrt(2)))
    np.testing.assert_allclose(out, hidden @ w1 + b1, rtol=1e-4, atol=1e-5)
    clone = run_layer_checks(block, x)
    assert (clone.gelu_approximate, clone.activation) == (approximate, activation)


def test_mlp_block_rejects_an_unknown_activation():
    message = r"`activation` must be one of \('gelu', 'relu'\). Received: activation='swish'"
    with pytest.raises(ValueError, match=message):
        MlpBlock(mlp_dim=4, activation="swish")


def test_mixer_block_mixes_tokens_then_channels():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 4)).astype("float32")
    block = MixerBlock(tokens_mlp_dim=5, channels_mlp_dim=8)
    block.build(x.shape)
    for variable in block.weights:  # make norms non-trivial
        variable.assign(variable + rng.standard_normal(variable.shape).astype("float32") * 0.1)
    out = keras.ops.convert_to_numpy(block(x))

    def np_(v):
        return keras.ops.convert_to_numpy(v).astype("float64")

    def mlp(z, m):
        return gelu_tanh(z @ np_(m.dense_0.kernel) + np_(m.dense_0.bias)) @ np_(m.dense_1.kernel) + np_(m.dense_1.bias)

    y = layer_norm(x, np_(block.layer_norm_0.gamma), np_(block.layer_norm_0.beta))
    ref = x + mlp(y.swapaxes(1, 2), block.token_mixing).swapaxes(1, 2)
    y = layer_norm(ref, np_(block.layer_norm_1.gamma), np_(block.layer_norm_1.beta))
    ref = ref + mlp(y, block.channel_mixing)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert block.layer_norm_0 is not block.layer_norm_1
    assert block.layer_norm_0.epsilon == 1e-6
    run_layer_checks(block, x, tolerance=1e-5)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    layer = DropPath(0.25, seed=3)
    x = np.ones((4000, 3, 2), "float32")
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = out.reshape(4000, -1)
    assert set(np.unique(per_sample)) <= {np.float32(0.0), np.float32(1 / 0.75)}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))  # whole sample kept or dropped
    assert abs(per_sample.mean() - 1.0) < 0.05
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    run_layer_checks(layer, x[:8])


def test_drop_path_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="Received: rate=1.0"):
        DropPath(1.0)
