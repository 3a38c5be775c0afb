"""The fused layer norms behind `layers.LayerNormalization` on TensorFlow, and `portable_graph()`.

TensorFlow's graph runtime runs Keras' layer norm as about seven full passes over the activations
(cast, two means, a squared difference, a scale, a shift, a cast back). Two fused forms replace it at
inference, on the TensorFlow backend, on a machine without a GPU, for norms over the last axis of at least
`MIN_ELEMENTS_PER_EXAMPLE` elements per example:

- **oneDNN's layer norm** (`onednn_layer_norm`), in every graph traced for inference where TensorFlow's
  oneDNN runs it: `MLPMixer.predict` (`keras_mixer.predict_trace`), the SavedModels of
  `keras_mixer.export` (TF Serving), `tf.function`s traced with a `None` or a known batch size (except
  known-batch graphs inside `portable_graph()`, which keep Keras' op). The norm is written as Keras 2 wrote it (a
  `FusedBatchNormV3` in training mode over a (1, rows, channels, 1) view, then the scale and shift),
  which TensorFlow's graph optimiser rewrites into one `_MklLayerNorm` op. It needs no XLA, so
  SavedModels carry it, and oneDNN spreads it over all cores. The rewrite needs the number of rows not
  to be a constant: with a known batch size the optimiser would fold it, and the Fill ops of the
  pattern with it, so the row count passes through a `PlaceholderWithDefault`, which it never folds.
  It also needs TensorFlow's oneDNN on (`onednn_enabled`); a process without it traces the XLA norm or
  Keras' op instead.
- **an XLA-compiled norm** (`fused_layer_norm`), where oneDNN's cannot run (TensorFlow without oneDNN,
  or bfloat16 on a CPU where its oneDNN takes none, `_onednn_takes_bfloat16`) and TensorFlow runs at
  most `MAX_TENSORFLOW_THREADS` threads: one small XLA-compiled function, while the matmuls around it
  stay on oneDNN. Where both can run, the XLA norm ties with oneDNN's (2-core AVX2 EPYC, float32,
  1.00x in 8 rounds) or trails it: by 3-6 % on the 2-core AVX-512 EPYC, by 19-26 % on the 16-core Xeon.
  `without_onednn_norm()` traces it there anyway (the A/B's "fused" side).

On the 2-core AMD EPYC with AVX-512 (2026-11-27, S/16 at 224 px, the three paths timed in alternation,
15 rounds, by `python -m benchmarks.fused_norm_ab`; README "Performance"), against Keras' op oneDNN's
norm ran 1.14x in mixed bfloat16 and 1.06x in float32 at batch 32, 1.11x and 1.06x at batch 1; the XLA
norm 1.06x, 1.03x, 1.07x and 1.02x. So oneDNN's norm beat the XLA one in all four settings (1.03-1.06x).
In training the same size rule applies: where the XLA norm may run, a norm trains with it and with its
gradient compiled too (`trainable_fused_layer_norm`, `compiled_training_applies`); with more threads than
`MAX_TENSORFLOW_THREADS`, bfloat16 inputs where TensorFlow's oneDNN takes them train with the oneDNN form, as
batch norm forward and its gradient (`onednn_training_applies`), and other inputs with Keras' op.

Precision: the XLA norm computes in float32 whatever its input and rounds once. oneDNN's norm computes in
its input's dtype: under `mixed_bfloat16` it takes the bfloat16 activations, keeps its statistics in
float32, and scales and shifts with gamma and beta rounded to bfloat16, as mixed precision rounds every
kernel (`tests/test_fused_norm.py` compares both with a float64 reference). Each returns the dtype its
caller asks for (`LayerNormalization.call(..., output_dtype=...)`); the MixerBlock asks for its MLPs'
(bfloat16 under mixed precision), so that oneDNN's bfloat16 result is not written as float32 only to be
cast back by the MLP. Same values; on the 2-core Sapphire Rapids the bfloat16 SavedModel of S/16 ran
1.10-1.19x as fast at batch 32 with it (the code before and after, in alternating processes; a probe).

SavedModels must not carry XLA-compiled functions: TF Serving's `--xla_cpu_compilation_enabled` is off
by default, and its documentation says a model that needs XLA then fails on its first request (not
tried on our machines, which have no Docker). Graphs traced inside `portable_graph()` use no XLA;
`keras_mixer.export.export_saved_model` and `MLPMixer.export` trace inside it. (The TFLite converter
inlines the compiled function into builtin ops, so TFLite exports need no such care.)
"""

