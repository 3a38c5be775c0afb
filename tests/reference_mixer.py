"""An independent float64 NumPy forward pass of the official Flax MLP-Mixer.

Written from the paper and the official `models_mixer.py` semantics, reading the official
checkpoint keys directly; it shares no code with `keras_mixer`, so agreeing with it means
something.
"""

import numpy as np


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, scale, bias, epsilon=1e-6):
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * scale + bias


def mlp(x, params, prefix):
    hidden = gelu_tanh(x @ params[f"{prefix}/Dense_0/kernel"] + params[f"{prefix}/Dense_0/bias"])
    return hidden @ params[f"{prefix}/Dense_1/kernel"] + params[f"{prefix}/Dense_1/bias"]


def patchify(images, patch):
    """(N, H, W, C) -> (N, S, P*P*C): non-overlapping patches in raster order, HWC inside."""
    n, h, w, c = images.shape
    grid = images.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, (h // patch) * (w // patch), patch * patch * c)


def official_tokens(params, images):
    """Token features after the pre-head LayerNorm: (N, S, C). Images are pixels in [0, 255]."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    kernel = params["stem/kernel"]
    patch = kernel.shape[0]
    x = (np.asarray(images, np.float64) - 127.5) / 127.5
    x = patchify(x, patch) @ kernel.reshape(-1, kernel.shape[-1]) + params["stem/bias"]
    block = 0
    while f"MixerBlock_{block}/LayerNorm_0/scale" in params:
        p = f"MixerBlock_{block}"
        y = layer_norm(x, params[f"{p}/LayerNorm_0/scale"], params[f"{p}/LayerNorm_0/bias"])
        x = x + mlp(y.swapaxes(1, 2), params, f"{p}/token_mixing").swapaxes(1, 2)
        y = layer_norm(x, params[f"{p}/LayerNorm_1/scale"], params[f"{p}/LayerNorm_1/bias"])
        x = x + mlp(y, params, f"{p}/channel_mixing")
        block += 1
    return layer_norm(x, params["pre_head_layer_norm/scale"], params["pre_head_layer_norm/bias"])


def official_logits(params, images):
    tokens = official_tokens(params, images)
    return tokens.mean(axis=1) @ np.asarray(params["head/kernel"], np.float64) + params["head/bias"]


def random_official_checkpoint(rng, *, patch, channels, hidden, tokens, tokens_mlp, channels_mlp, blocks, classes):
    """A random weight set with the official key names and Flax layouts (float32)."""

    def normal(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    params = {"stem/kernel": normal(patch, patch, channels, hidden, scale=0.05), "stem/bias": normal(hidden)}
    for i in range(blocks):
        p = f"MixerBlock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            params[f"{p}/{norm}/scale"] = 1.0 + normal(hidden, scale=0.1)
            params[f"{p}/{norm}/bias"] = normal(hidden, scale=0.1)
        for name, width, dim in (("token_mixing", tokens, tokens_mlp), ("channel_mixing", hidden, channels_mlp)):
            params[f"{p}/{name}/Dense_0/kernel"] = normal(width, dim, scale=width**-0.5)
            params[f"{p}/{name}/Dense_0/bias"] = normal(dim, scale=0.1)
            params[f"{p}/{name}/Dense_1/kernel"] = normal(dim, width, scale=dim**-0.5)
            params[f"{p}/{name}/Dense_1/bias"] = normal(width, scale=0.1)
    params["pre_head_layer_norm/scale"] = 1.0 + normal(hidden, scale=0.1)
    params["pre_head_layer_norm/bias"] = normal(hidden, scale=0.1)
    params["head/kernel"] = normal(hidden, classes, scale=hidden**-0.5)
    params["head/bias"] = normal(classes, scale=0.1)
    return params
