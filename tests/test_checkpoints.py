import functools
import os
import warnings

import keras
import numpy as np
import pytest

from keras_mixer import (
    MLPMixer,
    change_resolution,
    interpolate_token_mixing,
    load_official_weights,
    read_official_checkpoint,
    resize_token_mixing,
    save_official_weights,
)
from tests.model_checks import CONFIG, SIZES, random_images
from tests.reference_mixer import official_logits, random_official_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    params = random_official_checkpoint(np.random.default_rng(0), **SIZES)
    path = tmp_path / "Mixer-T_8.npz"
    np.savez(path, **params)
    return params, path


_images = functools.partial(random_images, size=32, seed=1)


def _weights(model):
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def test_logits_equal_an_independent_float64_numpy_forward_pass(checkpoint):
    params, path = checkpoint
    model = MLPMixer(**CONFIG)
    load_official_weights(model, path)
    images = _images(4)
    expected = official_logits(params, images)
    np.testing.assert_allclose(
        model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )
    assert np.abs(expected).max() > 0.5  # not a degenerate comparison of near-zeros


def test_exact_gelu_differs_from_the_official_tanh_gelu(checkpoint):
    params, path = checkpoint
    model = MLPMixer(**CONFIG, gelu_approximate=False)
    load_official_weights(model, path)
    difference = np.abs(model.predict(_images(4), verbose=0) - official_logits(params, _images(4))).max()
    assert difference > 1e-4  # the parity test above would notice the wrong GELU


def test_roundtrip_through_save_official_weights(checkpoint, tmp_path):
    params, path = checkpoint
    model = MLPMixer(**CONFIG)
    load_official_weights(model, path)
    out = tmp_path / "again.npz"
    saved = save_official_weights(model, out)
    assert sorted(saved) == sorted(params) == sorted(read_official_checkpoint(out))
    for key in params:
        np.testing.assert_array_equal(saved[key], params[key])


@pytest.mark.parametrize("overrides", [{"num_classes": 7}, {"include_top": False}])
def test_different_head_loads_everything_else_with_a_warning(checkpoint, overrides):
    params, path = checkpoint
    model = MLPMixer(**{**CONFIG, **overrides})
    with pytest.warns(UserWarning, match="except the head"):
        load_official_weights(model, path)
    loaded = save_official_weights(model)
    assert set(params) - set(loaded) <= {"head/kernel", "head/bias"}
    for key in set(params) - {"head/kernel", "head/bias"}:
        np.testing.assert_array_equal(loaded[key], params[key])


def test_missing_key_raises_and_changes_nothing(checkpoint, tmp_path):
    params, _ = checkpoint
    broken = {k: v for k, v in params.items() if k != "MixerBlock_1/channel_mixing/Dense_1/bias"}
    model = MLPMixer(**CONFIG)
    before = _weights(model)
    with pytest.raises(
        ValueError, match=r"missing key 'MixerBlock_1/channel_mixing/Dense_1/bias' \(expected shape \(12,\)\)"
    ):
        load_official_weights(model, broken)
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)


def test_shape_mismatch_names_key_and_both_shapes_and_changes_nothing(checkpoint):
    params, _ = checkpoint
    broken = dict(params)
    broken["MixerBlock_1/channel_mixing/Dense_0/kernel"] = np.zeros((12, 25), "float32")
    model = MLPMixer(**CONFIG)
    before = _weights(model)
    with pytest.raises(
        ValueError, match=r"'MixerBlock_1/channel_mixing/Dense_0/kernel'.*expects \(12, 24\).*has \(12, 25\)"
    ):
        load_official_weights(model, broken)
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)


def test_token_count_mismatch_without_resize_is_a_shape_error(checkpoint):
    _, path = checkpoint
    with pytest.raises(ValueError, match=r"token_mixing/Dense_0/kernel'.*expects \(64, 6\).*has \(16, 6\)"):
        load_official_weights(MLPMixer(**{**CONFIG, "image_size": 64}), path)


def test_not_an_npz_is_refused(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="Not an .npz checkpoint"):
        read_official_checkpoint(text)
    with pytest.raises(ValueError, match="not found"):
        read_official_checkpoint(tmp_path / "absent.npz")


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"stem/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="object \\(pickled\\) arrays"):
        read_official_checkpoint(path)


def test_patch_size_mismatch_says_what_is_supported(checkpoint):
    _, path = checkpoint
    with pytest.raises(ValueError, match=r"Patch size mismatch.*patch \(8, 8\).*patch_size=\(16, 16\)"):
        load_official_weights(MLPMixer(**{**CONFIG, "patch_size": 16}), path, allow_resize=True)


# --- resolution change (paper Appendix C) ---------------------------------------------------


