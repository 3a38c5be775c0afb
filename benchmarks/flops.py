"""Analytic cost of a Mixer: multiply-accumulates per image, and the GEMM shapes they come from.

FLOPs per image = 2 x MACs of the stem (a patch-wise matmul), every block's token MLP (two
matmuls along the tokens, per channel) and channel MLP (two matmuls along the channels, per
token), and the head. LayerNorm, GELU, residual adds and pooling are a few FLOPs per element and
are left out, as timm and the paper leave them out.
"""


def gemm_shapes(config, batch_size=1):
    """The model's matmuls as (name, M, K, N, count) for a batch: `count` GEMMs of (M x K) @ (K x N).

    >>> [shape[:4] for shape in gemm_shapes({"image_size": 32, "patch_size": 16, "num_channels": 3,
    ...     "hidden_dim": 8, "tokens_mlp_dim": 2, "channels_mlp_dim": 16, "num_blocks": 1, "num_classes": 5})]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('stem', 4, 768, 8), ('token_mlp_in', 8, 4, 2), ('token_mlp_out', 8, 2, 4),
     ('channel_mlp_in', 4, 8, 16), ('channel_mlp_out', 4, 16, 8), ('head', 1, 8, 5)]
    """
    size, patch = _pair(config["image_size"]), _pair(config["patch_size"])
    tokens = (size[0] // patch[0]) * (size[1] // patch[1])
    channels, d_s, d_c = config["hidden_dim"], config["tokens_mlp_dim"], config["channels_mlp_dim"]
    blocks, n = config["num_blocks"], batch_size
    return [
        ("stem", n * tokens, patch[0] * patch[1] * config.get("num_channels", 3), channels, 1),
        ("token_mlp_in", n * channels, tokens, d_s, blocks),
        ("token_mlp_out", n * channels, d_s, tokens, blocks),
        ("channel_mlp_in", n * tokens, channels, d_c, blocks),
        ("channel_mlp_out", n * tokens, d_c, channels, blocks),
        ("head", n, channels, config.get("num_classes", 1000), 1),
    ]


def gemm_operands(config, batch_size=1, training=False):
    """The matmuls a forward pass (or with `training`, a train step) runs: (a shape, b shape, flags, count).

    `flags` are `tf.matmul`'s `transpose_a`/`transpose_b`. Training adds, per forward `(M x K) @ (K x N)`,
    the two matmuls of TensorFlow's gradient: the input's `dz @ w^T` and the kernel's `x^T @ dz`, each as
    many FLOPs as the forward one, so a step is 3x the forward FLOPs.

    >>> config = {"image_size": 32, "patch_size": 16, "num_channels": 3, "hidden_dim": 8,
    ...           "tokens_mlp_dim": 2, "channels_mlp_dim": 16, "num_blocks": 1, "num_classes": 5}
    >>> gemm_operands(config, 1, training=True)[:3]  # the stem: (4 x 768) @ (768 x 8) and its gradients
    ... # doctest: +NORMALIZE_WHITESPACE
    [((4, 768), (768, 8), {}, 1), ((4, 8), (768, 8), {'transpose_b': True}, 1),
     ((4, 768), (4, 8), {'transpose_a': True}, 1)]
    """
    operands = []
    for _, m, k, n, count in gemm_shapes(config, batch_size):
        operands.append(((m, k), (k, n), {}, count))
        if training:
            operands.append(((m, n), (k, n), {"transpose_b": True}, count))
            operands.append(((m, k), (m, n), {"transpose_a": True}, count))
    return operands


def flops_per_image(config):
    """Forward FLOPs of one image (2 x MACs). B/16 at 224: 12.60 GMACs (timm lists 12.61 GMACs for mixer_b16_224).

    >>> from keras_mixer.presets import preset_config
    >>> round(flops_per_image({**preset_config("mixer_b16"), "image_size": 224}) / 2e9, 2)
    12.6
    """
    return 2 * sum(m * k * n * count for _, m, k, n, count in gemm_shapes(config, 1))


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
