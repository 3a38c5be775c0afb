"""Paper §3.4: a Mixer is exactly invariant to a fixed patch + shared within-patch pixel shuffle.

Shuffling patches by pi and the pixels inside every patch by sigma is absorbed by permuting the stem
kernel's pixel positions by sigma and every token-mixing weight's token axis by pi: the permuted
network on the permuted image gives the original network's logits, to float rounding.
"""

import numpy as np

from keras_mixer import MLPMixer, load_official_weights, save_official_weights

SIZE, PATCH, CHANNELS = 12, 3, 2
GRID = SIZE // PATCH


def _permute_image(images, tokens_order, pixel_order):
    """Token t of the result holds patch tokens_order[t], its pixels reordered by pixel_order."""
    n = images.shape[0]
    patches = images.reshape(n, GRID, PATCH, GRID, PATCH, CHANNELS).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, GRID * GRID, PATCH * PATCH, CHANNELS)[:, tokens_order][:, :, pixel_order]
    grid = patches.reshape(n, GRID, GRID, PATCH, PATCH, CHANNELS).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, SIZE, SIZE, CHANNELS)


def _permute_weights(params, tokens_order, pixel_order):
    permuted = dict(params)
    kernel = params["stem/kernel"].reshape(PATCH * PATCH, CHANNELS, -1)
    permuted["stem/kernel"] = kernel[pixel_order].reshape(params["stem/kernel"].shape)
    for key, value in params.items():
        if key.endswith("token_mixing/Dense_0/kernel"):
            permuted[key] = value[tokens_order]  # (S, D_S): token rows
        elif key.endswith("token_mixing/Dense_1/kernel"):
            permuted[key] = value[:, tokens_order]  # (D_S, S): token columns
        elif key.endswith("token_mixing/Dense_1/bias"):
            permuted[key] = value[tokens_order]
    return permuted


def test_patch_and_pixel_shuffle_is_absorbed_exactly():
    rng = np.random.default_rng(0)
    config = dict(num_blocks=2, hidden_dim=8, tokens_mlp_dim=6, channels_mlp_dim=16, image_size=SIZE,
                  patch_size=PATCH, num_channels=CHANNELS, num_classes=5)  # fmt: skip
    model = MLPMixer(**config)
    params = {k: rng.normal(0, 0.5, v.shape).astype("float32") for k, v in save_official_weights(model).items()}
    load_official_weights(model, params)
    tokens_order, pixel_order = rng.permutation(GRID * GRID), rng.permutation(PATCH * PATCH)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, CHANNELS)).astype("float32")

    shuffled_images = _permute_image(images, tokens_order, pixel_order)
    assert not np.allclose(shuffled_images, images)
    # The original network does see the difference ...
    original = model.predict(images, verbose=0)
    assert np.abs(model.predict(shuffled_images, verbose=0) - original).max() > 1e-2
    # ... and the correspondingly permuted network undoes it exactly.
    permuted_model = MLPMixer(**config)
    load_official_weights(permuted_model, _permute_weights(params, tokens_order, pixel_order))
    np.testing.assert_allclose(permuted_model.predict(shuffled_images, verbose=0), original, rtol=1e-5, atol=1e-5)
