"""The GELU compiled on TensorFlow: in training its forward and gradient, at inference on some CPUs its forward.

In a training step TensorFlow cannot fuse the GELU into the matmul before it (the backward pass needs
its input), so Keras' formula runs as separate element-wise ops: about seven passes over the hidden
activations forward and ten backward (`Tanh`, `TanhGrad`, `Pow`, `Mul`, ...), in bfloat16 arithmetic
under mixed precision. Here the forward and the gradient are each one small XLA-compiled function
(computed in float32, or float64 for float64 inputs; the forward also keeps the slope, in the input's dtype,
for the gradient to multiply), while the matmuls stay on
oneDNN. Measured with `python -m benchmarks.fused_gelu_ab` (train steps of the default run's
optimiser, timed in alternation with Keras' GELU); the figures and the CPU are in the README's
"Performance" section.

At inference TensorFlow's graph optimiser fuses Keras' GELU into the matmul before it, as a post-op of
oneDNN's matmul. On the 2-core AMD EPYC with AVX2 that post-op is slow: S/16's (6272 x 512) @ (512 x 2048)
ran at 0.72x the rate of the same matmul with its bias alone, and a separate compiled GELU pass after
that matmul brought it back to about 0.85x (a probe). So traced inference graphs run the compiled forward
too (`compiled_inference_applies`), for MLPs of at least `MIN_INFERENCE_ELEMENTS_PER_EXAMPLE` hidden
values per image, on CPUs without AVX-512 (`ONEDNN_GELU_KEPT_WITH`: on the Sapphire Rapids with AVX-512
and AMX it was slower) and at most `fused_norm.MAX_TENSORFLOW_THREADS` threads, as the XLA norm. Measured with
`python -m benchmarks.inference_gelu_ab` (README "Performance").

Both apply only on the TensorFlow backend, with no GPU visible (unmeasured there), and not inside
`portable_graph()`, which therefore gives Keras' GELU (the A/Bs' "before"); SavedModels are traced in it.
`keras_gelu_at_inference()` keeps Keras' GELU at inference only: the TFLite export traces in it, so the
converter still finds the GELU it maps to TFLite's own op.
"""

import contextlib
import contextvars
import functools
import math

from keras import ops

from keras_mixer import fused_norm  # its MAX_TENSORFLOW_THREADS is read at call time (the A/B raises it)
from keras_mixer.cpu import cpu_model_and_flags
from keras_mixer.fused_norm import _tracing_a_graph, in_compute_dtype, tensorflow_cpu_xla_allowed, tensorflow_threads

# Below this many hidden values per image the XLA call's fixed cost outweighs the slow post-op. In alternation
# on the 2-core AVX2 EPYC (`benchmarks.inference_gelu_ab`, float32, 10 rounds; README "Performance") the
# default Fashion model (16 tokens x 512 hidden) with every GELU compiled ran 0.81x at batch 1 and 1.22x at
# batch 32, and the size is per image because the batch size is not always known when a graph is traced.
# S/16's MLPs (196 x 2048 and 512 x 256) are above it: 1.05x at batch 1, 1.11x at batch 32.
MIN_INFERENCE_ELEMENTS_PER_EXAMPLE = 65_536

# CPUs with any of these flags keep oneDNN's fused GELU at inference. On the 2-core Intel Sapphire Rapids
# (AVX-512, AMX) the compiled forward ran S/16 at batch 32 at 0.92x oneDNN's fused GELU in float32 and 0.83x
# in bfloat16, 0 of 8 rounds faster each (`benchmarks.inference_gelu_ab`, 2026-12-07); the AVX-512 EPYC is
# unmeasured.
ONEDNN_GELU_KEPT_WITH = ("avx512f",)

_KERAS_AT_INFERENCE = contextvars.ContextVar("keras_mixer_keras_gelu_at_inference", default=False)


@contextlib.contextmanager
def keras_gelu_at_inference():
    """Trace inference graphs with Keras' GELU (which TensorFlow fuses into the matmul); training is unchanged.

    Example:
    >>> with keras_gelu_at_inference():
    ...     compiled_inference_applies(10**6)
    False
    """
    token = _KERAS_AT_INFERENCE.set(True)
    try:
        yield
    finally:
        _KERAS_AT_INFERENCE.reset(token)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715  # the tanh approximation's cubic coefficient (Hendrycks & Gimpel; the official code's)


def gelu(x, approximate=True, training=None, elements_per_example=None):
    """GELU of `x`: Keras' `ops.gelu`, or the compiled pair (same values) in training on a TensorFlow CPU and
    where `compiled_inference_applies(elements_per_example)` (`x`'s hidden values per image, if known).

    Example:
    >>> import numpy as np
    >>> [round(float(v), 4) for v in ops.convert_to_numpy(gelu(np.array([-1.0, 0.0, 2.0], "float32")))]
    [-0.1588, 0.0, 1.9546]
    """
    if training and tensorflow_cpu_xla_allowed():
        return _compiled_gelu(bool(approximate))(x)
    if not training and compiled_inference_applies(elements_per_example):
        return _compiled_gelu_value(bool(approximate))(x)
    return ops.gelu(x, approximate=approximate)


