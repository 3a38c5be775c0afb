"""The boxes of the MLP-Mixer figure as Keras layers: the paper's equations, nothing else.

Reading top to bottom follows the architecture (Tolstikhin et al. 2021, Fig. 1):

    PatchEmbedding   image (N, H, W, C_in) -> tokens (N, S, C)       the "stem"
    LayerNormalization  Keras' own, fused at TensorFlow inference (fused_norm.py)
    MlpBlock         Dense(mlp_dim) -> GELU -> Dense(in_dim)          used for both mixings
    DropPath         per-sample stochastic depth on a residual branch
    MixerBlock       x += T(MLP_tokens(T(LN(x))));  x += MLP_channels(LN(x))

Only `keras.ops` / `keras.layers` are used, so every layer runs on the TensorFlow, JAX and
PyTorch backends. Two TensorFlow-only fast paths compute the same functions (to rounding): `LayerNormalization`
fused, at inference and with its gradient in training (`fused_norm.py`), and the GELU compiled, in training (with
`Dense_0`'s bias) and at inference on some CPUs (`fused_gelu.py`). In training on every backend the stem runs as
one matmul over the flattened patches (`patch_matmul_applies`).
Sub-layer names mirror the official Flax checkpoint (`token_mixing/Dense_0`, `LayerNorm_1`, ...),
which makes weight conversion a rename table (see `checkpoints.py`).
The model assembly (pre-head norm, pooling, head) lives in `model.py`.
"""

import math

import keras
from keras import ops

from keras_mixer.constant_kernels import constant_kernel, dense_with_constant_kernel
from keras_mixer.fused_gelu import biased_gelu, biased_gelu_applies, gelu
from keras_mixer.fused_norm import (
    compiled_training_applies,
    fused_inference_applies,
    fused_layer_norm,
    onednn_inference_applies,
    onednn_layer_norm,
    onednn_training_applies,
    trainable_fused_layer_norm,
)
from keras_mixer.fused_residual import token_residual_layer_norm, token_residual_norm_applies

PACKAGE = "keras_mixer"

# The MLP nonlinearity: the paper's GELU, or ReLU, which is cheaper on a CPU (TensorFlow fuses it into
# the matmul in training too, and its gradient is one comparison).
MLP_ACTIVATIONS = ("gelu", "relu")


def check_mlp_activation(activation):
    """`activation` if it is one of `MLP_ACTIVATIONS`, else one `ValueError` naming both."""
    if activation not in MLP_ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {MLP_ACTIVATIONS}. Received: activation={activation!r}")
    return activation


def _pair(value):
    """`16` -> `(16, 16)`; `(16, 8)` stays."""
    if isinstance(value, int):
        return (value, value)
    return tuple(value)


