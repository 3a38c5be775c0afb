"""`layers.LayerNormalization` and `fused_norm`: the fused paths compute the paper's layer norm, run where they should
(TensorFlow inference in traced graphs: oneDNN's norm where TensorFlow's oneDNN runs it, else the XLA norm) and
nowhere else (training, eager calls, XLA in exports, other axes)."""

import contextlib
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from benchmarks.op_breakdown import XLA_OP_TYPE, op_breakdown, profile_by_op_type
from keras_mixer import MLPMixer, fused_norm
from keras_mixer.checkpoints import load_official_weights
from keras_mixer.export import export_tflite, write_saved_model
from keras_mixer.fused_norm import (
    MIN_ELEMENTS_PER_EXAMPLE,
    fused_inference_applies,
    keras_layer_norm,
    onednn_enabled,
    onednn_inference_applies,
    onednn_training_applies,
    portable_graph,
    without_onednn_norm,
)
from keras_mixer.layers import LayerNormalization, MixerBlock
from keras_mixer.lite import TFLiteClassifier
from keras_mixer.predict_trace import any_batch_size_spec
from tests.model_checks import random_images, run_layer_checks
from tests.reference_mixer import layer_norm, official_logits, random_official_checkpoint

# Small but with norms of MIN_ELEMENTS_PER_EXAMPLE (256 tokens x 256 channels), so the fused path runs.
FUSED_SIZED = dict(num_classes=3, image_size=64, patch_size=4, num_channels=1, num_blocks=1, hidden_dim=256,
                   tokens_mlp_dim=8, channels_mlp_dim=16)  # fmt: skip
BIG = (2, 256, 256)  # 65,536 elements per example


@pytest.fixture(autouse=True)
def any_thread_count(monkeypatch):
    """The fused path on any machine: the package fuses only where TensorFlow runs few threads."""
    monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)


def _norm_with_random_affine(shape, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    norm = LayerNormalization(epsilon=1e-6, **kwargs)
    norm.build(shape)
    norm.gamma.assign(1 + 0.3 * rng.standard_normal(norm.gamma.shape))
    norm.beta.assign(0.3 * rng.standard_normal(norm.beta.shape))
    return norm


def _xla_marked(graph_def):
    """Names of the functions and call nodes marked for XLA compilation in a GraphDef."""
    marked = [node.name for node in graph_def.node if node.attr["_XlaMustCompile"].b]
    for function in graph_def.library.function:
        if function.attr["_XlaMustCompile"].b:
            marked.append(function.signature.name)
        marked += [node.name for node in function.node_def if node.attr["_XlaMustCompile"].b]
    return marked


def _fused_form(graph_def):
    """ "xla", "onednn" (the ops TensorFlow rewrites into `_MklLayerNorm`) or None (Keras' op) in a traced norm."""
    if _xla_marked(graph_def):
        return "xla"
    return "onednn" if "FusedBatchNormV3" in {node.op for node in graph_def.node} else None


def _any_batch(x):
    """The signature of `x` with the batch size unknown: how `predict` and SavedModel signatures trace."""
    return [any_batch_size_spec(tf.convert_to_tensor(x))]


def _executed_op_types(function, *args):
    return {row["op"] for row in profile_by_op_type(lambda: function(*args))}


needs_onednn = pytest.mark.skipif(not onednn_enabled(), reason="this TensorFlow has no oneDNN")


def _onednn_norms_in(compute_dtype):
    """Whether oneDNN's norm runs for inputs of `compute_dtype` in this process (bfloat16 needs AVX-512F)."""
    return onednn_enabled() and (compute_dtype == "float32" or fused_norm._onednn_takes_bfloat16())


def _traced(norm, x, training):
    return tf.function(lambda t: norm(t, training=training)).get_concrete_function(tf.constant(x)).graph.as_graph_def()


@pytest.mark.parametrize("shape", [BIG, (1, MIN_ELEMENTS_PER_EXAMPLE), (2, 7, 6)])
def test_inference_is_the_float64_layer_norm_fused_or_not(shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 3 + 2).astype("float32")
    norm = _norm_with_random_affine(shape)
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))
    expected = layer_norm(x.astype("float64"), gamma, beta)
    fused = math.prod(shape[1:]) >= MIN_ELEMENTS_PER_EXAMPLE
    form = "onednn" if _onednn_norms_in("float32") else "xla"
    assert _fused_form(_traced(norm, x, training=False)) == (form if fused else None)
    with without_onednn_norm():
        assert _fused_form(_traced(norm, x, training=False)) == ("xla" if fused else None)
        xla = tf.function(lambda t: norm(t, training=False))(tf.constant(x)).numpy()
    eager = keras.ops.convert_to_numpy(norm(x, training=False))
    graph = tf.function(lambda t: norm(t, training=False))(tf.constant(x)).numpy()
    for out in (eager, graph, xla):
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with portable_graph():
        portable = tf.function(lambda t: norm(t, training=False))(tf.constant(x)).numpy()
    np.testing.assert_allclose(portable, expected, rtol=1e-5, atol=1e-5)
    run_layer_checks(norm, x, tolerance=1e-5)


