"""The token mixing's way back into the residual stream, and the norm after it, as one compiled function.

In a MixerBlock the token MLP's output (batch, channels, tokens) gets its second Dense's bias, is transposed
back to (batch, tokens, channels), added to the residual stream, and normalised by `LayerNorm_1` for the
channel MLP. In a training step on TensorFlow that is a matmul fused with its bias, a transpose, an add and
the compiled norm, and the gradient as many again (the bias's sum, a transpose, the residual's two gradients
added, the norm's). Here, in training where the norm trains compiled (`fused_norm.compiled_training_applies`),
the matmul runs alone and `token_residual_layer_norm` does the rest as one XLA-compiled function, its gradient
as another: the same function, the sum in float32 and rounded once. Measured with
`python -m benchmarks.training_matmul_ab --change residual` (README "Performance").

Only where the branch has neither dropout nor stochastic depth (`token_residual_norm_applies`): both are
applied to the branch before the add, which this form leaves out.
"""

import functools

from keras_mixer.fused_norm import _normalized, compiled_training_applies, in_compute_dtype, norm_gradients

_SWAP_LAST_TWO = (0, 2, 1)  # (batch, channels, tokens) <-> (batch, tokens, channels)


def token_residual_norm_applies(block, x, training):
    """Whether `block` (a MixerBlock) adds its token mixing to `x` with `token_residual_layer_norm` in this call.

    All must hold: its `LayerNorm_1` trains compiled on `x` (`compiled_training_applies`), and its token MLP
    has no dropout and the block no stochastic depth.
    """
    return (
        compiled_training_applies(block.layer_norm_1, x, training)
        and block.token_mixing.dropout_rate == 0
        and block.drop_path.rate == 0
    )


def token_residual_layer_norm(residual, branch, bias, gamma, beta, epsilon, output_dtype):
    """(residual + T(branch + bias), its layer norm over the last axis in `output_dtype`) as one compiled call.

    `residual` is (batch, tokens, channels); `branch` is the token MLP's output without its bias, (batch,
    channels, tokens), and `bias` its bias, along tokens; T swaps the last two axes. The sum is computed in
    float32 (float64 for a float64 branch), returned in `residual`'s dtype and normalised before it is rounded.
    The gradient (for all five inputs) is one compiled function too: the residual's gradient plus the norm's,
    transposed for the branch and summed for the bias. TensorFlow only.

    Example:
    >>> import tensorflow as tf
    >>> residual, branch = tf.zeros((1, 1, 3)), tf.constant([[[1.0], [2.0], [3.0]]])  # one token, 3 channels
    >>> summed, normalized = token_residual_layer_norm(residual, branch, tf.zeros(1), tf.ones(3), tf.zeros(3),
    ...                                                1e-6, tf.float32)
    >>> [float(v) for v in summed[0, 0]], [round(float(v), 4) for v in normalized[0, 0]]
    ([1.0, 2.0, 3.0], [-1.2247, 0.0, 1.2247])
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    return _compiled_token_residual_norm(float(epsilon), tf.as_dtype(output_dtype))(residual, branch, bias, gamma, beta)


@functools.cache
def _compiled_token_residual_norm(epsilon, output_dtype):
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow backend only)

    @tf.function(jit_compile=True, autograph=False)
    def forward(residual, branch, bias, gamma, beta):
        branch = in_compute_dtype(branch)
        summed = tf.cast(residual, branch.dtype) + tf.transpose(branch + tf.cast(bias, branch.dtype), _SWAP_LAST_TWO)
        normalized, mean, inverse_std = _normalized(summed, gamma, beta, epsilon)
        return tf.cast(summed, residual.dtype), tf.cast(normalized, output_dtype), mean, inverse_std

    @tf.function(jit_compile=True, autograph=False)
    def backward(summed, gamma, mean, inverse_std, summed_upstream, normalized_upstream, branch_dtype, bias_dtype):
        dx, dgamma, dbeta = norm_gradients(in_compute_dtype(summed), gamma, mean, inverse_std, normalized_upstream)
        d_summed = dx + in_compute_dtype(summed_upstream)
        d_branch = tf.transpose(d_summed, _SWAP_LAST_TWO)
        d_bias = tf.reduce_sum(d_branch, axis=[0, 1])
        return (
            tf.cast(d_summed, summed.dtype),
            tf.cast(d_branch, branch_dtype),
            tf.cast(d_bias, bias_dtype),
            tf.cast(dgamma, gamma.dtype),
            tf.cast(dbeta, gamma.dtype),
        )

    @tf.custom_gradient
    def residual_norm(residual, branch, bias, gamma, beta):
        summed, normalized, mean, inverse_std = forward(residual, branch, bias, gamma, beta)

        def gradient(summed_upstream, normalized_upstream):
            return backward(
                summed, gamma, mean, inverse_std, summed_upstream, normalized_upstream, branch.dtype, bias.dtype
            )

        return (summed, normalized), gradient

    return residual_norm
