"""The paper experiments' CLIs: permutation invariance (§3.4) and token-mixing pictures (Fig. 5)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer, load_official_weights, save_official_weights
from tests.training_helpers import run_main_in_process, run_module
from training.experiments.permutation import (
    patch_pixel_orders,
    permute_dataset,
    permute_mixer_weights,
    pixel_order,
)
from training.experiments.token_weights import (
    median_pair_correlation,
    paired_units,
    random_pair_correlation,
    token_mixing_kernel,
)

SIZE, PATCH = 12, 3


_run = run_module


def _mixer(channels=2, seed=0):
    model = MLPMixer(num_blocks=2, hidden_dim=8, tokens_mlp_dim=6, channels_mlp_dim=16, image_size=SIZE,
                     patch_size=PATCH, num_channels=channels, num_classes=5)  # fmt: skip
    rng = np.random.default_rng(seed)
    load_official_weights(model, {k: rng.normal(0, 0.5, v.shape) for k, v in save_official_weights(model).items()})
    return model


def test_the_pipelines_patch_pixel_shuffle_is_undone_by_the_permuted_weights():
    # The experiment's own tf.data shuffle and weight permutation agree: equal logits.
    model = _mixer()
    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 2)).astype("float32")
    order = pixel_order("patch_pixel", SIZE, SIZE, PATCH, seed=4)
    dataset = permute_dataset(tf.data.Dataset.from_tensor_slices((images, np.zeros(3))), order)
    shuffled = np.stack([image.numpy() for image, _ in dataset])
    assert not np.allclose(shuffled, images)
    permuted = _mixer()
    params = permute_mixer_weights(save_official_weights(model), *patch_pixel_orders(SIZE, SIZE, PATCH, 4), PATCH)
    load_official_weights(permuted, params)
    original = model.predict(images, verbose=0)
    np.testing.assert_allclose(permuted.predict(shuffled, verbose=0), original, rtol=1e-5, atol=1e-5)
    # A global pixel shuffle is not absorbed that way.
    order = pixel_order("global", SIZE, SIZE, PATCH, seed=4)
    shuffled = np.stack(
        [
            image.numpy()
            for image, _ in permute_dataset(tf.data.Dataset.from_tensor_slices((images, np.zeros(3))), order)
        ]
    )
    assert np.abs(permuted.predict(shuffled, verbose=0) - original).max() > 1e-2


def test_pixel_orders_are_permutations_and_bad_patches_are_refused():
    for order in ("original", "patch_pixel", "global"):
        assert sorted(pixel_order(order, 28, 28, 7, seed=0)) == list(range(784))
    with pytest.raises(ValueError, match="patch size must divide the image.*patch_size=5 for 28x28"):
        pixel_order("patch_pixel", 28, 28, 5, seed=0)
    with pytest.raises(ValueError, match="Unknown order"):
        pixel_order("reversed", 28, 28, 7, seed=0)


def test_permutation_cli_writes_curves_and_the_mixer_is_invariant(fashion_data_dir, tmp_path):
    result = _run(
        "training.experiments.permutation", "--data-dir", fashion_data_dir, "--train-split", "train[:512]",
        "--test-split", "test[:128]", "--epochs", "1", "--evals-per-epoch", "2", "--batch-size", "64",
        "--orders", "original,patch_pixel", "--output-dir", str(tmp_path), "--xla", "false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "permutation.json").read_text())
    assert set(report["final_test_accuracy"]) == {"mixer", "resnet"}
    mixer = report["test_accuracy"]["mixer"]
    assert len(mixer["original"]) == 2
    # Same starting function (permuted init) and exact invariance: the same curve, to float rounding.
    np.testing.assert_allclose(mixer["patch_pixel"], mixer["original"], atol=2 / 128)  # two images of 128
    assert report["parameters"]["resnet"] > 0.5 * report["parameters"]["mixer"]
    assert (tmp_path / "permutation.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--patch-size", "5"], "patch size must divide the image size"),
        (["--orders", "original,reversed"], "unknown order 'reversed'"),
        (["--models", "vit"], "unknown model 'vit'"),
        (["--train-split", "train[:256]", "--batch-size", "128", "--evals-per-epoch", "3"], "needs at least that"),
    ],
)
def test_permutation_cli_bad_input(fashion_data_dir, tmp_path, flags, message):
    result = run_main_in_process(
        "training.experiments.permutation", *flags, "--data-dir", fashion_data_dir, "--output-dir", tmp_path / "out"
    )
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_token_weights_from_keras_and_npz(tmp_path):
    model = _mixer(channels=1)
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "m.npz", **save_official_weights(model))
    kernel, grid = token_mixing_kernel(str(tmp_path / "m.keras"), block=1)
    assert kernel.shape == (16, 6) and grid == (4, 4)
    npz_kernel, npz_grid = token_mixing_kernel(str(tmp_path / "m.npz"), block=1)
    np.testing.assert_array_equal(npz_kernel, kernel)
    assert npz_grid == grid
    assert sorted(paired_units(kernel)) == list(range(6))
    result = _run("training.experiments.token_weights", "--model", str(tmp_path / "m.keras"), "--block", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "token_weights_block1.png").stat().st_size > 5_000
    assert "median correlation of the paired units:" in result.stdout


def test_median_pair_correlation_finds_planted_opposites_and_not_chance():
    rng = np.random.default_rng(4)
    detectors = rng.standard_normal((16, 32))
    planted = np.concatenate([detectors, -detectors * rng.uniform(0.5, 2.0, 32)], axis=1)  # each unit's opposite
    assert median_pair_correlation(planted) == pytest.approx(-1.0)
    chance = random_pair_correlation((16, 64))
    assert -0.7 < chance < -0.3  # greedy pairing of random vectors is anti-correlated, but far from -1


def test_token_weights_bad_input(tmp_path):
    model = _mixer(channels=1)
    model.save(tmp_path / "m.keras")
    result = run_main_in_process("training.experiments.token_weights", "--model", tmp_path / "m.keras", "--block", 7)
    assert result.returncode == 2 and "Unknown block index. Expected one of 0..1" in result.stderr
    import keras  # noqa: PLC0415

    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "other.keras")
    result = run_main_in_process("training.experiments.token_weights", "--model", str(tmp_path / "other.keras"))
    assert result.returncode == 2 and "Expected a keras_mixer.MLPMixer" in result.stderr
    result = run_main_in_process("training.experiments.token_weights", "--model", str(tmp_path / "absent.keras"))
    assert result.returncode == 2 and "model file not found" in result.stderr
    assert not list(tmp_path.glob("*.png"))


def test_transfer_folders_hold_the_chosen_classes_as_pngs(tmp_path):
    from training.experiments.transfer import pick, write_png_folder  # noqa: PLC0415

    images = np.arange(12 * 4 * 4, dtype="uint8").reshape(12, 4, 4, 1)
    labels = np.array([5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6, 7])
    chosen, relabelled = pick(images, labels, classes=(5, 7), per_class=2)
    assert relabelled.tolist() == [0, 1, 0, 1] and np.array_equal(chosen[0], images[0])
    assert write_png_folder(chosen, relabelled, ["Sandal", "T-shirt/top"], str(tmp_path)) == 4
    assert sorted(os.listdir(tmp_path)) == ["Sandal", "T-shirt_top"]
    png = (tmp_path / "T-shirt_top" / "00001.png").read_bytes()
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), images[2])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--per-class", "101"], "--per-class is at most 100"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--per-class", "5"], "fewer images than one batch"),
    ],
)
def test_transfer_cli_bad_input(tmp_path, flags, message):
    result = run_main_in_process("training.experiments.transfer", *flags, "--work-dir", tmp_path / "work")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "work").exists()
