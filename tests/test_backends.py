"""The model code (keras.ops / keras.layers only) runs on the JAX backend too (flip averaging included).

A subprocess, because Keras picks its backend once per process. PyTorch is not exercised: on this
machine kind installing torch can pull a multi-GB CUDA build, so it is not part of the test extra.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.training_helpers import ROOT

SMOKE = """
import json, numpy as np, keras, keras_mixer
model = keras_mixer.MLPMixer(num_classes=3, image_size=16, patch_size=4, num_channels=1, num_blocks=2,
                             hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, drop_path_rate=0.1)
x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 1)).astype("float32")
y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
loss = model.fit(x, y, epochs=1, verbose=0).history["loss"][0]
big = keras_mixer.change_resolution(model, 32)
averaged = model.flip_averaged()
mean = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
print(json.dumps({"backend": keras.backend.backend(), "shape": list(model.predict(x, verbose=0).shape),
                  "loss": float(loss), "big": list(big.predict(np.tile(x, (1, 2, 2, 1)), verbose=0).shape),
                  "flip_average_error": float(np.abs(averaged.predict(x, verbose=0) - mean).max())}))
"""


@pytest.mark.parametrize("backend, module", [("jax", "jax")])
def test_model_trains_on_another_backend(backend, module):
    pytest.importorskip(module, reason=f"{module} is not installed (it is in the `test` extra)")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", SMOKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend and report["shape"] == [4, 3] and report["big"] == [4, 3]
    assert report["flip_average_error"] < 1e-5
