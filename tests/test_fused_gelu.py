"""`fused_gelu`: the compiled GELU has the GELU's values and derivative (against float64 references and finite
differences); it runs in training on TensorFlow, and at traced inference only for large MLPs on CPUs the rule
admits, never in `portable_graph()`, SavedModels or TFLite files; a model using it gives the official logits."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer, fused_gelu, fused_norm, load_official_weights
from keras_mixer.export import export_tflite, write_saved_model
from keras_mixer.fused_gelu import (
    MIN_INFERENCE_ELEMENTS_PER_EXAMPLE,
    biased_gelu,
    biased_gelu_applies,
    gelu,
    keras_gelu_at_inference,
)
from keras_mixer.fused_norm import portable_graph
from keras_mixer.layers import MlpBlock
from keras_mixer.lite import TFLiteClassifier
from tests.model_checks import random_images
from tests.reference_mixer import gelu_tanh, official_logits, random_official_checkpoint
from tests.test_fused_norm import _any_batch, _saved_model_xla_marked, _xla_marked

# 256 tokens x a 256-wide channel MLP: 65,536 hidden values per image, the inference threshold; the token MLP
# (16 channels x 8) stays below it.
GELU_SIZED = dict(num_classes=3, image_size=64, patch_size=4, num_channels=1, num_blocks=2, hidden_dim=16,
                  tokens_mlp_dim=8, channels_mlp_dim=256)  # fmt: skip


@pytest.fixture
def cpu_rule_admits(monkeypatch):
    """The inference rule's CPU and thread conditions met on any machine (this one's flags may exclude it)."""
    monkeypatch.setattr(fused_gelu, "ONEDNN_GELU_KEPT_WITH", ())
    monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)


def _gelu_erf(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


REFERENCES = {True: gelu_tanh, False: _gelu_erf}
POINTS = np.concatenate([np.linspace(-6, 6, 241), [-30.0, -9.5, 9.5, 30.0]])  # the tails saturate: 0 and x


def _value_and_gradient(x, approximate, training=True):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gelu(x, approximate=approximate, training=training)
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.mark.parametrize("approximate", [True, False])
def test_float64_values_and_slopes_are_the_references_and_their_finite_differences(approximate):
    reference = REFERENCES[approximate]
    step = 1e-5
    slope = (reference(POINTS + step) - reference(POINTS - step)) / (2 * step)  # independent of any formula here
    value, gradient = _value_and_gradient(POINTS, approximate)
    assert value.dtype == gradient.dtype == np.float64
    np.testing.assert_allclose(value, reference(POINTS), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gradient, slope, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 2e-6), ("bfloat16", 1e-2)])
def test_lower_precisions_round_the_float64_result_once(approximate, dtype, tolerance):
    x = tf.cast(tf.constant(POINTS), dtype)
    exact = tf.cast(x, tf.float64).numpy()
    reference = REFERENCES[approximate]
    step = 1e-5
    slope = (reference(exact + step) - reference(exact - step)) / (2 * step)
    value, gradient = _value_and_gradient(x, approximate)
    assert value.dtype == gradient.dtype == x.dtype.as_numpy_dtype
    scale = np.maximum(1.0, np.abs(reference(exact)))
    assert np.max(np.abs(value.astype("float64") - reference(exact)) / scale) <= tolerance
    assert np.max(np.abs(gradient.astype("float64") - slope)) <= 2 * tolerance


@pytest.mark.parametrize("approximate", [True, False])
def test_the_biased_form_is_the_gelu_of_the_sum_and_gives_both_gradients(approximate):
    rng = np.random.default_rng(5)
    x, bias, upstream = 3 * rng.standard_normal((2, 7, 4)), rng.standard_normal(4), rng.standard_normal((2, 7, 4))
    reference = REFERENCES[approximate]
    step = 1e-5
    slope = (reference(x + bias + step) - reference(x + bias - step)) / (2 * step)
    inputs = [tf.constant(x), tf.constant(bias)]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = biased_gelu(*inputs, approximate=approximate)
    x_gradient, bias_gradient = tape.gradient(y, inputs, output_gradients=tf.constant(upstream))
    np.testing.assert_allclose(y.numpy(), reference(x + bias), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x_gradient.numpy(), slope * upstream, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(bias_gradient.numpy(), (slope * upstream).sum(axis=(0, 1)), rtol=1e-7, atol=1e-7)


def _traced(block, x, training):
    return tf.function(lambda t: block(t, training=training)).get_concrete_function(x).graph.as_graph_def()


def test_small_mlps_run_it_in_training_only_and_not_inside_portable_graph(cpu_rule_admits):
    block = MlpBlock(mlp_dim=16)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 8)), tf.float32)
    block(x)
    assert _xla_marked(_traced(block, x, True))
    assert not _xla_marked(_traced(block, x, False))
    assert biased_gelu_applies(training=True) and not biased_gelu_applies(training=False)
    with portable_graph():
        assert not _xla_marked(_traced(block, x, True))
        assert not biased_gelu_applies(training=True)


def test_large_mlps_run_it_at_traced_inference_where_the_rule_admits(cpu_rule_admits, monkeypatch):
    block = MlpBlock(mlp_dim=256)
    rng = np.random.default_rng(1)
    at_threshold = tf.constant(rng.standard_normal((2, MIN_INFERENCE_ELEMENTS_PER_EXAMPLE // 256, 8)), tf.float32)
    just_below = at_threshold[:, 1:]
    block(at_threshold)
    assert _xla_marked(_traced(block, at_threshold, False))
    assert not _xla_marked(_traced(block, just_below, False))
    for context in (portable_graph, keras_gelu_at_inference):
        with context():
            assert not _xla_marked(_traced(block, at_threshold, False))
    compiled = tf.function(lambda t: block(t, training=False))(at_threshold).numpy()
    with keras_gelu_at_inference():
        keras_op = tf.function(lambda t: block(t, training=False))(at_threshold).numpy()
    np.testing.assert_allclose(compiled, keras_op, rtol=1e-5, atol=1e-5 * np.abs(keras_op).max())
    monkeypatch.setattr(fused_gelu, "_cpu_flags", lambda: {"avx2", "avx512f"})
    monkeypatch.setattr(fused_gelu, "ONEDNN_GELU_KEPT_WITH", ("avx512f",))
    assert not _xla_marked(_traced(block, at_threshold, False))  # oneDNN's GELU is kept on such a CPU


def test_a_model_running_it_gives_the_official_logits_and_exports_keep_keras_gelu(cpu_rule_admits, tmp_path):
    params = random_official_checkpoint(np.random.default_rng(8), patch=4, channels=1, hidden=16, tokens=256,
                                        tokens_mlp=8, channels_mlp=256, blocks=2, classes=3)  # fmt: skip
    np.savez(tmp_path / "checkpoint.npz", **params)
    model = MLPMixer(**GELU_SIZED)
    load_official_weights(model, tmp_path / "checkpoint.npz")
    images = random_images(3, size=64, channels=1, seed=9)
    expected = official_logits(params, images)
    assert np.abs(expected).max() > 0.5  # not a degenerate comparison of near-zeros
    forward = tf.function(lambda t: model(t, training=False), input_signature=_any_batch(images))
    assert len(_xla_marked(forward.get_concrete_function().graph.as_graph_def())) >= 2  # one per block
    for logits in (forward(tf.constant(images)).numpy(), model.predict(images, verbose=0)):
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    write_saved_model(model, str(tmp_path / "served"), ["a", "b", "c"], top_k=2)
    assert _saved_model_xla_marked(str(tmp_path / "served")) == []
    export_tflite(model, str(tmp_path / "model.tflite"))
    ops = [op["op_name"] for op in TFLiteClassifier(tmp_path / "model.tflite").interpreter._get_ops_details()]
    assert ops.count("GELU") == 4 and "LOGISTIC" not in ops, ops  # TFLite's own GELU, both MLPs of both blocks


@pytest.mark.parametrize("approximate", [True, False])
def test_a_training_step_has_the_gradients_of_keras_dense_and_gelu(approximate):
    keras.utils.set_random_seed(3)
    model = MLPMixer(num_classes=4, image_size=16, patch_size=4, num_blocks=2, hidden_dim=16, tokens_mlp_dim=8,
                     channels_mlp_dim=32, gelu_approximate=approximate)  # fmt: skip
    rng = np.random.default_rng(4)
    images = tf.constant(rng.uniform(0, 255, (3, 16, 16, 3)), tf.float32)
    head = model.get_layer("head").kernel
    head.assign(rng.standard_normal(head.shape))  # the paper's zero head would pass no gradient back
    for bias in (variable for variable in model.weights if variable.path.endswith("bias")):
        bias.assign(rng.standard_normal(bias.shape))  # zero biases would hide a bias left out of the GELU
    weights = tf.constant(rng.standard_normal((3, 4)), tf.float32)

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True) * weights)
        return tape.gradient(loss, model.trainable_variables)

    compiled = [g.numpy() for g in gradients()]
    with portable_graph():  # a new trace of a new function, with Keras' GELU
        keras_gelu = [g.numpy() for g in tf.function(gradients.python_function)()]
    assert len(compiled) == len(keras_gelu) == len(model.trainable_variables)
    scale = max(np.abs(g).max() for g in keras_gelu)
    assert scale > 0
    # Some gradients are zero in exact arithmetic (token mixing's output bias, which the next norm
    # removes) and float noise here: the tolerance is scaled to the largest gradient of the model.
    for ours, theirs, variable in zip(compiled, keras_gelu, model.trainable_variables):
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=1e-5 * scale, err_msg=variable.path)