def test_bfloat16_inputs_are_normalised_in_float32():
    x = np.random.default_rng(2).standard_normal(BIG).astype("float32") * 50 + 1000  # large offset
    norm = _norm_with_random_affine(x.shape)
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))
    x16 = tf.cast(tf.constant(x), tf.bfloat16)
    with without_onednn_norm():  # the XLA norm
        assert _xla_marked(_traced(norm, x16, training=False))
        xla = tf.function(lambda t: norm(t, training=False))(x16).numpy()
    eager = keras.ops.convert_to_numpy(norm(x16, training=False))  # the layer autocasts to its float32
    expected = layer_norm(tf.cast(x16, tf.float64).numpy(), gamma, beta)
    for out in (xla, eager):
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_a_norm_asked_for_bfloat16_rounds_its_own_result_once_on_every_path():
    x = tf.cast(np.random.default_rng(4).standard_normal(BIG).astype("float32") * 3 + 2, tf.bfloat16)
    norm = _norm_with_random_affine(BIG)
    paths = {"keras": contextlib.nullcontext, "xla": without_onednn_norm}
    if _onednn_norms_in("bfloat16"):
        paths["onednn"] = contextlib.nullcontext
    for path, context in paths.items():
        signature = _any_batch(x) if path == "onednn" else None  # Keras' op: eager
        with context():
            default = tf.function(lambda t: norm(t, training=False), input_signature=signature)
            asked = tf.function(lambda t: norm(t, training=False, output_dtype="bfloat16"), input_signature=signature)
            outputs = (default(x), asked(x)) if path != "keras" else (norm(x), norm(x, output_dtype="bfloat16"))
        assert outputs[0].dtype == tf.float32 and outputs[1].dtype == tf.bfloat16, path
        # The same values, rounded once: what the MLP after it got before, from its own cast.
        np.testing.assert_array_equal(tf.cast(outputs[0], tf.bfloat16).numpy(), outputs[1].numpy(), err_msg=path)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_mixer_blocks_token_mixing_transposes_the_mlps_dtype(policy):
    keras.config.set_dtype_policy(policy)
    block = MixerBlock(tokens_mlp_dim=8, channels_mlp_dim=16)
    x = tf.zeros((2, 256, 256), block.compute_dtype)
    block(x)
    graph = tf.function(lambda t: block(t, training=False)).get_concrete_function(*_any_batch(x)).graph
    transposed = [op.get_attr("T") for op in graph.get_operations() if op.type == "Transpose"]
    assert transposed == [tf.as_dtype(block.token_mixing.compute_dtype)] * 2  # not the norm's float32


def _textbook_norm_and_gradients(x, gamma, beta, upstream):
    """The float64 layer norm over the last axis of the paper's formula, and the gradients of
    sum(norm * upstream) for x, gamma and beta by autodiff of that formula."""
    x, gamma, beta, upstream = (tf.constant(np.asarray(v, np.float64)) for v in (x, gamma, beta, upstream))
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) / tf.sqrt(variance + 1e-6) * gamma + beta
        loss = tf.reduce_sum(y * upstream)
    return [y.numpy(), *(gradient.numpy() for gradient in tape.gradient(loss, [x, gamma, beta]))]


@pytest.fixture
def onednn_takes_bfloat16(monkeypatch):
    """The training rule's CPU conditions hold on any machine (without oneDNN the same ops run unfused)."""
    monkeypatch.setattr(fused_norm, "_onednn_takes_bfloat16", lambda: True)
    monkeypatch.setattr(fused_norm, "onednn_enabled", lambda: True)


