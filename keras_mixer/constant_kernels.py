"""The MLP kernels traced as graph constants, so that oneDNN reorders each one once instead of on every call.

TensorFlow's oneDNN matmul (`_MklNativeFusedMatMul`, a matmul with its bias and GELU) keeps a copy of its
weight in the blocked layout of its fastest kernel only when the weight is known not to change: a `Const`
node in the graph (TensorFlow sets the op's `is_filter_const`), or every weight of the process under
`TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`. A weight read from a variable is passed in its plain layout on every
call. On the 2-core Intel Sapphire Rapids (AMX) that decides the kernel, not only a copy: S/16's bfloat16
channel matmul (6272 x 512) @ (512 x 2048) with bias and GELU ran as oneDNN's inner product `x64:gemm:jit`
(AVX512-BF16, no AMX tiles) with a variable weight, 17.8 ms, and as `brgemm:avx10_1_512_amx` with a
constant one, 10.0 ms (a probe, `ONEDNN_VERBOSE=1`, 2026-12-07).

Inside `constant_kernels(model)`, graphs traced on the TensorFlow backend read the `MlpBlock` kernels (99 % of
a Mixer's FLOPs) as constants; biases, norms, the stem and the head stay variables. The bfloat16
SavedModel of `keras_mixer.export` is traced so: a served model never changes a weight, and TF Serving
then needs no environment variable for the speed. Whether the float32 SavedModel gains is measured
CPU by CPU (README "Performance"); it keeps variables.

A SavedModel stores a graph's constants in its `saved_model.pb`, which protocol buffers cap at 2 GiB;
`kernels_fit_as_constants` keeps models whose MLP kernels exceed `MAX_CONSTANT_KERNEL_BYTES` on variables.
"""

import contextlib
import contextvars
import math

import keras

_CONSTANT_KERNELS = contextvars.ContextVar("keras_mixer_constant_kernels", default=None)  # {id(kernel): value}

# The SavedModel precisions whose MLP kernels are constants (`keras_mixer.export`). bfloat16: with AMX the
# constant kernels ran S/16 at batch 32 1.7x as fast as variables (README "Performance"); float32 is not
# among them: the weight cache measured 0.93x to 1.07x by CPU. `benchmarks.constant_kernels_ab` measures both.
CONSTANT_KERNEL_PRECISIONS = ("bfloat16",)

# The MLP kernels' bytes above which a SavedModel keeps them as variables: half the 2 GiB protocol-buffer cap
# of `saved_model.pb`, which also holds the rest of the graph. H/14 in bfloat16 (862 MB) is below it.
MAX_CONSTANT_KERNEL_BYTES = 2**30
_ITEM_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


@contextlib.contextmanager
def constant_kernels(model, values=None):
    """Trace graphs in which `model`'s `MlpBlock` kernels are constants holding their values of now (or `values`:
    {id(kernel): a NumPy array or an eager tensor, read when a graph is traced}).

    The values are read here, before any tracing: a variable read while a graph is traced (even inside
    `tf.init_scope()`) counts as one the graph uses, and an export would store it. A graph traced here
    never sees a later change of the weights: use it for exports only.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> from keras_mixer.layers import MlpBlock
    >>> block = MlpBlock(mlp_dim=4)
    >>> _ = block(np.zeros((1, 2, 3), "float32"))
    >>> def kernels_read_from(graph):
    ...     return [op.inputs[1].op.type for op in graph.get_operations() if op.type == "MatMul"]
    >>> spec = tf.TensorSpec((1, 2, 3))
    >>> kernels_read_from(tf.function(block).get_concrete_function(spec).graph)
    ['ReadVariableOp', 'ReadVariableOp']
    >>> with constant_kernels(block):
    ...     kernels_read_from(tf.function(block).get_concrete_function(spec).graph)
    ['Const', 'Const']
    """
    if values is None:
        values = {id(kernel): keras.ops.convert_to_numpy(kernel) for kernel in mlp_kernels(model)}
    token = _CONSTANT_KERNELS.set(values)
    try:
        yield
    finally:
        _CONSTANT_KERNELS.reset(token)


def constant_kernel(dense):
    """The value to trace `dense`'s kernel as (a NumPy array), or None to read the variable.

    An array inside `constant_kernels(model)` for a kernel of `model`, on the TensorFlow backend, while a
    graph is traced (an eager call has nothing to fold).
    """
    value = (_CONSTANT_KERNELS.get() or {}).get(id(dense.kernel))
    if value is None or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    if tf.executing_eagerly():
        return None
    return value.numpy() if isinstance(value, tf.Tensor) else value  # an eager tensor: read now, at trace time


