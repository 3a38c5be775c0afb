"""The fused layer norm behind `layers.LayerNormalization` at TensorFlow inference, and `portable_graph()`.

TensorFlow's graph runtime has no fused layer norm: Keras' formula runs as about seven full passes
over the activations (cast, two means, a squared difference, a scale, a shift, a cast back). Here the
norm is one small XLA-compiled function instead, which fuses those passes while the matmuls around
it stay on oneDNN. On the 2-core AMD EPYC with AVX-512 (2026-11-26), S/16 at 224 px, timed in
alternation with the unfused pass (`python -m benchmarks.fused_norm_ab`), the fused forward pass ran
1.086x in mixed bfloat16 and 1.015x in float32 at batch 32, 1.03-1.05x at batch 1. Small norms stay
unfused (`MIN_ELEMENTS_PER_EXAMPLE`), and so does every norm where TensorFlow runs more than
`MAX_TENSORFLOW_THREADS` threads. Training keeps Keras' op: the fused norm is measured for inference
only.

SavedModels must not carry XLA-compiled functions: TF Serving's `--xla_cpu_compilation_enabled` is off
by default, and its documentation says a model that needs XLA then fails on its first request (not
tried on our machines, which have no Docker). Graphs traced inside `portable_graph()` use Keras' op;
`keras_mixer.export.export_saved_model` and `MLPMixer.export` trace inside it. (The TFLite converter
inlines the compiled function into builtin ops, so TFLite exports need no such care.)
"""

import contextlib
import contextvars
import functools
import math
import os

import keras

_PORTABLE = contextvars.ContextVar("keras_mixer_portable_graph", default=False)

# Below this many elements per example the XLA call's fixed cost can outweigh the passes it saves:
# with every norm fused, the default Fashion model (16 x 128 per image) ran 0.85x at batch 1 and 1.04x
# at batch 32 (`benchmarks.fused_norm_ab --min-elements 0`), and `predict` traces without knowing the
# batch size. The 224-px /16 and /14 presets (S/16: 196 x 512) are above it.
MIN_ELEMENTS_PER_EXAMPLE = 65_536

# Above this many TensorFlow threads Keras' op wins: its element-wise kernels split each pass over all
# cores, and the compiled norm gains less than it costs. In alternation (`benchmarks.fused_norm_ab`,
# S/16 at batch 32) on a 16-core Intel Xeon with AMX (2026-11-27) the fused norm ran 0.97x in bfloat16
# (0.94x with oneDNN's weight cache) and 0.98x in float32, and lost most rounds; on 2 of the same
# cores (`taskset -c 0,1`) it ran 1.11x in bfloat16, in 6 of 6 rounds, as on the 2-core EPYC. Counts
# between 2 and 16 are unmeasured and keep Keras' op.
MAX_TENSORFLOW_THREADS = 2


@contextlib.contextmanager
def portable_graph():
    """Trace graphs that any TensorFlow runtime runs, TF Serving included: no XLA-compiled pieces.

    Neither the fused norm of inference nor the compiled GELU of training (`keras_mixer.fused_gelu`).

    Example:
    >>> import numpy as np
    >>> from keras_mixer.layers import LayerNormalization
    >>> with portable_graph():
    ...     tuple(LayerNormalization()(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    """
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def fused_inference_applies(norm, inputs, training):
    """Whether `norm` (a LayerNormalization) may run `fused_layer_norm` on `inputs` in this call.

    All must hold: inference (`training` falsy), the last axis only, at least `MIN_ELEMENTS_PER_EXAMPLE`
    elements per example (known when traced), `center` and `scale` on, no `rms_scaling`,
    `tensorflow_cpu_xla_allowed()`, and at most `MAX_TENSORFLOW_THREADS` (`tensorflow_threads()`).
    """
    axes = norm.axis if isinstance(norm.axis, (list, tuple)) else [norm.axis]
    rank = len(inputs.shape)
    per_example = math.prod(dim or 0 for dim in inputs.shape[1:])  # an unknown size counts as 0
    return (
        not training
        and [axis % rank for axis in axes] == [rank - 1]
        and per_example >= MIN_ELEMENTS_PER_EXAMPLE
        and norm.center
        and norm.scale
        and not norm.rms_scaling
        and tensorflow_cpu_xla_allowed()
        and tensorflow_threads() <= MAX_TENSORFLOW_THREADS
    )


def tensorflow_threads():
    """How many threads TensorFlow's ops split their work over: the intra-op setting, else this process's CPUs.

    Example:
    >>> tensorflow_threads() >= 1
    True
    """
    import tensorflow as tf  # noqa: PLC0415  (only reached on the TensorFlow backend)

    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tensorflow_cpu_xla_allowed():
    """Whether a small XLA-compiled piece (this norm, `fused_gelu`) may run in the graph being traced.

    The TensorFlow backend, no GPU visible to TensorFlow (the pieces are measured on CPUs only), and
    not inside `portable_graph()`.
    """
    return keras.backend.backend() == "tensorflow" and not _PORTABLE.get() and not _machine_has_gpu()


def fused_layer_norm(inputs, gamma, beta, epsilon, output_dtype):
    """Layer norm over the last axis, statistics and affine in float32, as one XLA-compiled call."""
    return _compiled_norm()(inputs, gamma, beta, float(epsilon), output_dtype)


@functools.cache
def _compiled_norm():
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    @tf.function(jit_compile=True, autograph=False)
    def norm(x, gamma, beta, epsilon, output_dtype):
        x = tf.cast(x, tf.float32)
        centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
        scale = tf.math.rsqrt(variance + epsilon) * tf.cast(gamma, tf.float32)
        return tf.cast(centered * scale + tf.cast(beta, tf.float32), output_dtype)

    return norm


@functools.cache
def _machine_has_gpu():
    import tensorflow as tf  # noqa: PLC0415

    return bool(tf.config.list_logical_devices("GPU"))