def _norm_and_gradients_in_training(norm, x, upstream, output_dtype):
    """A traced function of (x, upstream): [norm(x), and the gradients of sum(norm(x) * upstream) for x, gamma
    and beta], and the norm's form in its graph."""

    def norm_and_gradients(t, dy):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = norm(t, training=True, output_dtype=output_dtype)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.cast(dy, tf.float64))
        return [y, *tape.gradient(loss, [t, norm.gamma.value, norm.beta.value])]

    traced = tf.function(norm_and_gradients)
    return traced, _fused_form(traced.get_concrete_function(x, upstream).graph.as_graph_def())


@pytest.mark.parametrize("form", ["xla", "onednn", None])
def test_bfloat16_training_forms_have_the_textbook_gradients(onednn_takes_bfloat16, monkeypatch, form):
    rng = np.random.default_rng(6)
    x = tf.cast(rng.standard_normal(BIG) * 3 + 2, tf.bfloat16)
    upstream = tf.cast(rng.standard_normal(BIG), tf.bfloat16)
    norm = _norm_with_random_affine(BIG)
    gamma, beta = (keras.ops.convert_to_numpy(v) for v in (norm.gamma, norm.beta))
    expected = _textbook_norm_and_gradients(tf.cast(x, tf.float64), gamma, beta, tf.cast(upstream, tf.float64))
    if form == "onednn":  # where TensorFlow runs more threads than the compiled norm's limit
        monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", 0)
    with keras_layer_norm() if form is None else contextlib.nullcontext():
        traced, traced_form = _norm_and_gradients_in_training(norm, x, upstream, "bfloat16")
    assert traced_form == form
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta"), traced(x, upstream), expected):
        # bfloat16 activations (8 significant bits); the parameters' gradients sum 512 rows of them
        scale = np.abs(want).max()
        np.testing.assert_allclose(tf.cast(got, tf.float64).numpy(), want, atol=2**-6 * scale, err_msg=name)
    assert not onednn_training_applies(norm, tf.cast(x, tf.float32), training=True)  # float32 keeps Keras' op
    assert not onednn_training_applies(norm, x, training=False)  # inference has its own rule


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 2e-5)])
def test_the_compiled_training_norm_has_the_textbook_gradients_and_keeps_the_output_dtype(dtype, tolerance):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.standard_normal(BIG) * 3 + 2, dtype)
    upstream = tf.constant(rng.standard_normal(BIG), dtype)
    norm = _norm_with_random_affine(BIG, dtype=dtype)
    gamma, beta = (keras.ops.convert_to_numpy(v) for v in (norm.gamma, norm.beta))
    expected = _textbook_norm_and_gradients(x, gamma, beta, upstream)
    traced, form = _norm_and_gradients_in_training(norm, x, upstream, dtype)
    assert form == "xla"
    for name, got, want in zip(("y", "dx", "dgamma", "dbeta"), traced(x, upstream), expected):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got.numpy(), want, atol=tolerance * np.abs(want).max(), err_msg=name)
    # Asked for another dtype (the pre-head norm under mixed precision: bfloat16 in, float32 out), it rounds once.
    y = _norm_and_gradients_in_training(norm, x, upstream, "bfloat16")[0](x, upstream)[0]
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float64).numpy(), expected[0], rtol=2**-8, atol=1e-6)


def test_training_exports_and_other_settings_use_keras_op():
    big = np.random.default_rng(3).standard_normal(BIG).astype("float32")
    norm = _norm_with_random_affine(big.shape)
    assert _fused_form(_traced(norm, big, training=True)) == "xla"  # the compiled training norm
    with portable_graph():  # a known batch size: Keras' op (oneDNN's norm with an unknown one)
        assert _fused_form(_traced(norm, big, training=False)) is None
        assert _fused_form(_traced(norm, big, training=True)) is None
    assert _fused_form(_traced(norm, big, training=False)) is not None  # the context was left
    for kwargs in ({"axis": 1}, {"axis": [1, 2]}, {"center": False}, {"scale": False}):
        other = LayerNormalization(**kwargs)
        assert not fused_inference_applies(other, big, training=False), kwargs
    assert fused_inference_applies(LayerNormalization(axis=2), big, training=False)  # axis 2 is the last
    unknown = tf.TensorSpec((None, None, 256))  # sizes unknown when traced: too small to count on
    assert not fused_inference_applies(norm, unknown, training=False)