def mixed_precision_safe_dtype(dtype_policy):
    """The policy for numerically sensitive layers (norms, head): float32 under mixed precision.

    Under `mixed_float16` / `mixed_bfloat16` the layer norms and the classifier head keep a
    float32 compute dtype, as the Keras mixed-precision guide recommends; otherwise they follow
    the given policy.
    """
    policy = keras.dtype_policies.get(dtype_policy) if dtype_policy else keras.config.dtype_policy()
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return policy


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization`: same arguments, weights and math; fused on TensorFlow.

    On the TensorFlow backend at inference on a CPU, a norm of at least
    `fused_norm.MIN_ELEMENTS_PER_EXAMPLE` elements per example runs fused in traced graphs: as oneDNN's
    layer norm where TensorFlow's oneDNN runs it, else as one XLA-compiled function
    (`keras_mixer.fused_norm`, which says what each was measured to be worth); in training, as the XLA norm
    with its gradient compiled too, or (more threads) oneDNN's form for bfloat16 where its oneDNN takes it;
    other training, small norms and the other backends run the parent's op, and exports (`portable_graph()`)
    no XLA.

    Example:
    >>> import numpy as np
    >>> y = LayerNormalization(epsilon=1e-6)(np.array([[[1.0, 2.0, 3.0]]], "float32"))
    >>> [round(float(value), 4) for value in keras.ops.convert_to_numpy(y)[0, 0]]
    [-1.2247, 0.0, 1.2247]
    """

    # Named as Keras' class on purpose: a `.keras` file keeps a functional model's layers under their
    # class names in snake case, so files written with Keras' own class here still load.

    def call(self, inputs, training=None, output_dtype=None):
        """`output_dtype`: the output's dtype, by default the compute dtype (float32 under mixed precision).

        The MixerBlock asks for its MLPs' compute dtype, which they would cast to anyway: in bfloat16,
        oneDNN's norm then rounds its result once, instead of writing float32 for the MLP to round.
        """
        output_dtype = output_dtype or self.compute_dtype
        # `.value`: the backend's own variable, which a `tf.function` takes as an argument.
        if compiled_training_applies(self, inputs, training):
            # As tensors: a `tf.custom_gradient` passed variables would have to return their gradients apart.
            gamma, beta = (ops.convert_to_tensor(weight.value) for weight in (self.gamma, self.beta))
            return trainable_fused_layer_norm(inputs, gamma, beta, self.epsilon, output_dtype)
        if onednn_inference_applies(self, inputs, training) or onednn_training_applies(self, inputs, training):
            return onednn_layer_norm(inputs, self.gamma.value, self.beta.value, self.epsilon, output_dtype)
        if fused_inference_applies(self, inputs, training):
            return fused_layer_norm(inputs, self.gamma.value, self.beta.value, self.epsilon, output_dtype)
        return ops.cast(super().call(inputs), output_dtype)


def patch_matmul_applies(training):
    """Whether `PatchEmbedding` runs as one matmul over the flattened patches rather than a strided convolution:
    in training, where its kernel's gradient is then a matmul too. The same function. In a bfloat16 S/16 step at
    batch 8 on the 2-core Sapphire Rapids, the convolution's filter gradient took 19 ms of about 470
    (`python -m benchmarks.op_breakdown --training`); `python -m benchmarks.training_matmul_ab --change stem`
    measures the step (README "Performance"). Inference keeps the convolution, which TFLite maps to its own op.

    Example:
    >>> patch_matmul_applies(training=True), patch_matmul_applies(training=None)
    (True, False)
    """
    return bool(training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchEmbedding(keras.layers.Layer):
    """Non-overlapping patch embedding: the stem of the Mixer.

    A convolution with kernel = stride = patch size and `hidden_dim` filters, whose output grid
    is flattened row-major into tokens: (N, H, W, C_in) -> (N, (H/ph)·(W/pw), hidden_dim).
    Kernel lecun-normal, bias zero (as the official model). Input height and width must be
    multiples of the patch size (the model checks this at construction). In training the same map runs as one
    matmul over the flattened patches (`patch_matmul_applies`).

    Example:
    >>> import numpy as np
    >>> stem = PatchEmbedding(hidden_dim=8, patch_size=4)
    >>> tuple(stem(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 49, 8)
    """

    def __init__(self, hidden_dim, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.patch_size = _pair(patch_size)

    def build(self, input_shape):
        num_channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.patch_size, num_channels, self.hidden_dim),
            initializer="lecun_normal",
        )
        self.bias = self.add_weight(name="bias", shape=(self.hidden_dim,), initializer="zeros")
        # A wrong channel count at call time fails here, naming the layer and both shapes.
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: num_channels})

    def call(self, images, training=None):
        # The grid comes from the input's size: TensorFlow's conv returns a wrongly shaped empty tensor for an
        # empty batch, which must still become (0, tokens, channels).
        _, height, width, _ = ops.shape(images)
        grid_h, grid_w = height // self.patch_size[0], width // self.patch_size[1]
        if patch_matmul_applies(training):
            patches = self._patches_by_matmul(images, grid_h, grid_w)
        else:
            patches = ops.conv(images, self.kernel, strides=self.patch_size, padding="valid")
        # (batch, grid_h, grid_w, channels) -> (batch, tokens, channels), row-major.
        return ops.reshape(patches, (-1, grid_h * grid_w, self.hidden_dim)) + self.bias

    def _patches_by_matmul(self, images, grid_h, grid_w):
        """The convolution as one matmul: each patch flattened in the kernel's (row, column, channel) order."""
        (patch_h, patch_w), channels = self.patch_size, self.kernel.shape[2]
        height, width = images.shape[1:3]
        if height is None or width is None or height % patch_h or width % patch_w:
            # As the convolution's "valid" padding: the pixels past the last whole patch are left out.
            images = images[:, : grid_h * patch_h, : grid_w * patch_w, :]
        rows = ops.reshape(images, (-1, grid_h, patch_h, grid_w, patch_w, channels))
        rows = ops.reshape(ops.transpose(rows, (0, 1, 3, 2, 4, 5)), (-1, patch_h * patch_w * channels))
        return ops.matmul(rows, ops.reshape(self.kernel, (patch_h * patch_w * channels, self.hidden_dim)))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        grid_h = None if height is None else height // self.patch_size[0]
        grid_w = None if width is None else width // self.patch_size[1]
        tokens = None if grid_h is None or grid_w is None else grid_h * grid_w
        return (batch, tokens, self.hidden_dim)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MlpBlock(keras.layers.Layer):
    """`Dense(in_dim)(GELU(Dense(mlp_dim)(x)))` along the last axis.

    The paper's MLP, shared by token mixing (last axis = tokens) and channel mixing (last axis =
    channels). Optional dropout after the GELU and after the output projection (timm's
    placement; the official model has none). Kernels lecun-normal, biases zero.
    `activation="relu"` swaps the GELU for a ReLU (not the paper's model; faster on CPU). In training
    on TensorFlow the GELU's forward and gradient run compiled, with `Dense_0`'s bias added inside
    (`fused_gelu.biased_gelu`), and at inference on some CPUs its forward (`keras_mixer.fused_gelu`; same values).

    Example:
    >>> import numpy as np
    >>> tuple(MlpBlock(mlp_dim=32)(np.zeros((2, 49, 8), "float32")).shape)
    (2, 49, 8)
    """

    def __init__(self, mlp_dim, gelu_approximate=True, dropout_rate=0.0, activation="gelu", **kwargs):
        super().__init__(**kwargs)
        self.mlp_dim = int(mlp_dim)
        self.gelu_approximate = bool(gelu_approximate)
        self.activation = check_mlp_activation(activation)
        self.dropout_rate = float(dropout_rate)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        dense = dict(kernel_initializer="lecun_normal", dtype=self.dtype_policy)
        self.dense_0 = keras.layers.Dense(self.mlp_dim, name="Dense_0", **dense)
        self.dense_1 = keras.layers.Dense(in_dim, name="Dense_1", **dense)
        self.dense_0.build(input_shape)
        self.dense_1.build((*input_shape[:-1], self.mlp_dim))

    def call(self, x, training=None, output_bias=True):
        """`output_bias=False`: leave out `Dense_1`'s bias, which the caller adds (`keras_mixer.fused_residual`);
        only without dropout, which would apply to the sum."""
        if not output_bias and self.dropout_rate:
            raise ValueError(f"output_bias=False needs dropout_rate 0. Received: dropout_rate={self.dropout_rate}")
        # Fold every leading axis into one, so each Dense is a plain 2-D matmul that TensorFlow's
        # oneDNN remapper may fuse with bias + GELU. Same math as a 3-D Dense; on the 2-core CPU the
        # shipped A/B (`python -m benchmarks.mlp_layout`) measured it no faster (0.92-0.99x).
        inner_shape = tuple(x.shape[1:-1])
        if None not in inner_shape:
            x = ops.reshape(x, (-1, x.shape[-1]))
        if self.activation == "gelu" and biased_gelu_applies(training):
            # Dense_0's matmul alone, its bias added inside the compiled GELU (`fused_gelu.biased_gelu`, which
            # says why): the same function.
            dense, dtype = self.dense_0, self.dense_0.compute_dtype
            x = ops.matmul(x, ops.cast(dense.kernel, dtype))
            x = biased_gelu(x, ops.cast(dense.bias, dtype), approximate=self.gelu_approximate)
        elif self.activation == "gelu":
            x = self._dense(self.dense_0, x)
            per_example = math.prod(inner_shape) * self.mlp_dim if None not in inner_shape else None
            x = gelu(x, approximate=self.gelu_approximate, training=training, elements_per_example=per_example)
        else:
            x = ops.relu(self._dense(self.dense_0, x))
        x = self.dropout(x, training=training)
        if output_bias:
            x = self.dropout(self._dense(self.dense_1, x), training=training)
        else:
            x = ops.matmul(x, ops.cast(self.dense_1.kernel, self.dense_1.compute_dtype))
        if None not in inner_shape:
            x = ops.reshape(x, (-1, *inner_shape, x.shape[-1]))
        return x

    @staticmethod
    def _dense(dense, x):
        # Inside `constant_kernels(model)` (the bfloat16 SavedModel) the kernel is a graph constant, which oneDNN
        # reorders once (`keras_mixer.constant_kernels`); same values.
        kernel = constant_kernel(dense)
        return dense(x) if kernel is None else dense_with_constant_kernel(dense, x, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)  # Dense_1 maps back to the input width

    def get_config(self):
        return {
            **super().get_config(),
            "mlp_dim": self.mlp_dim,
            "gelu_approximate": self.gelu_approximate,
            "dropout_rate": self.dropout_rate,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample with probability `rate`.

    Kept samples are scaled by 1 / (1 - rate) so the expectation is unchanged; identity at
    inference or when `rate == 0`.

    Example:
    >>> import numpy as np
    >>> tuple(DropPath(0.5)(np.ones((4, 3, 2), "float32"), training=False).shape)
    (4, 3, 2)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask_shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = keras.random.uniform(mask_shape, seed=self.seed_generator, dtype=x.dtype) < keep
        return ops.where(mask, x / keep, ops.zeros_like(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MixerBlock(keras.layers.Layer):
    """One Mixer layer: token mixing, then channel mixing, each pre-norm and residual.

        y = LN_0(x);  x = x + DropPath(T(MLP_tokens(T(y))))     # mixes along tokens
        y = LN_1(x);  x = x + DropPath(MLP_channels(y))         # mixes along channels

    Two separate LayerNorms (epsilon 1e-6 as the official model), kept in float32 under mixed
    precision. Input and output: (N, S, C).

    Example:
    >>> import numpy as np
    >>> block = MixerBlock(tokens_mlp_dim=16, channels_mlp_dim=32)
    >>> tuple(block(np.zeros((2, 49, 8), "float32")).shape)
    (2, 49, 8)
    """

    def __init__(
        self,
        tokens_mlp_dim,
        channels_mlp_dim,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        gelu_approximate=True,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = activation  # checked by the MlpBlocks below
        self.tokens_mlp_dim = int(tokens_mlp_dim)
        self.channels_mlp_dim = int(channels_mlp_dim)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.gelu_approximate = bool(gelu_approximate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

        norm_dtype = mixed_precision_safe_dtype(self.dtype_policy)
        mlp = dict(
            gelu_approximate=gelu_approximate, dropout_rate=dropout_rate, activation=activation, dtype=self.dtype_policy
        )
        self.layer_norm_0 = LayerNormalization(epsilon=self.layer_norm_epsilon, name="LayerNorm_0", dtype=norm_dtype)
        self.token_mixing = MlpBlock(self.tokens_mlp_dim, name="token_mixing", **mlp)
        self.layer_norm_1 = LayerNormalization(epsilon=self.layer_norm_epsilon, name="LayerNorm_1", dtype=norm_dtype)
        self.channel_mixing = MlpBlock(self.channels_mlp_dim, name="channel_mixing", **mlp)
        self.drop_path = DropPath(self.drop_path_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        batch, tokens, channels = input_shape
        self.layer_norm_0.build(input_shape)
        self.token_mixing.build((batch, channels, tokens))
        self.layer_norm_1.build(input_shape)
        self.channel_mixing.build(input_shape)

    def call(self, x, training=None):
        # Each norm's output in its MLP's compute dtype (bfloat16 under mixed precision): computed in float32,
        # rounded once by the norm, and the token mixing's transpose moves half the bytes.
        mlp_dtype = self.token_mixing.compute_dtype
        y = self.layer_norm_0(x, training=training, output_dtype=mlp_dtype)
        y = ops.transpose(y, (0, 2, 1))  # (batch, tokens, channels) -> (batch, channels, tokens)
        if token_residual_norm_applies(self, x, training):
            # The token MLP's bias, the transpose back, the residual add and LayerNorm_1 as one compiled
            # function (`keras_mixer.fused_residual`, which says why); the same function.
            y = self.token_mixing(y, training=training, output_bias=False)
            norm, bias = self.layer_norm_1, self.token_mixing.dense_1.bias
            gamma, beta, bias = (ops.convert_to_tensor(weight.value) for weight in (norm.gamma, norm.beta, bias))
            x, y = token_residual_layer_norm(x, y, bias, gamma, beta, norm.epsilon, mlp_dtype)
        else:
            y = self.token_mixing(y, training=training)
            y = ops.transpose(y, (0, 2, 1))  # (batch, channels, tokens) -> (batch, tokens, channels)
            x = x + ops.cast(self.drop_path(y, training=training), x.dtype)
            y = self.layer_norm_1(x, training=training, output_dtype=mlp_dtype)
        y = self.channel_mixing(y, training=training)
        return x + ops.cast(self.drop_path(y, training=training), x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)  # (batch, tokens, channels): both mixings are residual

    def get_config(self):
        return {
            **super().get_config(),
            "tokens_mlp_dim": self.tokens_mlp_dim,
            "channels_mlp_dim": self.channels_mlp_dim,
            "dropout_rate": self.dropout_rate,
            "drop_path_rate": self.drop_path_rate,
            "gelu_approximate": self.gelu_approximate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": self.activation,
        }
