"""Paper §3.4: a Mixer is exactly invariant to a fixed patch + shared within-patch pixel shuffle.

The experiment's own functions are tested (`training.experiments.permutation`), each against a property
that does not reuse their logic:
- `pixel_order("patch_pixel")` moves whole patches: every output patch holds the pixels of exactly one
  input patch, each input patch is used once, and the same within-patch rearrangement is applied to all
  (checked on images whose pixel values name their own positions);
- `permute_mixer_weights` absorbs that shuffle: the permuted network on the shuffled image gives the
  original network's logits, while the original network does see the shuffle;
- a `global` shuffle is not absorbed by any such weights (it mixes pixels across patches).
"""

import numpy as np
import pytest

from keras_mixer import MLPMixer, load_official_weights, save_official_weights
from training.experiments.permutation import patch_pixel_orders, permute_mixer_weights, pixel_order

SIZE, PATCH, CHANNELS = 12, 3, 2
GRID = SIZE // PATCH


def _shuffle(images, order):
    """Apply a flat source-index order to every channel of (N, H, W, C) images."""
    n = images.shape[0]
    return images.reshape(n, SIZE * SIZE, CHANNELS)[:, order].reshape(images.shape)


def _patches(positions):
    """(tokens, pixels per patch) view of an (H, W) array, tokens row-major."""
    return positions.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(GRID * GRID, PATCH * PATCH)


def test_the_patch_pixel_order_moves_whole_patches_with_one_shared_rearrangement():
    positions = np.arange(SIZE * SIZE).reshape(SIZE, SIZE)  # each pixel's value is its own position
    shuffled = _patches(positions.reshape(-1)[pixel_order("patch_pixel", SIZE, SIZE, PATCH, seed=3)])
    source = _patches(positions)
    owner = {int(p): t for t, patch in enumerate(source) for p in patch}  # input patch of each position
    sources = [{owner[int(p)] for p in patch} for patch in shuffled]
    assert all(len(s) == 1 for s in sources)  # each output patch comes from one input patch ...
    assert sorted(s.pop() for s in sources) == list(range(GRID * GRID))  # ... each input patch once
    # where each pixel of a patch came from inside its source patch: one arrangement for all patches
    arrangement = [
        tuple(int(np.flatnonzero(source[owner[int(patch[0])]] == p)[0]) for p in patch) for patch in shuffled
    ]
    assert len(set(arrangement)) == 1 and arrangement[0] != tuple(range(PATCH * PATCH))


@pytest.mark.parametrize("order, absorbed", [("patch_pixel", True), ("global", False)])
def test_only_the_patch_pixel_shuffle_is_absorbed_by_the_permuted_weights(order, absorbed):
    rng = np.random.default_rng(0)
    config = dict(num_blocks=2, hidden_dim=8, tokens_mlp_dim=6, channels_mlp_dim=16, image_size=SIZE,
                  patch_size=PATCH, num_channels=CHANNELS, num_classes=5)  # fmt: skip
    model = MLPMixer(**config)
    params = {k: rng.normal(0, 0.5, v.shape).astype("float32") for k, v in save_official_weights(model).items()}
    load_official_weights(model, params)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, CHANNELS)).astype("float32")
    shuffled = _shuffle(images, pixel_order(order, SIZE, SIZE, PATCH, seed=3))

    original = model.predict(images, verbose=0)
    assert np.abs(model.predict(shuffled, verbose=0) - original).max() > 1e-2  # the shuffle is visible
    permuted = MLPMixer(**config)
    load_official_weights(permuted, permute_mixer_weights(params, *patch_pixel_orders(SIZE, SIZE, PATCH, 3), PATCH))
    difference = np.abs(permuted.predict(shuffled, verbose=0) - original).max()
    assert (difference < 1e-5) if absorbed else (difference > 1e-2)
