"""The GELU of training on TensorFlow: its forward and its gradient each as one XLA-compiled pass.

In a training step TensorFlow cannot fuse the GELU into the matmul before it (the backward pass needs
its input), so Keras' formula runs as separate element-wise ops: about seven passes over the hidden
activations forward and ten backward (`Tanh`, `TanhGrad`, `Pow`, `Mul`, ...), in bfloat16 arithmetic
under mixed precision. Here the forward and the gradient are each one small XLA-compiled function
(computed in float32, or float64 for float64 inputs, and rounded once), while the matmuls stay on
oneDNN. Measured with `python -m benchmarks.fused_gelu_ab` (train steps of the default run's
optimiser, timed in alternation with Keras' GELU); the figures and the CPU are in the README's
"Performance" section.

Inference keeps Keras' op: there oneDNN fuses the GELU into the matmul, which an XLA call would undo.
It applies only on the TensorFlow backend, with no GPU visible (unmeasured there), and not inside
`portable_graph()`, which therefore also gives Keras' GELU in training (the A/B's "before").
"""

import functools
import math

from keras import ops

from keras_mixer.fused_norm import tensorflow_cpu_xla_allowed

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715  # the tanh approximation's cubic coefficient (Hendrycks & Gimpel; the official code's)


def gelu(x, approximate=True, training=None):
    """GELU of `x`: Keras' `ops.gelu`, or in training on a TensorFlow CPU the compiled pair (same values).

    Example:
    >>> import numpy as np
    >>> [round(float(v), 4) for v in ops.convert_to_numpy(gelu(np.array([-1.0, 0.0, 2.0], "float32")))]
    [-0.1588, 0.0, 1.9546]
    """
    if not (training and tensorflow_cpu_xla_allowed()):
        return ops.gelu(x, approximate=approximate)
    return _compiled_gelu(bool(approximate))(x)


@functools.cache
def _compiled_gelu(approximate):
    """The GELU as a `tf.custom_gradient` whose forward and gradient are XLA-compiled functions."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    def in_compute_dtype(x):
        return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)

    # 0.5 * (1 + tanh(z)) is sigmoid(2z) and 0.5 * (1 + erf(z)) is 0.5 * erfc(-z): the same functions,
    # without the cancellation of 1 + (-1 + tiny) in the negative tail.
    if approximate:

        def value_and_slope(x):
            cdf = tf.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
            slope = cdf + 2.0 * x * cdf * (1.0 - cdf) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x * x)
            return x * cdf, slope

    else:

        def value_and_slope(x):
            cdf = 0.5 * tf.math.erfc(x * (-1.0 / math.sqrt(2.0)))
            return x * cdf, cdf + x * tf.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))

    @tf.function(jit_compile=True, autograph=False)
    def forward(x):
        value, _ = value_and_slope(in_compute_dtype(x))
        return tf.cast(value, x.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def backward(x, upstream):
        _, slope = value_and_slope(in_compute_dtype(x))
        return tf.cast(slope * in_compute_dtype(upstream), x.dtype)

    @tf.custom_gradient
    def compiled_gelu(x):
        return forward(x), lambda upstream: backward(x, upstream)

    return compiled_gelu