def dense_with_constant_kernel(dense, x, kernel):
    """`dense(x)` for a `keras.layers.Dense` without activation, with `kernel` (an array) as a graph constant.

    `x` is already in the layer's compute dtype (the calling layer's policy cast it). The bias is added by a
    `BiasAdd`: after a constant kernel TensorFlow fuses the GELU that follows into the matmul only then (with
    Keras' `AddV2` it ran unfused, S/16 in bfloat16, 2026-12-07).
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    y = tf.matmul(x, tf.cast(tf.constant(kernel), dense.compute_dtype))
    return tf.nn.bias_add(y, tf.cast(dense.bias, dense.compute_dtype)) if dense.use_bias else y


def steps_have_constant_kernels(model):
    """Whether `MLPMixer.predict` and `MLPMixer.evaluate` trace their steps with `model`'s MLP kernels as constants
    (`constant_kernels`).

    All must hold: the TensorFlow backend with no GPU visible (measured on CPUs only); every `MlpBlock`
    computing in one of `CONSTANT_KERNEL_PRECISIONS` (bfloat16: `mixed_bfloat16` or a bfloat16 copy); the
    kernels fit (`kernels_fit_as_constants`). Each traces again when a kernel has changed since its step was
    traced (`kernel_snapshot`, `kernels_unchanged`), so training between two calls is seen.

    Example:
    >>> from keras_mixer import MLPMixer
    >>> tiny = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, patch_size=4,
    ...                 image_size=8, num_channels=1, num_classes=3)
    >>> steps_have_constant_kernels(tiny)  # float32
    False
    """
    from keras_mixer.fused_norm import _machine_has_gpu  # noqa: PLC0415

    blocks = _mlp_blocks(model)
    return (
        keras.backend.backend() == "tensorflow"
        and bool(blocks)
        and all(block.compute_dtype in CONSTANT_KERNEL_PRECISIONS for block in blocks)
        and kernels_fit_as_constants(model)
        and not _machine_has_gpu()
    )


def kernel_snapshot(model):
    """{id(kernel): its value now, in its layer's compute dtype, as a TensorFlow tensor} for `model`'s MLP
    kernels: what a graph traced in `constant_kernels(model, values)` holds (it casts each kernel to that dtype
    anyway). A later assignment to a kernel leaves the snapshot as it is (TensorFlow copies a variable's buffer
    that a tensor still reads). TensorFlow only."""
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    # `.value` is the backend's variable, which a cast to its own dtype would return as it is: read it first.
    return {
        id(dense.kernel): tf.cast(tf.identity(dense.kernel.value), dense.compute_dtype) for dense in _mlp_denses(model)
    }


def kernels_unchanged(model, snapshot):
    """A function of no arguments, traced once: whether `model`'s MLP kernels still hold `snapshot`'s values
    (from `kernel_snapshot(model)`) in their compute dtype, bit for bit. One graph call reads every kernel once:
    about 15 ms for S/16 on the 2-core Sapphire Rapids, where taking a new snapshot and comparing it eagerly took
    about 40 ms (probes).

    Example:
    >>> from keras_mixer import MLPMixer
    >>> tiny = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, patch_size=4,
    ...                 image_size=8, num_channels=1, num_classes=3)
    >>> unchanged = kernels_unchanged(tiny, kernel_snapshot(tiny))
    >>> kernel = tiny.mixer_blocks[0].channel_mixing.dense_0.kernel
    >>> before = unchanged()
    >>> _ = kernel.assign(kernel * 2.0 + 1.0)
    >>> before, unchanged()
    (True, False)
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    denses = _mlp_denses(model)

    def bits(tensor):  # equal bits compare equal, NaNs included
        return tf.bitcast(tensor, {2: tf.uint16, 4: tf.uint32, 8: tf.uint64}[tensor.dtype.size])

    @tf.function(autograph=False)
    def unchanged():
        now = [tf.cast(dense.kernel.value, dense.compute_dtype) for dense in denses]
        then = [snapshot[id(dense.kernel)] for dense in denses]
        return tf.reduce_all(tf.stack([tf.reduce_all(tf.equal(bits(a), bits(b))) for a, b in zip(now, then)]))

    return lambda: bool(unchanged())


def _mlp_denses(model):
    """Every `MlpBlock`'s two Dense layers, in `model` (which may be one)."""
    return [dense for block in _mlp_blocks(model) for dense in (block.dense_0, block.dense_1)]


def _mlp_blocks(model):
    from keras_mixer.layers import MlpBlock  # noqa: PLC0415  (layers imports this module)

    return [layer for layer in model._flatten_layers(include_self=True) if isinstance(layer, MlpBlock)]


def mlp_kernels(model):
    """The kernel variables that `constant_kernels(model)` traces as constants: every `MlpBlock`'s two
    (`model` itself may be one)."""
    return [dense.kernel for dense in _mlp_denses(model)]


def saved_model_has_constant_kernels(model, precision):
    """Whether the SavedModel of `model` (already in `precision`) traces its MLP kernels as constants:
    `precision` is one of `CONSTANT_KERNEL_PRECISIONS` and the kernels fit (`kernels_fit_as_constants`)."""
    return precision in CONSTANT_KERNEL_PRECISIONS and kernels_fit_as_constants(model)


def kernels_fit_as_constants(model):
    """Whether `model`'s MLP kernels, in the dtype they are stored in, fit under `MAX_CONSTANT_KERNEL_BYTES`.

    Example:
    >>> from keras_mixer import MLPMixer
    >>> tiny = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, patch_size=4,
    ...                 image_size=8, num_channels=1, num_classes=3)
    >>> kernels_fit_as_constants(tiny)
    True
    """
    sizes = [math.prod(kernel.shape) * _ITEM_BYTES.get(keras.backend.standardize_dtype(kernel.dtype), 4)
             for kernel in mlp_kernels(model)]  # fmt: skip
    return sum(sizes) <= MAX_CONSTANT_KERNEL_BYTES
