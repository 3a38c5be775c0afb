"""`fused_gelu`: the compiled GELU of training has the GELU's values and derivative (against float64 references
and finite differences), runs in training on TensorFlow, and nowhere else (inference, `portable_graph()`)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer
from keras_mixer.fused_gelu import gelu
from keras_mixer.fused_norm import portable_graph
from keras_mixer.layers import MlpBlock
from tests.reference_mixer import gelu_tanh
from tests.test_fused_norm import _xla_marked


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


def test_it_runs_in_training_only_and_not_inside_portable_graph():
    block = MlpBlock(mlp_dim=16)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 8)), tf.float32)
    block(x)

    def traced(training):
        return tf.function(lambda t: block(t, training=training)).get_concrete_function(x).graph.as_graph_def()

    assert _xla_marked(traced(True))
    assert not _xla_marked(traced(False))
    with portable_graph():
        assert not _xla_marked(traced(True))


@pytest.mark.parametrize("approximate", [True, False])
def test_a_training_step_has_the_gradients_of_keras_gelu(approximate):
    keras.utils.set_random_seed(3)
    model = MLPMixer(num_classes=4, image_size=16, patch_size=4, num_blocks=2, hidden_dim=16, tokens_mlp_dim=8,
                     channels_mlp_dim=32, gelu_approximate=approximate)  # fmt: skip
    rng = np.random.default_rng(4)
    images = tf.constant(rng.uniform(0, 255, (3, 16, 16, 3)), tf.float32)
    head = model.get_layer("head").kernel
    head.assign(rng.standard_normal(head.shape))  # the paper's zero head would pass no gradient back
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