import contextlib
import contextvars
import functools
import math
import os

import keras

from keras_mixer.cpu import cpu_model_and_flags

_PORTABLE = contextvars.ContextVar("keras_mixer_portable_graph", default=False)
_ONEDNN_NORM = contextvars.ContextVar("keras_mixer_onednn_norm", default=True)
_KERAS_NORM = contextvars.ContextVar("keras_mixer_keras_layer_norm", default=False)

# Below this many elements per example a fused norm's fixed cost can outweigh the passes it saves: with
# every norm fused, the default Fashion model (16 x 128 per image) ran 0.85x at batch 1 and 1.04x at
# batch 32 with the XLA norm, 0.72x and 1.12x with oneDNN's (`benchmarks.fused_norm_ab --min-elements 0`),
# and the batch size is not always known when a graph is traced. The 224-px /16 and /14 presets (S/16:
# 196 x 512) are above it.
MIN_ELEMENTS_PER_EXAMPLE = 65_536

# Above this many TensorFlow threads the XLA norm (where oneDNN's cannot run) gives way to Keras' op: its
# element-wise kernels split each pass over all cores, and the compiled norm gains less than it costs.
# oneDNN's norm, split over the cores too, beats both there. In alternation
# (`benchmarks.fused_norm_ab`, S/16 at batch 32) on a 16-core Intel Xeon with AMX
# (2026-11-27): the XLA norm 0.97x and 0.93x Keras' op in bfloat16, 0.98x and 0.89x in float32 (two
# runs); oneDNN's 1.17x in bfloat16 (6 of 6 rounds) and 1.14x in float32 (5 of 6; run 22). On 2 of the
# same cores (`taskset -c 0,1`) the XLA norm ran 1.11x in bfloat16, 6 of 6 rounds, as on the 2-core
# EPYCs. Counts between 2 and 16 are unmeasured.
MAX_TENSORFLOW_THREADS = 2


