"""MLP kernels traced as graph constants (`keras_mixer.constant_kernels`) and the bfloat16 SavedModel built so."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer, constant_kernels, load_official_weights
from keras_mixer.constant_kernels import kernels_fit_as_constants, mlp_kernels
from keras_mixer.export import export_saved_model, with_precision
from keras_mixer.layers import MlpBlock
from tests.model_checks import CONFIG, SIZES, random_images, saved_model_constants
from tests.reference_mixer import official_logits, random_official_checkpoint


@pytest.fixture
def official(tmp_path):
    """(model with a random official checkpoint, its params): biases not zero, as in a trained model."""
    params = random_official_checkpoint(np.random.default_rng(3), **SIZES)
    np.savez(tmp_path / "checkpoint.npz", **params)
    model = MLPMixer(**CONFIG)
    load_official_weights(model, tmp_path / "checkpoint.npz")
    return model, params


def _kernels_read_from(concrete_function):
    graph = concrete_function.graph
    return [op.inputs[1].op.type for op in graph.get_operations() if op.type == "MatMul"]


def test_a_graph_with_constant_kernels_gives_the_official_logits_at_every_batch_size(official):
    model, params = official
    images = random_images(5, size=32, seed=4)
    expected = official_logits(params, images)
    assert np.abs(expected).max() > 0.5  # not a comparison of near-zeros
    with constant_kernels.constant_kernels(model):
        forward = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, 32, 32, 3))])
        traced = forward.get_concrete_function()
    assert sorted(_kernels_read_from(traced)) == ["Const"] * 2 * 2 * SIZES["blocks"] + ["ReadVariableOp"]  # head
    assert {id(v) for v in traced.variables}.isdisjoint(id(kernel) for kernel in mlp_kernels(model))
    # oneDNN keeps each constant kernel reordered after its first call: later calls of other sizes reuse it.
    for count in (5, 1, 3, 5):
        logits = forward(tf.constant(images[:count])).numpy()
        np.testing.assert_allclose(logits, expected[:count], rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_only_the_named_models_kernels_and_only_traced_graphs_are_affected(official):
    model, _ = official
    other = MlpBlock(mlp_dim=6)
    tokens = tf.constant(np.random.default_rng(5).normal(size=(2, 16, 12)).astype("float32"))
    other(tokens)
    with constant_kernels.constant_kernels(model):
        assert _kernels_read_from(tf.function(other).get_concrete_function(tokens)) == ["ReadVariableOp"] * 2
        block = model.mixer_blocks[0].channel_mixing
        before = block(tokens).numpy()
        block.dense_0.kernel.assign(block.dense_0.kernel * 2.0)
        assert not np.allclose(block(tokens).numpy(), before)  # an eager call reads the variable


def test_a_traced_graph_keeps_the_kernels_it_was_traced_with(official):
    # Why the package traces so only for exports: a later change of the weights does not reach the graph.
    model, _ = official
    images = tf.constant(random_images(2, size=32, seed=6))
    with constant_kernels.constant_kernels(model):
        forward = tf.function(lambda x: model(x, training=False))
        before = forward(images).numpy()
    kernel = model.mixer_blocks[0].channel_mixing.dense_0.kernel
    kernel.assign(kernel * 2.0)
    np.testing.assert_array_equal(forward(images).numpy(), before)
    assert not np.allclose(model(images, training=False).numpy(), before)


def test_the_bfloat16_saved_model_stores_each_kernel_once_unless_it_would_not_fit(official, tmp_path, monkeypatch):
    model, params = official
    images = random_images(4, size=32, seed=7)
    expected = tf.nn.softmax(official_logits(params, images)).numpy()
    bf16 = with_precision(model, "bfloat16", inference=True)
    kernel_shapes = [tuple(kernel.shape) for kernel in mlp_kernels(bf16)]
    assert kernels_fit_as_constants(bf16)

    folder = export_saved_model(model, str(tmp_path / "constants"), precision="bfloat16")
    probabilities = tf.saved_model.load(folder).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(probabilities["probabilities"].numpy(), expected, atol=0.02)  # bfloat16 matmuls
    constants = saved_model_constants(folder)[tf.bfloat16]
    assert sorted(shape for shape in constants if shape in kernel_shapes) == sorted(kernel_shapes)  # once each
    assert not [
        v.name for v in tf.saved_model.load(folder).variables if "mixing/Dense" in v.name and "kernel" in v.name
    ]

    monkeypatch.setattr(constant_kernels, "MAX_CONSTANT_KERNEL_BYTES", 2 * sum(map(np.prod, kernel_shapes)) - 1)
    assert not kernels_fit_as_constants(bf16)
    folder = export_saved_model(model, str(tmp_path / "variables"), precision="bfloat16")
    probabilities = tf.saved_model.load(folder).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(probabilities["probabilities"].numpy(), expected, atol=0.02)
    assert not [shape for shape in saved_model_constants(folder).get(tf.bfloat16, []) if shape in kernel_shapes]
    stored = {v.name for v in tf.saved_model.load(folder).variables}
    assert "MixerBlock_0/channel_mixing/Dense_0/kernel:0" in stored


def test_the_float32_saved_model_keeps_its_kernels_as_variables(official, tmp_path):
    model, _ = official
    folder = export_saved_model(model, str(tmp_path / "m"))
    stored = {v.name for v in tf.saved_model.load(folder).variables}
    assert "MixerBlock_0/channel_mixing/Dense_0/kernel:0" in stored
    kernel_shapes = {tuple(kernel.shape) for kernel in mlp_kernels(model)}
    assert not [shape for shape in saved_model_constants(folder).get(tf.float32, []) if shape in kernel_shapes]


def _constant_kernels_traced(monkeypatch):
    """A list that grows by one each time a graph is traced with an MLP kernel as a constant."""
    from keras_mixer import layers  # noqa: PLC0415

    traced = []

    def recorded(dense):
        value = constant_kernels.constant_kernel(dense)
        if value is not None:
            traced.append(dense.kernel.path)
        return value

    monkeypatch.setattr(layers, "constant_kernel", recorded)
    return traced


def test_bfloat16_predict_traces_constant_kernels_and_traces_again_when_they_change(official, tmp_path, monkeypatch):
    model, params = official
    bf16 = with_precision(model, "bfloat16")
    assert constant_kernels.steps_have_constant_kernels(bf16)
    traced = _constant_kernels_traced(monkeypatch)
    images = random_images(5, size=32, seed=7)
    expected = official_logits(params, images)
    scale = np.abs(expected).max()
    # bfloat16 matmuls keep about 3 significant digits.
    np.testing.assert_allclose(bf16.predict(images, verbose=0), expected, atol=0.05 * scale)
    assert len(traced) == 2 * 2 * SIZES["blocks"]  # every MLP kernel of the one trace
    bf16.predict(images[:2], verbose=0)
    assert len(traced) == 2 * 2 * SIZES["blocks"]  # same kernels: the same trace, for any batch size
    # New weights (as training between two predictions would give): predict must not answer with the old ones.
    other = random_official_checkpoint(np.random.default_rng(9), **SIZES)
    np.savez(tmp_path / "other.npz", **other)
    load_official_weights(bf16, tmp_path / "other.npz")
    new_expected = official_logits(other, images)
    assert np.abs(new_expected - expected).max() > 0.5 * scale
    np.testing.assert_allclose(bf16.predict(images, verbose=0), new_expected, atol=0.05 * np.abs(new_expected).max())
    assert len(traced) == 2 * 2 * 2 * SIZES["blocks"]  # traced again, once


def test_float32_predict_keeps_its_kernels_as_variables(official, monkeypatch):
    model, _ = official
    assert not constant_kernels.steps_have_constant_kernels(model)
    traced = _constant_kernels_traced(monkeypatch)
    model.predict(random_images(2, size=32, seed=8), verbose=0)
    assert traced == []


def test_bfloat16_evaluate_traces_constant_kernels_and_never_answers_with_old_ones(official, tmp_path, monkeypatch):
    model, params = official
    bf16 = with_precision(model, "bfloat16")
    bf16.compile(loss="mse")  # against zeros: the mean square logit, which any change of the weights moves
    traced = _constant_kernels_traced(monkeypatch)
    images = random_images(6, size=32, seed=10)
    zeros = np.zeros((6, CONFIG["num_classes"]), "float32")
    expected = np.mean(official_logits(params, images) ** 2)
    assert bf16.evaluate(images, zeros, batch_size=4, verbose=0) == pytest.approx(expected, rel=0.1)
    assert len(traced) >= 2 * 2 * SIZES["blocks"]  # the test step read its kernels as constants
    bf16.predict(images, verbose=0)  # a second step on the same kernels
    # New weights, then evaluate, then predict: neither step may keep the old kernels.
    other = random_official_checkpoint(np.random.default_rng(11), **SIZES)
    np.savez(tmp_path / "other.npz", **other)
    load_official_weights(bf16, tmp_path / "other.npz")
    logits = official_logits(other, images)
    assert not np.mean(logits**2) == pytest.approx(expected, rel=0.3)
    assert bf16.evaluate(images, zeros, batch_size=4, verbose=0) == pytest.approx(np.mean(logits**2), rel=0.1)
    np.testing.assert_allclose(bf16.predict(images, verbose=0), logits, atol=0.05 * np.abs(logits).max())


def test_fits_validation_keeps_the_kernels_as_variables(official, monkeypatch):
    model, _ = official
    bf16 = with_precision(model, "bfloat16")
    bf16.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    traced = _constant_kernels_traced(monkeypatch)
    images = random_images(4, size=32, seed=12)
    labels = np.arange(4) % CONFIG["num_classes"]
    history = bf16.fit(images, labels, validation_data=(images, labels), epochs=2, batch_size=2, verbose=0)
    assert traced == [] and len(history.history["val_loss"]) == 2