def compiled_inference_applies(elements_per_example):
    """Whether an inference GELU over `elements_per_example` hidden values per image runs compiled here.

    All must hold: at least `MIN_INFERENCE_ELEMENTS_PER_EXAMPLE` (None, unknown, is not); a graph being traced
    (never eager); `tensorflow_cpu_xla_allowed()`; at most `MAX_TENSORFLOW_THREADS` threads; a CPU without
    `ONEDNN_GELU_KEPT_WITH` flags; not inside `keras_gelu_at_inference()`.
    """
    return (
        elements_per_example is not None
        and elements_per_example >= MIN_INFERENCE_ELEMENTS_PER_EXAMPLE
        and not _KERAS_AT_INFERENCE.get()
        and tensorflow_cpu_xla_allowed()
        and _tracing_a_graph()
        and tensorflow_threads() <= fused_norm.MAX_TENSORFLOW_THREADS
        and not set(ONEDNN_GELU_KEPT_WITH) & _cpu_flags()
    )


@functools.cache
def _cpu_flags():
    return set(cpu_model_and_flags()[1])


def biased_gelu_applies(training):
    """Whether `MlpBlock` adds its first Dense's bias inside the compiled GELU (`biased_gelu`): in training,
    wherever the compiled GELU runs. Its matmul is then a plain `MatMul`, which TensorFlow's oneDNN ran as its
    matmul primitive, on the AMX tiles in bfloat16 on the Sapphire Rapids, where the matmul fused with its bias
    ran as an inner product without them; and the bias gradient is summed inside the compiled gradient, not by
    a separate `BiasAddGrad`. Measured with `python -m benchmarks.training_matmul_ab --change mlp` (README
    "Performance").

    Example:
    >>> biased_gelu_applies(training=False)
    False
    """
    return bool(training) and tensorflow_cpu_xla_allowed()


def biased_gelu(x, bias, approximate=True):
    """GELU of `x + bias` (`bias` along `x`'s last axis) as one compiled function, its gradient (for `x` and
    `bias`) as another: the same values as Keras' add and GELU, the arithmetic in float32 (float64 for float64
    inputs) and the value rounded once (the gradient from the slope the forward kept). TensorFlow only;
    `MlpBlock` calls it where `biased_gelu_applies(training)`.

    Example:
    >>> import numpy as np
    >>> x, bias = np.array([[-1.0, 0.0]], "float32"), np.array([0.0, 2.0], "float32")
    >>> [round(float(v), 4) for v in ops.convert_to_numpy(biased_gelu(x, bias))[0]]
    [-0.1588, 1.9546]
    """
    return _compiled_gelu(bool(approximate), with_bias=True)(x, bias)


def _value_and_slope(x, approximate):
    """GELU(x) and its derivative, for `x` in the compute dtype.

    The tanh form is Keras' formula, 0.5 * x * (1 + tanh(z)). In its negative tail 1 + tanh(z) cancels: the
    tiny values there lose relative, not absolute, precision (tested: float32 within 2e-6 of the float64
    reference, float64 within 1e-12). Written as x * sigmoid(2z), which does not cancel, the bfloat16 S/16 train
    step at batch 8 ran 0.97x as fast on the 2-core Sapphire Rapids (tanh faster in 6 of 8 rounds in
    alternation, a probe). The erf form is written 0.5 * erfc(-z), without the cancellation of 1 + erf(z).
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    if approximate:
        tanh = tf.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
        cdf = 0.5 + 0.5 * tanh
        slope = cdf + 0.5 * x * (1.0 - tanh * tanh) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x * x)
        return x * cdf, slope
    cdf = 0.5 * tf.math.erfc(x * (-1.0 / math.sqrt(2.0)))
    return x * cdf, cdf + x * tf.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))


@functools.cache
def _compiled_gelu_value(approximate):
    """The GELU's forward alone, one XLA-compiled function (inference)."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    @tf.function(jit_compile=True, autograph=False)
    def forward(x):
        return tf.cast(_value_and_slope(in_compute_dtype(x), approximate)[0], x.dtype)

    return forward


@functools.cache
def _compiled_gelu(approximate, with_bias=False):
    """The GELU as a `tf.custom_gradient` whose forward and gradient are XLA-compiled functions: of `x`, or
    (`with_bias`) of `x` and a bias added to it.

    The forward also writes the slope, in `x`'s dtype, and the gradient multiplies it by the upstream gradient
    (and sums that over the leading axes for the bias): the transcendental runs once a step, not again in the
    backward pass. It replaces the GELU's input among what the step keeps for the backward pass. In S/16's
    bfloat16 train step at batch 8 on the 2-core Sapphire Rapids this ran 1.03x a gradient that recomputed it
    (6 of 8 rounds in alternation, a probe).
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    def pre_activation(x, bias):
        x = in_compute_dtype(x)
        return x if bias is None else x + in_compute_dtype(bias)

    @tf.function(jit_compile=True, autograph=False)
    def forward(x, bias):
        value, slope = _value_and_slope(pre_activation(x, bias), approximate)
        return tf.cast(value, x.dtype), tf.cast(slope, x.dtype)

    @tf.function(jit_compile=True, autograph=False)
    def backward(slope, upstream, bias_dtype):
        gradient = in_compute_dtype(slope) * in_compute_dtype(upstream)
        if bias_dtype is None:
            return tf.cast(gradient, slope.dtype)
        leading_axes = list(range(len(slope.shape) - 1))
        return tf.cast(gradient, slope.dtype), tf.cast(tf.reduce_sum(gradient, axis=leading_axes), bias_dtype)

    if with_bias:

        @tf.custom_gradient
        def compiled_biased_gelu(x, bias):
            value, slope = forward(x, bias)
            return value, lambda upstream: backward(slope, upstream, bias.dtype)

        return compiled_biased_gelu

    @tf.custom_gradient
    def compiled_gelu(x):
        value, slope = forward(x, None)
        return value, lambda upstream: backward(slope, upstream, None)

    return compiled_gelu
