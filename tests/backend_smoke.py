"""Run as `python -m tests.backend_smoke ARGUMENTS_JSON WEIGHTS.npz IMAGES.npy` with KERAS_BACKEND set
(tests/test_backends.py): logits, one training step, a resolution change and flip averaging on that
backend, printed as one JSON line."""

import json
import sys


def main():
    import keras  # noqa: PLC0415  (after the caller chose the backend)
    import numpy as np  # noqa: PLC0415

    import keras_mixer  # noqa: PLC0415

    arguments, weights, images = json.loads(sys.argv[1]), sys.argv[2], np.load(sys.argv[3])
    model = keras_mixer.MLPMixer(**arguments)
    keras_mixer.load_official_weights(model, dict(np.load(weights)))
    logits = model.predict(images, verbose=0)
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    model.compile(optimizer="adam", loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    loss = model.fit(images, labels, epochs=1, verbose=0).history["loss"][0]
    big = keras_mixer.change_resolution(model, 32)
    averaged = model.flip_averaged()
    mean = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    report = {
        "backend": keras.backend.backend(),
        "logits": logits.tolist(),
        "loss": float(loss),
        "big": list(big.predict(np.tile(images, (1, 2, 2, 1)), verbose=0).shape),
        "flip_average_error": float(np.abs(averaged.predict(images, verbose=0) - mean).max()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
