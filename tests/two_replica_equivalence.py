"""Run as `python -m tests.two_replica_equivalence` from the repository root: train the same tiny Mixer
on the same data under MirroredStrategy over two logical CPU devices and under the default one-device
strategy; print both weight lists' max difference as JSON. (A subprocess, because logical devices must
be set before TF starts; nothing runs on import, so pytest's module collection leaves TF alone.)"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STEPS, GLOBAL_BATCH = 5, 8


def train(strategy, images, labels, initial, rng):
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from training.distribute import enable_multi_worker_fit  # noqa: PLC0415

    with strategy.scope():
        model = MLPMixer(
            num_blocks=2, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, image_size=16, patch_size=4,
            num_channels=1, num_classes=4,
        )  # fmt: skip
        if not initial:  # filled by the first model built, reused by the second
            initial.extend(w + rng.normal(0, 0.1, w.shape).astype("float32") for w in model.get_weights())
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    enable_multi_worker_fit(model)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    model.fit(data, epochs=1, verbose=0)
    return model.get_weights(), strategy.num_replicas_in_sync


def main():
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (STEPS * GLOBAL_BATCH, 16, 16, 1)).astype("float32")
    labels = np.eye(4, dtype="float32")[rng.integers(0, 4, STEPS * GLOBAL_BATCH)]
    initial = []
    one, one_replicas = train(tf.distribute.get_strategy(), images, labels, initial, rng)
    two, two_replicas = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), images, labels, initial, rng)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(one, initial))
    difference = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    print(json.dumps({"replicas": [one_replicas, two_replicas], "max_difference": difference, "moved": moved}))


if __name__ == "__main__":
    main()
