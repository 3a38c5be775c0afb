"""Official JAX/Flax checkpoints (.npz) <-> Keras weights, and the paper's resolution change.

What lives here:
- `read_official_checkpoint`: a safe reader (no pickles, no object arrays) returning {key: array}.
- `official_variables`: the rename table, official key -> the model's Keras variable.
- `load_official_weights` / `save_official_weights`: all-or-nothing load, and the inverse.
- `resize_token_mixing` (a weight set) and `change_resolution` (a model): Appendix C of the
  paper, block-diagonal token-mixing weights for an integer up-scaling factor K.
- `interpolate_token_mixing`: the explicit alternative for any other size (not the paper's
  scheme): token-mixing weights resampled bilinearly as 2-D grids over the token grid.

Layouts agree with Keras without transposes: Flax Dense kernels are (in, out), Flax convs HWIO,
LayerNorm `scale`/`bias` are Keras `gamma`/`beta`.
"""

import math
import os
import warnings
import zipfile

import keras
import numpy as np

from keras_mixer.arguments import validate_size_pairs
from keras_mixer.atomic import atomic_path

HEAD_KEYS = ("head/kernel", "head/bias")
# How token-mixing weights follow a new token grid: the paper's Appendix C (integer factor);
# bilinear resampling of the weights as 2-D grids (any size; not the paper's scheme); or "reinit",
# which keeps the model's random token-indexed weights, as a loader that skips shape mismatches
# would (a baseline to compare the other two with).
TOKEN_MIXING_RESIZES = ("appendix_c", "interpolate", "reinit")
# The token-mixing weights whose shape depends on the number of tokens S.
TOKEN_INDEXED_SUFFIXES = ("token_mixing/Dense_0/kernel", "token_mixing/Dense_1/kernel", "token_mixing/Dense_1/bias")


def check_token_mixing_resize(token_mixing_resize):
    """`token_mixing_resize` if it is one of `TOKEN_MIXING_RESIZES`, else one `ValueError`."""
    if token_mixing_resize not in TOKEN_MIXING_RESIZES:
        raise ValueError(
            f"`token_mixing_resize` must be one of {TOKEN_MIXING_RESIZES}. "
            f"Received: token_mixing_resize={token_mixing_resize!r}"
        )
    return token_mixing_resize


