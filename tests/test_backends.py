"""The model code (keras.ops / keras.layers only) runs on the JAX and PyTorch backends too.

A subprocess per backend, because Keras picks its backend once per process. Each one loads the same
official-layout weights as a TensorFlow-backend model built here, and its logits must equal
TensorFlow's; then it trains a step, changes resolution and flip-averages. torch is the CPU build
pinned in the `test` extra (`torch==2.13.0`, served from a local copy on this project's machines;
elsewhere pip may fetch the multi-GB CUDA build of that version).
"""

import importlib.util
import json

import numpy as np
import pytest

from keras_mixer import MLPMixer, load_official_weights, save_official_weights
from tests.model_checks import random_images
from tests.training_helpers import run_module

ARGUMENTS = dict(num_classes=3, image_size=16, patch_size=4, num_channels=1, num_blocks=2, hidden_dim=8,
                 tokens_mlp_dim=4, channels_mlp_dim=16, drop_path_rate=0.1)  # fmt: skip


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_model_gives_tensorflows_logits_and_trains_on_another_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:  # not imported here: it stays out of this TensorFlow process
        pytest.skip(f"{backend} is not installed (it is in the `test` extra)")
    reference = MLPMixer(**ARGUMENTS)
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.3, v.shape).astype("float32") for k, v in save_official_weights(reference).items()}
    load_official_weights(reference, weights)
    np.savez(tmp_path / "weights.npz", **weights)
    images = random_images(4, 16, channels=1)
    np.save(tmp_path / "images.npy", images)
    expected = reference.predict(images, verbose=0)

    result = run_module("tests.backend_smoke", json.dumps(ARGUMENTS), tmp_path / "weights.npz",
                        tmp_path / "images.npy", env={"KERAS_BACKEND": backend}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend and report["big"] == [4, 3] and np.isfinite(report["loss"])
    np.testing.assert_allclose(np.array(report["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # the comparison is not between two near-zero outputs
    assert report["flip_average_error"] < 1e-5