@contextlib.contextmanager
def _setting(variable, value):
    """`variable` (a ContextVar) set to `value` inside the block."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


@contextlib.contextmanager
def portable_graph():
    """Trace graphs that any TensorFlow runtime runs, TF Serving included: no XLA-compiled pieces.

    Neither the XLA norm of inference nor the compiled GELU (`keras_mixer.fused_gelu`); oneDNN's
    norm, plain TensorFlow ops, stays.

    Example:
    >>> import numpy as np
    >>> from keras_mixer.layers import LayerNormalization
    >>> with portable_graph():
    ...     tuple(LayerNormalization()(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 4)
    """
    with _setting(_PORTABLE, True):
        yield


@contextlib.contextmanager
def without_onednn_norm():
    """Trace graphs whose norms skip oneDNN's form: the XLA norm or Keras' op (`fused_inference_applies`).

    What `benchmarks.fused_norm_ab` times oneDNN's norm against; the package itself never needs it.

    Example:
    >>> import tensorflow as tf
    >>> from keras_mixer.layers import LayerNormalization
    >>> seen, norm = [], LayerNormalization()
    >>> def trace(x):
    ...     seen.append(onednn_inference_applies(norm, x, training=False))
    ...     return x
    >>> with without_onednn_norm():
    ...     _ = tf.function(trace).get_concrete_function(tf.TensorSpec((None, 256, 256)))
    >>> seen
    [False]
    """
    with _setting(_ONEDNN_NORM, False):
        yield


@contextlib.contextmanager
def keras_layer_norm():
    """Trace graphs whose norms run Keras' op, neither fused form; nothing else changes (the compiled GELU stays).

    What `benchmarks.run`'s `*_unfused_norm` rows run: the package's graph without its fused norms.

    Example:
    >>> import tensorflow as tf
    >>> from keras_mixer.layers import LayerNormalization
    >>> seen, norm = [], LayerNormalization()
    >>> def trace(x):
    ...     seen.append(_fusable(norm, x, training=False))
    ...     return x
    >>> with keras_layer_norm():
    ...     _ = tf.function(trace).get_concrete_function(tf.TensorSpec((None, 256, 256)))
    >>> seen
    [False]
    """
    with _setting(_KERAS_NORM, True):
        yield


def _fusable(norm, inputs, training):
    """What both fused norms need at inference: `training` falsy and `_fusable_norm`."""
    return not training and _fusable_norm(norm, inputs)


def _fusable_norm(norm, inputs):
    """Not inside `keras_layer_norm()`, the last axis only, at least `MIN_ELEMENTS_PER_EXAMPLE` elements per
    example (known when traced), `center` and `scale` on, no `rms_scaling`."""
    axes = norm.axis if isinstance(norm.axis, (list, tuple)) else [norm.axis]
    rank = len(inputs.shape)
    per_example = math.prod(dim or 0 for dim in inputs.shape[1:])  # an unknown size counts as 0
    return (
        not _KERAS_NORM.get()
        and [axis % rank for axis in axes] == [rank - 1]
        and per_example >= MIN_ELEMENTS_PER_EXAMPLE
        and norm.center
        and norm.scale
        and not norm.rms_scaling
    )


def onednn_inference_applies(norm, inputs, training):
    """Whether `norm` (a LayerNormalization) may run `onednn_layer_norm` on `inputs` in this call.

    All must hold: `_fusable`; a graph being traced (never eager); a batch size unknown when traced, or
    known outside `portable_graph()` (whose known-batch graphs keep Keras' op); not inside
    `without_onednn_norm()`; 2-D or 3-D float32 or bfloat16 inputs (what TensorFlow's rewrite takes;
    bfloat16 only where oneDNN takes it, `_onednn_takes_bfloat16`); the TensorFlow backend with oneDNN on
    (`onednn_enabled`: without it nothing rewrites the ops); no GPU. `portable_graph()` allows the
    unknown-batch case: it is no XLA.
    """
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return (
        _fusable(norm, inputs, training)
        and (dtype == "float32" or dtype == "bfloat16" and _onednn_takes_bfloat16())
        and (inputs.shape[0] is None or not _PORTABLE.get())
        and _onednn_form_runs(inputs)
    )


def _onednn_form_runs(inputs):
    """What `onednn_layer_norm` needs in training and at inference: 2-D or 3-D inputs, not inside
    `without_onednn_norm()`, the TensorFlow backend tracing a graph, TensorFlow's oneDNN on, no GPU."""
    return (
        len(inputs.shape) in (2, 3)
        and _ONEDNN_NORM.get()
        and keras.backend.backend() == "tensorflow"
        and _tracing_a_graph()
        and onednn_enabled()
        and not _machine_has_gpu()
    )


def onednn_training_applies(norm, inputs, training):
    """Whether `norm` trains with `onednn_layer_norm` on `inputs` in this call: in training, bfloat16 inputs.

    All must hold: `training`; `_fusable_norm`; bfloat16 inputs on a CPU where TensorFlow's oneDNN takes
    bfloat16 (`_onednn_takes_bfloat16`); `_onednn_form_runs` (as at inference). In training the form runs as
    oneDNN's batch norm in training mode (`_MklFusedBatchNormV3`) and its gradient as one op
    (`FusedBatchNormGradV3`), where Keras' op is about a dozen element-wise ops forward and twenty back; the
    scale and shift stay separate ops, in bfloat16 as at inference. float32 keeps Keras' op: S/16's graph train
    step at batch 8 ran 1.13x with this form in bfloat16 (8 of 8 rounds) and 1.02x in float32 (6 of 8; 2-core
    Sapphire Rapids, 2026-12-07, `python -m benchmarks.training_norm_ab`, `--force` for float32), where float32
    trains with XLA by default anyway.
    Unmeasured elsewhere, and inside XLA-compiled steps (`--xla`), where XLA lowers the same ops.
    """
    return (
        bool(training)
        and _fusable_norm(norm, inputs)
        and keras.backend.standardize_dtype(inputs.dtype) == "bfloat16"
        and _onednn_takes_bfloat16()
        and _onednn_form_runs(inputs)
    )


def _tracing_a_graph():
    import tensorflow as tf  # noqa: PLC0415  (only reached on the TensorFlow backend)

    return not tf.executing_eagerly()


def fused_inference_applies(norm, inputs, training):
    """Whether `norm` (a LayerNormalization) may run `fused_layer_norm` (the XLA norm) on `inputs` in this call.

    All must hold: `_fusable`, `tensorflow_cpu_xla_allowed()`, and at most `MAX_TENSORFLOW_THREADS`
    (`tensorflow_threads()`). Where `onednn_inference_applies` too, the layer runs oneDNN's norm instead.
    """
    return (
        _fusable(norm, inputs, training)
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


def onednn_layer_norm(inputs, gamma, beta, epsilon, output_dtype):
    """Layer norm over the last axis of 2-D or 3-D `inputs`, in the form TensorFlow rewrites into `_MklLayerNorm`.

    Computes in `inputs`' dtype (statistics in float32). The rewrite happens in traced graphs; anywhere
    else (eager, XLA, TFLite, a TensorFlow without oneDNN) the same ops run unfused and give the same
    values.

    Example:
    >>> import tensorflow as tf
    >>> norm = tf.function(lambda x: onednn_layer_norm(x, tf.ones(3), tf.zeros(3), 1e-6, tf.float32))
    >>> [round(float(value), 4) for value in norm(tf.constant([[1.0, 2.0, 3.0]]))[0]]
    [-1.2247, 0.0, 1.2247]
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    shape = tf.shape(inputs)
    # Never a constant, even where the batch size is known: folded, it would fold the Fill ops below into
    # constants, which the rewrite's pattern does not match.
    rows = tf.raw_ops.PlaceholderWithDefault(input=tf.reduce_prod(shape[:-1]), shape=[])
    # The graph optimiser's pattern (remapper's FindMklLayerNorm): a FusedBatchNormV3 in training mode over
    # (1, rows, channels, 1) in NCHW, with Fill ops of ones and zeros as its scale and offset and empty
    # constants as its mean and variance, reshaped back, times gamma, plus beta. The raw op keeps the
    # model's epsilon: `tf.nn.fused_batch_norm` raises it to 1.001e-5 (a cuDNN limit).
    as_rows = tf.reshape(inputs, tf.stack([1, rows, shape[-1], 1]))
    count = tf.reshape(rows, [1])
    empty = tf.constant([], tf.float32)
    normalized = tf.raw_ops.FusedBatchNormV3(
        x=as_rows,
        scale=tf.ones(count, tf.float32),
        offset=tf.zeros(count, tf.float32),
        mean=empty,
        variance=empty,
        epsilon=float(epsilon),
        exponential_avg_factor=1.0,
        data_format="NCHW",
        is_training=True,
    ).y
    normalized = tf.reshape(normalized, shape)
    outputs = normalized * tf.cast(gamma, inputs.dtype) + tf.cast(beta, inputs.dtype)
    outputs = tf.cast(outputs, output_dtype)
    outputs.set_shape(inputs.shape)
    return outputs


def in_compute_dtype(x):
    """`x` cast to the dtype the compiled pieces compute in: float64 for float64, else float32."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)


def _normalized(x, gamma, beta, epsilon):
    """(layer norm of `x` over its last axis with `gamma` and `beta`, the mean, 1 / standard deviation), all in
    `x`'s dtype (the caller's compute dtype)."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centered = x - mean
    inverse_std = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
    return centered * (inverse_std * tf.cast(gamma, x.dtype)) + tf.cast(beta, x.dtype), mean, inverse_std


def norm_gradients(x, gamma, mean, inverse_std, upstream):
    """(dx, dgamma, dbeta) of the layer norm of `x` (in the compute dtype) for `upstream`, from the `mean` and
    `inverse_std` its forward kept, all in `x`'s dtype: with x̂ the normalised input and g = upstream · gamma,
    dx = (g - mean(g) - x̂ · mean(g · x̂)) / std, dgamma = Σ upstream · x̂, dbeta = Σ upstream."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    x_hat = (x - mean) * inverse_std
    upstream = tf.cast(upstream, x.dtype)
    leading_axes = list(range(len(x.shape) - 1))
    g = upstream * tf.cast(gamma, x.dtype)
    dx = inverse_std * (
        g - tf.reduce_mean(g, axis=-1, keepdims=True) - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True)
    )
    return dx, tf.reduce_sum(upstream * x_hat, axis=leading_axes), tf.reduce_sum(upstream, axis=leading_axes)


@functools.cache
def _compiled_norm():
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    @tf.function(jit_compile=True, autograph=False)
    def norm(x, gamma, beta, epsilon, output_dtype):
        return tf.cast(_normalized(tf.cast(x, tf.float32), gamma, beta, epsilon)[0], output_dtype)

    return norm


def compiled_training_applies(norm, inputs, training):
    """Whether `norm` trains with `trainable_fused_layer_norm` on `inputs` in this call.

    All must hold: `training`; `_fusable_norm`; `tensorflow_cpu_xla_allowed()`; at most `MAX_TENSORFLOW_THREADS`
    (as the XLA norm at inference). Where it holds, it comes before `onednn_training_applies`. On the 2-core
    Sapphire Rapids S/16's graph train step at batch 8 ran faster with it than with oneDNN's form in bfloat16
    and than with Keras' op in float32 (`python -m benchmarks.training_norm_ab --against onednn|keras`; README
    "Performance"). Inside an XLA-compiled step (`--xla`) XLA compiles the same functions with the rest.
    """
    return (
        bool(training)
        and _fusable_norm(norm, inputs)
        and tensorflow_cpu_xla_allowed()
        and tensorflow_threads() <= MAX_TENSORFLOW_THREADS
    )


def trainable_fused_layer_norm(inputs, gamma, beta, epsilon, output_dtype):
    """`fused_layer_norm` whose gradient (for `inputs`, `gamma` and `beta`) is one XLA-compiled function too.

    Computes in float32 (float64 for float64 inputs) and rounds once; the gradient is the layer norm's, from
    the mean and 1 / standard deviation the forward kept (`norm_gradients`).

    Example:
    >>> import tensorflow as tf
    >>> y = trainable_fused_layer_norm(tf.constant([[1.0, 2.0, 3.0]]), tf.ones(3), tf.zeros(3), 1e-6, tf.float32)
    >>> [round(float(value), 4) for value in y[0]]
    [-1.2247, 0.0, 1.2247]
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    return _compiled_trainable_norm(float(epsilon), tf.as_dtype(output_dtype))(inputs, gamma, beta)


@functools.cache
def _compiled_trainable_norm(epsilon, output_dtype):
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    @tf.function(jit_compile=True, autograph=False)
    def forward(x, gamma, beta):
        y, mean, inverse_std = _normalized(in_compute_dtype(x), gamma, beta, epsilon)
        return tf.cast(y, output_dtype), mean, inverse_std

    @tf.function(jit_compile=True, autograph=False)
    def backward(x, gamma, mean, inverse_std, upstream):
        dx, dgamma, dbeta = norm_gradients(in_compute_dtype(x), gamma, mean, inverse_std, upstream)
        return tf.cast(dx, x.dtype), tf.cast(dgamma, gamma.dtype), tf.cast(dbeta, gamma.dtype)

    @tf.custom_gradient
    def norm(x, gamma, beta):
        y, mean, inverse_std = forward(x, gamma, beta)
        return y, lambda upstream: backward(x, gamma, mean, inverse_std, upstream)

    return norm


@functools.cache
def onednn_enabled():
    """Whether this process's TensorFlow runs oneDNN's CPU kernels (fixed when TensorFlow is imported).

    TensorFlow 2.21 on x86-64 turns them on by itself only on CPUs with AVX512-VNNI, AVX512-BF16,
    AVX-VNNI or AMX; `TF_ENABLE_ONEDNN_OPTS=1` (or `0`) before its import decides anywhere. The programs
    in `training/` and `benchmarks/` set it to 1 unless the environment says otherwise
    (`training/onednn.py`).

    Example:
    >>> onednn_enabled() in (True, False)
    True
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415  (TensorFlow's own query)
    except ImportError:  # no TensorFlow, or a build without the query
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


@functools.cache
def _onednn_takes_bfloat16():
    """TensorFlow's own test (`IsBF16SupportedByOneDNNOnThisCPU`): AVX-512F or AVX-NE-CONVERT. Elsewhere
    (a CPU with AVX2 only) its oneDNN leaves bfloat16 ops to Eigen, and the norm's ops stay unfused."""
    flags = cpu_model_and_flags()[1]
    return "avx512f" in flags or "avx_ne_convert" in flags


@functools.cache
def _machine_has_gpu():
    import tensorflow as tf  # noqa: PLC0415

    return bool(tf.config.list_logical_devices("GPU"))