def read_official_checkpoint(path):
    """Read an official Mixer .npz into {key: np.ndarray} without ever unpickling.

    Raises `ValueError` when the file does not exist, is not an .npz archive, or holds object
    (pickled) arrays.

    Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> np.savez(path, **{"stem/bias": np.zeros(4, "float32")})
    >>> read_official_checkpoint(path)["stem/bias"].shape
    (4,)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file not found. Expected an official Mixer .npz. Received: path={path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Not an .npz checkpoint (not a zip archive of arrays). Expected an official Mixer .npz "
            f"such as 'Mixer-B_16.npz'. Received: path={path!r}"
        )
    params = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                params[key] = archive[key]
    except ValueError as error:  # numpy refuses object arrays when allow_pickle=False
        raise ValueError(
            f"Refusing to load {path!r}: it holds object (pickled) arrays, and loading those "
            f"could execute code. Official checkpoints hold numeric arrays only. ({error})"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"Could not read {path!r} as an .npz checkpoint: {error}") from None
    return params


def _block_keys(index, block):
    prefix = f"MixerBlock_{index}"
    table = {}
    for norm_name, norm in (("LayerNorm_0", block.layer_norm_0), ("LayerNorm_1", block.layer_norm_1)):
        table[f"{prefix}/{norm_name}/scale"] = norm.gamma
        table[f"{prefix}/{norm_name}/bias"] = norm.beta
    for mlp_name, mlp in (("token_mixing", block.token_mixing), ("channel_mixing", block.channel_mixing)):
        for dense_name, dense in (("Dense_0", mlp.dense_0), ("Dense_1", mlp.dense_1)):
            table[f"{prefix}/{mlp_name}/{dense_name}/kernel"] = dense.kernel
            table[f"{prefix}/{mlp_name}/{dense_name}/bias"] = dense.bias
    return table


def official_variables(model):
    """The rename table: {official checkpoint key: the model's Keras variable}.

    Example:
    >>> from keras_mixer import MLPMixer
    >>> m = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16,
    ...              image_size=32, patch_size=16, num_classes=3)
    >>> tuple(official_variables(m)["MixerBlock_0/token_mixing/Dense_0/kernel"].shape)
    (4, 4)
    """
    stem = model.get_layer("stem")
    table = {"stem/kernel": stem.kernel, "stem/bias": stem.bias}
    for index, block in enumerate(model.mixer_blocks):
        table.update(_block_keys(index, block))
    norm = model.get_layer("pre_head_layer_norm")
    table["pre_head_layer_norm/scale"] = norm.gamma
    table["pre_head_layer_norm/bias"] = norm.beta
    if model.include_top:
        head = model.get_layer("head")
        table["head/kernel"] = head.kernel
        table["head/bias"] = head.bias
    return table


def resolution_factor(params, grid_size):
    """K such that a model with token grid `grid_size` has K² times the checkpoint's tokens.

    Returns `(old_grid, K)`; raises `ValueError` saying what is supported when the grid is not
    the checkpoint's grid scaled by one integer K on both sides.

    Example:
    >>> import numpy as np
    >>> resolution_factor({"MixerBlock_0/token_mixing/Dense_0/kernel": np.zeros((196, 384))}, (28, 28))
    ((14, 14), 2)
    """
    checkpoint_tokens = params["MixerBlock_0/token_mixing/Dense_0/kernel"].shape[0]
    rows, cols = grid_size
    factor = math.isqrt((rows * cols) // checkpoint_tokens) if checkpoint_tokens else 0
    if factor < 1 or factor * factor * checkpoint_tokens != rows * cols or rows % factor or cols % factor:
        raise ValueError(
            "Resolution change supports only an integer factor K on both sides (tokens S' = K^2 * S, "
            f"paper Appendix C). The checkpoint has S={checkpoint_tokens} tokens; the model's token "
            f"grid is {rows}x{cols}={rows * cols}. To resample the token-mixing weights as 2-D grids "
            "instead (any size; not the paper's scheme), pass token_mixing_resize='interpolate' "
            "(CLI: --token-mixing-resize interpolate)."
        )
    return (rows // factor, cols // factor), factor


def _token_mixing_prefixes(params, old_grid):
    """`MixerBlock_i/token_mixing/` for every token-mixing MLP in `params`, each checked to have
    the tokens of `old_grid`."""
    height, width = old_grid
    for key, kernel in params.items():
        if key.endswith("token_mixing/Dense_0/kernel"):
            if kernel.shape[0] != height * width:
                raise ValueError(f"{key} has {kernel.shape[0]} tokens, but old_grid={old_grid} has {height * width}.")
            yield key[: -len("Dense_0/kernel")]


def resize_token_mixing(params, old_grid, factor):
    """Appendix C: token-mixing weights for a K-times larger token grid, as block-diagonal copies.

    The new grid (K·h, K·w) is split into K×K sub-grids of the old size (h, w). In the raster
    token order the stem produces, token (r, c) belongs to sub-grid (r // h, c // w) at in-block
    position (r % h)·w + (c % w). The new Dense_0 kernel (S', K²·D_S) and Dense_1 kernel
    (K²·D_S, S') hold one copy of the old kernels per sub-grid, biases tiled, so the resized
    network applies the pretrained MLP to every sub-grid independently. All other weights are
    returned unchanged.

    Args:
        params: {official key: array}, e.g. from `read_official_checkpoint`.
        old_grid: (h, w), the token grid the weights were trained with.
        factor: K, a positive integer.

    Example:
    >>> import numpy as np
    >>> p = {"MixerBlock_0/token_mixing/Dense_0/kernel": np.ones((4, 3)),
    ...      "MixerBlock_0/token_mixing/Dense_0/bias": np.zeros(3),
    ...      "MixerBlock_0/token_mixing/Dense_1/kernel": np.ones((3, 4)),
    ...      "MixerBlock_0/token_mixing/Dense_1/bias": np.zeros(4)}
    >>> resize_token_mixing(p, (2, 2), 2)["MixerBlock_0/token_mixing/Dense_0/kernel"].shape
    (16, 12)
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(
            f"The resolution-change factor must be a positive integer (new size = K x old size). "
            f"Received: factor={factor!r}"
        )
    height, width = old_grid
    new_rows = np.arange(factor * height)[:, None]
    new_cols = np.arange(factor * width)[None, :]
    # For every new token in raster order: which sub-grid, and which old token inside it.
    subgrid = ((new_rows // height) * factor + new_cols // width).reshape(-1)
    position = ((new_rows % height) * width + new_cols % width).reshape(-1)
    new_tokens = subgrid.size

    resized = dict(params)
    for prefix in _token_mixing_prefixes(params, old_grid):
        kernel_0, bias_0 = params[prefix + "Dense_0/kernel"], params[prefix + "Dense_0/bias"]
        kernel_1, bias_1 = params[prefix + "Dense_1/kernel"], params[prefix + "Dense_1/bias"]
        mlp_dim = kernel_0.shape[1]
        new_kernel_0 = np.zeros((new_tokens, factor * factor * mlp_dim), kernel_0.dtype)
        new_kernel_1 = np.zeros((factor * factor * mlp_dim, new_tokens), kernel_1.dtype)
        for token in range(new_tokens):
            hidden = slice(subgrid[token] * mlp_dim, (subgrid[token] + 1) * mlp_dim)
            new_kernel_0[token, hidden] = kernel_0[position[token]]
            new_kernel_1[hidden, token] = kernel_1[:, position[token]]
        resized[prefix + "Dense_0/kernel"] = new_kernel_0
        resized[prefix + "Dense_0/bias"] = np.tile(bias_0, factor * factor)
        resized[prefix + "Dense_1/kernel"] = new_kernel_1
        resized[prefix + "Dense_1/bias"] = bias_1[position]
    return resized


def bilinear_matrix(new_size, old_size):
    """(new_size, old_size) weights of 1-D linear resampling with half-pixel centres.

    Row i samples the old axis at (i + 0.5) · old / new - 0.5, clamped to the edge samples: the
    convention of `tf.image.resize(..., "bilinear")` and `jax.image.resize` without antialiasing.

    Example:
    >>> bilinear_matrix(4, 2)
    array([[1.  , 0.  ],
           [0.75, 0.25],
           [0.25, 0.75],
           [0.  , 1.  ]])
    """
    position = np.clip((np.arange(new_size) + 0.5) * old_size / new_size - 0.5, 0, old_size - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, old_size - 1)
    fraction = position - lower
    matrix = np.zeros((new_size, old_size))
    np.add.at(matrix, (np.arange(new_size), lower), 1 - fraction)
    np.add.at(matrix, (np.arange(new_size), upper), fraction)
    return matrix


def interpolate_token_mixing(params, old_grid, new_grid):
    """Token-mixing weights for another token grid, resampled as 2-D images (not the paper's scheme).

    Each token-indexed axis is reshaped to the (h, w) grid and resampled bilinearly to the new grid
    (`bilinear_matrix` on both axes): Dense_0's kernel rows (S, D_S) -> (S', D_S), Dense_1's kernel
    columns (D_S, S) -> (D_S, S') and its bias (S,) -> (S',). Dense_0's kernel is also scaled by
    S / S', so a spatially smooth input gives the hidden units the same pre-activations as before
    (a sum over S' tokens replaces a sum over S). `tokens_mlp_dim` is unchanged; all other weights
    are returned unchanged.

    Example:
    >>> import numpy as np
    >>> p = {"MixerBlock_0/token_mixing/Dense_0/kernel": np.ones((4, 3)),
    ...      "MixerBlock_0/token_mixing/Dense_0/bias": np.zeros(3),
    ...      "MixerBlock_0/token_mixing/Dense_1/kernel": np.ones((3, 4)),
    ...      "MixerBlock_0/token_mixing/Dense_1/bias": np.zeros(4)}
    >>> interpolate_token_mixing(p, (2, 2), (3, 3))["MixerBlock_0/token_mixing/Dense_0/kernel"].shape
    (9, 3)
    """
    (height, width), (new_height, new_width) = tuple(old_grid), tuple(new_grid)
    rows, cols = bilinear_matrix(new_height, height), bilinear_matrix(new_width, width)
    scale = (height * width) / (new_height * new_width)

    def resample(tokens_last):  # (..., h * w) -> (..., h' * w')
        grid = tokens_last.reshape(*tokens_last.shape[:-1], height, width)
        resampled = np.einsum("ah,...hw,bw->...ab", rows, grid, cols)
        return resampled.reshape(*tokens_last.shape[:-1], new_height * new_width)

    resized = dict(params)
    for prefix in _token_mixing_prefixes(params, old_grid):
        kernel_0, kernel_1 = params[prefix + "Dense_0/kernel"], params[prefix + "Dense_1/kernel"]
        bias_1 = params[prefix + "Dense_1/bias"]
        resized[prefix + "Dense_0/kernel"] = (scale * resample(kernel_0.T).T).astype(kernel_0.dtype)
        resized[prefix + "Dense_1/kernel"] = resample(kernel_1).astype(kernel_1.dtype)
        resized[prefix + "Dense_1/bias"] = resample(bias_1).astype(bias_1.dtype)
    return resized


def checkpoint_grid(params, grid_size, token_mixing_resize):
    """The token grid the checkpoint was trained with, for a model with token grid `grid_size`.

    With "appendix_c" it is the model's grid divided by the integer factor K; with "interpolate"
    it is taken as square (all published checkpoints are); "reinit" needs none.
    """
    if token_mixing_resize == "appendix_c":
        return resolution_factor(params, grid_size)[0]
    tokens = params["MixerBlock_0/token_mixing/Dense_0/kernel"].shape[0]
    if token_mixing_resize == "reinit":
        return grid_size  # nothing is resampled
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(
            f"token_mixing_resize='interpolate' needs a square token grid in the checkpoint; it has {tokens} tokens."
        )
    return (side, side)


def _head_is_loadable(params, table):
    if not all(key in params for key in HEAD_KEYS):
        return False, "the checkpoint has no head"
    if "head/kernel" not in table:
        return False, "the model was built with include_top=False"
    want, have = tuple(table["head/kernel"].shape), params["head/kernel"].shape
    if want != have:
        return False, f"the model's head is {want} but the checkpoint's is {have} (num_classes differs)"
    return True, ""


def _fit_token_grid(params, model, token_mixing_resize):
    """`params` for the model's token grid, and the keys the model keeps its own values for."""
    token_kernel = params.get("MixerBlock_0/token_mixing/Dense_0/kernel")
    if token_kernel is None or token_kernel.shape[0] == model.num_tokens:
        return params, set()
    old_grid = checkpoint_grid(params, model.grid_size, token_mixing_resize)
    factor = model.grid_size[0] // old_grid[0]
    appendix_c = token_mixing_resize == "appendix_c"
    needed = factor * factor * token_kernel.shape[1] if appendix_c else token_kernel.shape[1]
    if model.tokens_mlp_dim != needed:
        raise ValueError(
            f"token_mixing_resize={token_mixing_resize!r} to the model's {model.grid_size} token grid needs "
            f"tokens_mlp_dim={needed} (Appendix C: K^2 * D_S, one copy of the token MLP per sub-grid; otherwise "
            f"the checkpoint's D_S). Build it with `MLPMixer.from_preset(..., weights=...)` or "
            f"`change_resolution(model, image_size)`. Received: tokens_mlp_dim={model.tokens_mlp_dim}"
        )
    if appendix_c:
        return resize_token_mixing(params, old_grid, factor), set()
    if token_mixing_resize == "interpolate":
        return interpolate_token_mixing(params, old_grid, model.grid_size), set()
    return params, {key for key in params if key.endswith(TOKEN_INDEXED_SUFFIXES)}


def load_official_weights(model, checkpoint, allow_resize=False, token_mixing_resize="appendix_c", allow_partial=False):
    """Load an official Mixer checkpoint into `model`, all or nothing.

    Every key and shape is checked before any variable changes; a problem raises one
    `ValueError` naming the key and both shapes, and the model keeps its weights. The head is
    skipped, with a warning, when `include_top=False` or its class count differs.

    Args:
        model: an `MLPMixer`.
        checkpoint: the path of an .npz, or a {key: array} dict with official keys.
        allow_resize: allow a model whose token grid differs from the checkpoint's (same
            patch size) and build its token-mixing weights as `token_mixing_resize` says.
        token_mixing_resize: "appendix_c" (the paper's: K² times the checkpoint's tokens, K an
            integer, `tokens_mlp_dim` = K²·D_S), "interpolate" (any grid, same `tokens_mlp_dim`;
            not the paper's scheme, see `interpolate_token_mixing`) or "reinit" (the
            token-indexed weights keep the model's random values; a baseline).
        allow_partial: ignore checkpoint keys the model has no variable for (extra blocks, say);
            by default they are an error, since they usually mean the wrong preset.

    Example:
    >>> from keras_mixer import MLPMixer
    >>> m = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16,
    ...              image_size=32, patch_size=16, num_classes=3)
    >>> params = save_official_weights(m)
    >>> load_official_weights(m, params)
    """
    params = checkpoint if isinstance(checkpoint, dict) else read_official_checkpoint(checkpoint)
    table = official_variables(model)

    stem = params.get("stem/kernel")
    if stem is not None and tuple(stem.shape[:2]) != tuple(model.patch_size):
        raise ValueError(
            f"Patch size mismatch: the checkpoint's stem/kernel {stem.shape} has patch "
            f"{tuple(stem.shape[:2])} but the model has patch_size={model.patch_size}. Only the "
            "checkpoint's own patch size is supported (resolution change keeps the patch size)."
        )
    check_token_mixing_resize(token_mixing_resize)
    kept = set()  # keys whose model values stay (token_mixing_resize="reinit")
    if allow_resize:
        params, kept = _fit_token_grid(params, model, token_mixing_resize)

    load_head, why_not = _head_is_loadable(params, table)
    assignments = []
    for key, variable in table.items():
        if (key in HEAD_KEYS and not load_head) or key in kept:
            continue
        if key not in params:
            raise ValueError(
                f"Checkpoint is missing key {key!r} (expected shape {tuple(variable.shape)}); no weights were changed."
            )
        value = np.asarray(params[key])
        if value.shape != tuple(variable.shape):
            raise ValueError(
                f"Shape mismatch for {key!r}: the model expects {tuple(variable.shape)}, the checkpoint "
                f"has {value.shape}; no weights were changed."
            )
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"{key!r} holds NaN or infinite values ({int(np.size(value) - np.isfinite(value).sum())} of "
                f"{np.size(value)}): the checkpoint is corrupt; no weights were changed."
            )
        assignments.append((variable, value))
    unused = sorted(set(params) - set(table) - set(HEAD_KEYS))
    if unused and not allow_partial:
        raise ValueError(
            f"The checkpoint has {len(unused)} key(s) the model has no variable for, e.g. {unused[:3]}: a different "
            "architecture (more blocks?) than the model's. Build the matching model, or pass allow_partial=True to "
            "load the rest; no weights were changed."
        )
    if not load_head:
        warnings.warn(f"Loaded every weight except the head: {why_not}.", stacklevel=2)
    for variable, value in assignments:
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))


def save_official_weights(model, path=None):
    """The model's weights under official checkpoint keys; also written to `path` (.npz) if given.

    The write is atomic: a temporary file in the same folder, then a rename.

    Example:
    >>> from keras_mixer import MLPMixer
    >>> m = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16,
    ...              image_size=32, patch_size=16, num_classes=3)
    >>> sorted(save_official_weights(m))[:2]
    ['MixerBlock_0/LayerNorm_0/bias', 'MixerBlock_0/LayerNorm_0/scale']
    """
    params = {key: keras.ops.convert_to_numpy(variable) for key, variable in official_variables(model).items()}
    if path is not None:
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, **params)  # to a file object: no ".npz" appended to the name
    return params


def change_resolution(model, image_size, token_mixing_resize="appendix_c"):
    """A copy of `model` for another `image_size`, token mixing resized (Appendix C by default).

    Args:
        model: an `MLPMixer`.
        image_size: int or (h, w). With "appendix_c", an integer multiple K of the model's size
            on both sides (the same K); with "interpolate", any size the patch size divides.
        token_mixing_resize: "appendix_c" (the paper's), "interpolate" (not the paper's; see
            `interpolate_token_mixing`) or "reinit" (random token-indexed weights; a baseline).

    Example:
    >>> from keras_mixer import MLPMixer
    >>> m = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16,
    ...              image_size=32, patch_size=16, num_classes=3)
    >>> change_resolution(m, 64).num_tokens
    16
    """
    config = {**model.get_config(), "image_size": image_size}
    config.pop("name")
    params = save_official_weights(model)
    config = resized_config(config, params, token_mixing_resize)
    resized = type(model).from_config(config)
    load_official_weights(resized, params, allow_resize=True, token_mixing_resize=token_mixing_resize)
    return resized


def resized_config(config, params, token_mixing_resize="appendix_c"):
    """`config` with the `tokens_mlp_dim` and `num_channels` that `params` fit.

    `tokens_mlp_dim` is K² · D_S when the image is K times the checkpoint's and the resize is
    "appendix_c", else the checkpoint's D_S; `num_channels` is the checkpoint stem's.

    Example:
    >>> import numpy as np
    >>> params = {"MixerBlock_0/token_mixing/Dense_0/kernel": np.zeros((4, 3))}
    >>> resized_config({"image_size": 64, "patch_size": 16, "tokens_mlp_dim": 3}, params)["tokens_mlp_dim"]
    12
    """
    check_token_mixing_resize(token_mixing_resize)
    image_size, patch_size = validate_size_pairs(config["image_size"], config["patch_size"])
    grid = tuple(s // p for s, p in zip(image_size, patch_size))
    tokens_mlp_dim = params["MixerBlock_0/token_mixing/Dense_0/kernel"].shape[1]
    if token_mixing_resize == "appendix_c":
        _, factor = resolution_factor(params, grid)
        tokens_mlp_dim *= factor * factor
    else:
        checkpoint_grid(params, grid, token_mixing_resize)
    resized = {**config, "tokens_mlp_dim": tokens_mlp_dim}
    if "stem/kernel" in params:
        resized["num_channels"] = int(params["stem/kernel"].shape[2])
    return resized