def _tile(tiles, rows, cols):
    """Stitch rows x cols images into one: tile (i, j) at block row i, column j."""
    return np.concatenate([np.concatenate(tiles[i * cols : (i + 1) * cols], axis=2) for i in range(rows)], axis=1)


def test_resized_token_mixing_applies_the_old_mlp_to_every_subgrid(checkpoint):
    params, path = checkpoint
    small = MLPMixer(**{**CONFIG, "include_top": False, "pooling": None})
    with pytest.warns(UserWarning, match="except the head"):
        load_official_weights(small, path, allow_resize=True)
    big = MLPMixer(**{**CONFIG, "image_size": 64, "tokens_mlp_dim": 4 * 6, "include_top": False, "pooling": None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_official_weights(big, path, allow_resize=True)
    tiles = [_images(1, seed=10 + i) for i in range(4)]  # four different 32x32 tiles
    big_tokens = big.predict(_tile(tiles, 2, 2), verbose=0)[0].reshape(8, 8, -1)  # 8x8 token grid
    for index, tile in enumerate(tiles):
        r, c = divmod(index, 2)
        expected = small.predict(tile, verbose=0)[0].reshape(4, 4, -1)
        np.testing.assert_allclose(big_tokens[4 * r : 4 * r + 4, 4 * c : 4 * c + 4], expected, rtol=1e-4, atol=1e-4)


def test_resize_block_structure_on_a_rectangular_grid():
    rng = np.random.default_rng(3)
    kernel_0, kernel_1 = rng.standard_normal((6, 4)), rng.standard_normal((4, 6))  # old grid 2x3, D_S = 4
    bias_0, bias_1 = rng.standard_normal(4), rng.standard_normal(6)
    prefix = "MixerBlock_0/token_mixing/"
    params = {
        prefix + "Dense_0/kernel": kernel_0,
        prefix + "Dense_0/bias": bias_0,
        prefix + "Dense_1/kernel": kernel_1,
        prefix + "Dense_1/bias": bias_1,
        "stem/bias": np.ones(3),
    }
    new = resize_token_mixing(params, (2, 3), 3)  # new grid 6x9 = 54 tokens, 9 sub-grids
    tokens = rng.standard_normal((6, 9, 5))  # (rows, cols, channels), raster order when flattened
    flat = tokens.reshape(54, 5)
    hidden = flat.T @ new[prefix + "Dense_0/kernel"] + new[prefix + "Dense_0/bias"]
    mixed = (hidden @ new[prefix + "Dense_1/kernel"] + new[prefix + "Dense_1/bias"]).T.reshape(6, 9, 5)
    for r in range(3):
        for c in range(3):
            block = tokens[2 * r : 2 * r + 2, 3 * c : 3 * c + 3].reshape(6, 5)
            expected = ((block.T @ kernel_0 + bias_0) @ kernel_1 + bias_1).T.reshape(2, 3, 5)
            np.testing.assert_allclose(mixed[2 * r : 2 * r + 2, 3 * c : 3 * c + 3], expected, atol=1e-10)
    np.testing.assert_array_equal(new["stem/bias"], params["stem/bias"])


@pytest.mark.parametrize("factor", [0, -2, 1.5, True])
def test_resize_rejects_a_factor_that_is_not_a_positive_integer(factor):
    with pytest.raises(ValueError, match="positive integer"):
        resize_token_mixing({}, (2, 2), factor)


def test_resize_needs_k_squared_token_mlp_width(checkpoint):
    _, path = checkpoint
    with pytest.raises(
        ValueError, match=r"needs tokens_mlp_dim=24 \(Appendix C: K\^2 \* D_S.*Received: tokens_mlp_dim=6"
    ):
        load_official_weights(MLPMixer(**{**CONFIG, "image_size": 64}), path, allow_resize=True)


@pytest.mark.parametrize("image_size", [48, 16, (64, 32)])
def test_non_integer_or_unequal_factors_are_refused(checkpoint, image_size):
    _, path = checkpoint
    model = MLPMixer(**{**CONFIG, "image_size": image_size})
    with pytest.raises(ValueError, match=r"(?s)only an integer factor K.*S=16.*token_mixing_resize='interpolate'"):
        load_official_weights(model, path, allow_resize=True)


def test_change_resolution_of_a_model_keeps_its_predictions_on_tiled_input(checkpoint):
    _, path = checkpoint
    model = MLPMixer(**CONFIG)
    load_official_weights(model, path)
    bigger = change_resolution(model, 96)
    assert bigger.image_size == (96, 96) and bigger.num_tokens == 144
    image = _images(1)
    # Every sub-grid sees the same tile, so the mean-pooled logits are the original ones.
    np.testing.assert_allclose(
        bigger.predict(_tile([image] * 9, 3, 3), verbose=0), model.predict(image, verbose=0), rtol=1e-4, atol=1e-4
    )


def test_from_preset_with_weights_resizes(tmp_path):
    preset_sized = random_official_checkpoint(
        np.random.default_rng(5),
        patch=32,
        channels=3,
        hidden=512,
        tokens=4,
        tokens_mlp=256,
        channels_mlp=2048,
        blocks=8,
        classes=10,
    )
    path = tmp_path / "Mixer-S_32-small.npz"
    np.savez(path, **preset_sized)  # an S/32 checkpoint trained at 64 px (2x2 tokens)
    model = MLPMixer.from_preset("mixer_s32", num_classes=10, image_size=128, weights=os.fspath(path))
    assert model.num_tokens == 16
    kernel = keras.ops.convert_to_numpy(model.mixer_blocks[0].token_mixing.dense_0.kernel)
    assert kernel.shape == (16, 4 * 256)
    np.testing.assert_array_equal(kernel[0, :256], preset_sized["MixerBlock_0/token_mixing/Dense_0/kernel"][0])
    assert not kernel[0, 256:].any()


def _resize_reference(grid, size):
    """TensorFlow's own bilinear resize (half-pixel centres, no antialiasing): the independent reference."""
    import tensorflow as tf  # noqa: PLC0415

    return tf.image.resize(tf.constant(grid, tf.float64), size, method="bilinear", antialias=False).numpy()


@pytest.mark.parametrize("new_grid", [(6, 6), (8, 8), (3, 5)])
def test_interpolated_token_mixing_is_a_bilinear_resize_of_each_weight_grid(checkpoint, new_grid):
    params, _ = checkpoint
    resized = interpolate_token_mixing(params, (4, 4), new_grid)
    rows, cols = new_grid
    for block in range(SIZES["blocks"]):
        prefix = f"MixerBlock_{block}/token_mixing/"
        kernel_0 = params[prefix + "Dense_0/kernel"]  # (S, D_S) -> grid (4, 4, D_S)
        expected_0 = (
            _resize_reference(kernel_0.reshape(4, 4, -1), new_grid).reshape(rows * cols, -1) * 16 / (rows * cols)
        )
        np.testing.assert_allclose(resized[prefix + "Dense_0/kernel"], expected_0, rtol=1e-5, atol=1e-6)
        kernel_1 = params[prefix + "Dense_1/kernel"]  # (D_S, S) -> grid (4, 4, D_S)
        expected_1 = _resize_reference(kernel_1.T.reshape(4, 4, -1), new_grid).reshape(rows * cols, -1).T
        np.testing.assert_allclose(resized[prefix + "Dense_1/kernel"], expected_1, rtol=1e-5, atol=1e-6)
        bias_1 = _resize_reference(params[prefix + "Dense_1/bias"].reshape(4, 4, 1), new_grid).reshape(-1)
        np.testing.assert_allclose(resized[prefix + "Dense_1/bias"], bias_1, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(resized[prefix + "Dense_0/bias"], params[prefix + "Dense_0/bias"])
    np.testing.assert_array_equal(resized["stem/kernel"], params["stem/kernel"])


def test_interpolation_is_explicit_and_keeps_the_token_mlp_width(checkpoint):
    _, path = checkpoint
    model = MLPMixer(**CONFIG)
    load_official_weights(model, path)
    resized = change_resolution(model, 48, token_mixing_resize="interpolate")  # 1.5x: Appendix C cannot
    assert resized.num_tokens == 36 and resized.tokens_mlp_dim == CONFIG["tokens_mlp_dim"]
    assert np.all(np.isfinite(resized.predict(_images(2, size=48), verbose=0)))
    with pytest.raises(ValueError, match="token_mixing_resize"):
        change_resolution(model, 48)  # never silent: the paper's scheme refuses 1.5x
    with pytest.raises(ValueError, match=r"must be one of \('appendix_c', 'interpolate', 'reinit'\)"):
        change_resolution(model, 64, token_mixing_resize="bicubic")


def test_reinit_keeps_the_models_own_token_indexed_weights_and_loads_the_rest(checkpoint):
    params, path = checkpoint
    model = MLPMixer(**{**CONFIG, "image_size": 64})  # 8x8 tokens, D_S as the checkpoint's
    before = {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}
    load_official_weights(model, path, allow_resize=True, token_mixing_resize="reinit")
    mixing = model.mixer_blocks[0].token_mixing
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mixing.dense_0.kernel), before[mixing.dense_0.kernel.path])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mixing.dense_1.bias), before[mixing.dense_1.bias.path])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(mixing.dense_0.bias), params["MixerBlock_0/token_mixing/Dense_0/bias"]
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("stem").kernel), params["stem/kernel"])