@needs_onednn
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_an_unknown_batch_size_runs_onednns_layer_norm(dtype):
    if dtype == "bfloat16" and not fused_norm._onednn_takes_bfloat16():
        pytest.skip("TensorFlow's oneDNN runs no bfloat16 ops on this CPU (it needs AVX-512F or AVX-NE-CONVERT)")
    x = tf.cast(np.random.default_rng(8).standard_normal(BIG).astype("float32") * 3 + 2, dtype)
    norm = _norm_with_random_affine(BIG)
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))
    expected = layer_norm(tf.cast(x, tf.float64).numpy(), gamma, beta)
    for portable in (False, True):  # no XLA in it: exports keep it
        with portable_graph() if portable else contextlib.nullcontext():
            forward = tf.function(lambda t: norm(t, training=False), input_signature=_any_batch(x))
            graph_def = forward.get_concrete_function().graph.as_graph_def()
        assert not _xla_marked(graph_def)
        assert "FusedBatchNormV3" in {node.op for node in graph_def.node}
        ops = _executed_op_types(forward, x)
        assert "_MklLayerNorm" in ops and "SquaredDifference" not in ops, ops  # TensorFlow fused it
        out = forward(x).numpy()
        assert out.dtype == np.float32
        if dtype == "float32":
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        else:  # computed in bfloat16 with statistics in float32: within one bfloat16 step of the float64 norm
            np.testing.assert_allclose(out, expected, rtol=2**-7, atol=2**-7)
    assert np.abs(expected).max() > 2  # values where a bfloat16 step is larger than the tolerance's floor


def test_the_onednn_norm_keeps_a_small_epsilon_and_runs_only_in_traced_inference():
    # Rows of tiny variance: epsilon 1e-6 (the Mixer's) against the 1.001e-5 that tf.nn.fused_batch_norm imposes.
    shape = (2, 256, 256)
    x = (np.random.default_rng(9).standard_normal(shape) * 1e-3).astype("float32")
    norm = _norm_with_random_affine(shape)
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))
    forward = tf.function(lambda t: norm(t, training=False), input_signature=_any_batch(x))
    expected = layer_norm(x.astype("float64"), gamma, beta)
    np.testing.assert_allclose(forward(tf.constant(x)).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not onednn_inference_applies(norm, tf.constant(x), training=False)  # eager: the batch size is known

    def applies_when_traced(signature, training=False):
        seen = []
        tf.function(lambda t: seen.append(onednn_inference_applies(norm, t, training)) or t).get_concrete_function(
            signature
        )
        return seen[0]

    assert applies_when_traced(tf.TensorSpec((None, 256, 256)))
    assert not applies_when_traced(tf.TensorSpec((None, 256, 256)), training=True)
    assert applies_when_traced(tf.TensorSpec((2, 256, 256)))  # a known batch size too
    with portable_graph():
        assert applies_when_traced(tf.TensorSpec((None, 256, 256)))
        assert not applies_when_traced(tf.TensorSpec((2, 256, 256)))  # known-batch portable graphs: Keras' op
    with without_onednn_norm():
        assert not applies_when_traced(tf.TensorSpec((None, 256, 256)))
    assert not applies_when_traced(tf.TensorSpec((None, 256, 256), tf.float16))
    assert not applies_when_traced(tf.TensorSpec((None, 2, 128, 256)))  # 4-D: TensorFlow's rewrite takes 2-D, 3-D


def test_training_gradients_are_the_float64_layer_norms():
    x = np.random.default_rng(3).standard_normal((2, 5, 4)).astype("float32")
    norm = _norm_with_random_affine(x.shape)
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        loss = tf.reduce_sum(norm(x_tensor, training=True) * tf.range(4, dtype=tf.float32))
    gradient = tape.gradient(loss, x_tensor).numpy()
    # Reference: central differences of the float64 formula.
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))

    def f(z):
        return (layer_norm(z, gamma, beta) * np.arange(4)).sum()

    numeric = np.zeros_like(x, dtype="float64")
    for index in np.ndindex(x.shape):
        step = np.zeros_like(numeric)
        step[index] = 1e-5
        numeric[index] = (f(x + step) - f(x - step)) / 2e-5
    np.testing.assert_allclose(gradient, numeric, rtol=1e-3, atol=1e-3)


def test_a_known_batch_size_runs_onednns_norm_and_more_threads_than_the_limit_keep_xla_out(monkeypatch, tmp_path):
    norm = _norm_with_random_affine(BIG)
    x = np.random.default_rng(4).standard_normal(BIG).astype("float32") * 3 + 2
    gamma, beta = (keras.ops.convert_to_numpy(v).astype("float64") for v in (norm.gamma, norm.beta))
    expected = layer_norm(x.astype("float64"), gamma, beta)
    assert not onednn_inference_applies(norm, tf.constant(x), training=False)  # eager: Keras' op
    forward = tf.function(lambda t: norm(t, training=False))  # the batch size known when traced
    if onednn_enabled():
        ops = _executed_op_types(forward, tf.constant(x))
        assert "_MklLayerNorm" in ops and "SquaredDifference" not in ops, ops  # oneDNN's norm, not Keras' op
    np.testing.assert_allclose(forward(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    with portable_graph():  # the known-batch graphs of exports keep Keras' op
        portable = tf.function(lambda t: norm(t, training=False))
        assert _fused_form(_traced(norm, x, training=False)) is None
    for batch in (
        tf.constant(x),
        _any_batch(x)[0],
    ):  # benchmarks' *_unfused_norm rows: Keras' op, batch size known or not
        with keras_layer_norm():
            graph = tf.function(lambda t: norm(t, training=False)).get_concrete_function(batch).graph
        assert _fused_form(graph.as_graph_def()) is None
    np.testing.assert_allclose(portable(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Where oneDNN's norm cannot run, the XLA norm only up to the thread limit, then Keras' op.
    with without_onednn_norm():
        assert _xla_marked(_traced(norm, x, training=False))  # the fixture's limit
        monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", fused_norm.tensorflow_threads() - 1)
        assert not fused_inference_applies(norm, x, training=False)
        assert _fused_form(_traced(norm, x, training=False)) is None
    # TFLite traces its batch-1 signature outside portable_graph(): the converter must still take the form.
    model = MLPMixer(**FUSED_SIZED)
    rng = np.random.default_rng(12)  # random weights everywhere: the head starts at zero (uniform output)
    model.set_weights([rng.normal(1.0 if "gamma" in w.path else 0.0, 0.2, w.shape) for w in model.weights])
    images = random_images(2, size=64, channels=1, seed=11)
    tflite_probabilities = TFLiteClassifier(export_tflite(model, str(tmp_path / "model.tflite"))).predict(images)
    keras_probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model(images, training=False)))
    assert np.ptp(keras_probabilities) > 0.1  # not the uniform output of a zero head
    np.testing.assert_allclose(tflite_probabilities, keras_probabilities, atol=1e-4)


def test_tensorflow_threads_follow_the_intra_op_setting(monkeypatch):
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 3)
    assert fused_norm.tensorflow_threads() == 3


def test_the_op_breakdown_counts_each_fused_norm_as_one_call():
    model = MLPMixer(**FUSED_SIZED)
    images = np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    with without_onednn_norm():
        ops = {row["op"]: row for row in op_breakdown(model, images)}
    assert ops[XLA_OP_TYPE]["count"] == 3 and "SquaredDifference" not in ops, ops.keys()  # 2 in the block + pre-head
    if onednn_enabled():  # oneDNN's norm, no XLA, with the batch size known or not (as SavedModels trace it)
        for unknown_batch in (False, True):
            ops = {row["op"]: row for row in op_breakdown(model, images, unknown_batch=unknown_batch)}
            assert ops["_MklLayerNorm"]["count"] == 3 and XLA_OP_TYPE not in ops, ops.keys()
        # predict traces its step with the batch size unknown (keras_mixer.predict_trace): oneDNN's norm too
        ops = _executed_op_types(lambda: model.predict(images, verbose=0))
        assert "_MklLayerNorm" in ops and XLA_OP_TYPE not in ops, ops


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_a_fused_model_gives_the_float64_reference_logits(tmp_path, policy):
    # Sized so every norm runs fused: the logits must still be the official model's.
    params = random_official_checkpoint(np.random.default_rng(6), patch=4, channels=1, hidden=256, tokens=256,
                                        tokens_mlp=8, channels_mlp=16, blocks=2, classes=3)  # fmt: skip
    np.savez(tmp_path / "checkpoint.npz", **params)
    keras.config.set_dtype_policy(policy)  # conftest restores float32
    model = MLPMixer(**{**FUSED_SIZED, "num_blocks": 2})
    load_official_weights(model, tmp_path / "checkpoint.npz")
    images = tf.constant(random_images(3, size=64, channels=1, seed=7))
    expected = official_logits(params, images.numpy())
    tolerance = 1e-4 if policy == "float32" else 3e-2  # bfloat16 keeps 8 bits of mantissa
    xla = tf.function(lambda t: model(t, training=False))
    with without_onednn_norm():
        graph = xla.get_concrete_function(images).graph
    compiled = [op for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr]
    assert sum(bool(op.get_attr("_XlaMustCompile")) for op in compiled) == 5  # two norms per block, one pre-head
    with portable_graph():
        portable = tf.function(lambda t: model(t, training=False))(images).numpy()
    forward = tf.function(lambda t: model(t, training=False))
    any_batch = tf.function(lambda t: model(t, training=False), input_signature=_any_batch(images))
    if _onednn_norms_in(keras.config.dtype_policy().compute_dtype):
        for function in (forward, any_batch):  # oneDNN's norm, all five, with the batch size known or not
            assert "_MklLayerNorm" in _executed_op_types(function, images)
    for logits in (xla(images).numpy(), forward(images).numpy(), portable, any_batch(images).numpy()):
        np.testing.assert_allclose(logits, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())
    assert np.abs(expected).max() > 0.5  # not a degenerate comparison of near-zeros


def _saved_model_xla_marked(folder):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as file:
        proto.ParseFromString(file.read())
    return [name for graph in proto.meta_graphs for name in _xla_marked(graph.graph_def)]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_saved_models_carry_no_xla_compiled_function(tmp_path, precision):
    # TF Serving refuses XLA-compiled functions unless started with --xla_cpu_compilation_enabled.
    model = MLPMixer(**FUSED_SIZED)
    images = np.random.default_rng(4).uniform(0, 255, (2, 64, 64, 1)).astype("float32")
    model.predict(images, verbose=0)  # runs the model in Keras first: the exports must not reuse its traces
    write_saved_model(model, str(tmp_path / "ours"), ["a", "b", "c"], top_k=2, precision=precision)
    assert _saved_model_xla_marked(str(tmp_path / "ours")) == []
    if _onednn_norms_in(precision):  # its signature's batch size is unknown: oneDNN's norm, no XLA
        serving = tf.saved_model.load(str(tmp_path / "ours")).signatures["serving_default"]
        assert "_MklLayerNorm" in _executed_op_types(lambda: serving(images=tf.constant(images)))
    if precision == "float32":
        model.export(str(tmp_path / "keras_export"), verbose=False)
        assert _saved_model_xla_marked(str(tmp_path / "keras_export")) == []
        with without_onednn_norm():  # where oneDNN's norm cannot run, a direct trace takes the XLA norm
            unguarded = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.constant(images))
        assert _xla_marked(unguarded.graph.as_graph_def()), "a direct trace should have used the fused path"


def test_a_keras_file_written_before_the_fused_norm_loads_and_predicts_the_same():
    # Written by keras-mixer 07abe31 (Keras' own LayerNormalization before the pre-head): a `.keras` file
    # keeps a functional model's layers under their class names, which this one must still match.
    folder = os.path.join(os.path.dirname(__file__), "data")
    model = keras.saving.load_model(os.path.join(folder, "mixer_before_fused_norm.keras"))
    saved = np.load(os.path.join(folder, "mixer_before_fused_norm.npz"))
    assert isinstance(model.get_layer("pre_head_layer_norm"), LayerNormalization)
    np.testing.assert_allclose(model.predict(saved["images"], verbose=0), saved["outputs"], rtol=1e-5, atol=1e-5)
    assert model.class_names == ["a", "b", "c"]
