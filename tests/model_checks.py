"""The shared check every model test runs: config round-trip, eager == predict == tf.data,
`.keras` save/load (safe mode) to identical outputs, and one `fit` step that changes weights."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

# A small Mixer with every official key: 32x32 RGB, patch 8 -> 4x4 = 16 tokens. SIZES are the names of
# `tests.reference_mixer.random_official_checkpoint`; CONFIG is the same model as MLPMixer arguments.
SIZES = dict(patch=8, channels=3, hidden=12, tokens=16, tokens_mlp=6, channels_mlp=24, blocks=2, classes=5)
CONFIG = dict(
    image_size=32, patch_size=SIZES["patch"], hidden_dim=SIZES["hidden"], tokens_mlp_dim=SIZES["tokens_mlp"],
    channels_mlp_dim=SIZES["channels_mlp"], num_blocks=SIZES["blocks"], num_classes=SIZES["classes"],
)  # fmt: skip


def random_images(n, size=16, channels=3, seed=0, dtype="float32"):
    """`n` images of `size` x `size` x `channels` with uniform random pixels in [0, 255] (integers for uint8)."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size, channels)
    if dtype == "uint8":
        return rng.integers(0, 256, shape).astype("uint8")
    return rng.uniform(0, 255, shape).astype(dtype)


def run_layer_checks(layer, inputs, tolerance=1e-6):
    """The layer counterpart of `run_model_checks`, for every layer test: `get_config` round-trips, a clone
    from the config (and from Keras' serialised form) with the same weights gives the same outputs, the
    declared output shape is the real one, and the layer saves and loads inside a `.keras` model.
    Returns the clone built from the config."""
    expected = keras.ops.convert_to_numpy(layer(inputs, training=False))
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    deserialised = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(deserialised) is type(layer) and deserialised.get_config() == config
    for copy in (clone, deserialised):
        copy(inputs)  # builds the weights
        copy.set_weights(layer.get_weights())
        np.testing.assert_allclose(keras.ops.convert_to_numpy(copy(inputs, training=False)), expected, atol=tolerance)
    declared = layer.compute_output_shape(inputs.shape)
    assert tuple(declared) == expected.shape, (declared, expected.shape)

    model_input = keras.Input(inputs.shape[1:], batch_size=None)
    model = keras.Model(model_input, layer(model_input))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # safe mode: registered classes only
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), expected, atol=tolerance)
    return clone


def run_model_checks(model, images, labels=None, tolerance=1e-5):
    """Run every generic check on `model`; `tolerance` loosens eager/graph agreement (mixed precision)."""
    eager = keras.ops.convert_to_numpy(model(images, training=False))
    predicted = model.predict(images, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(3)
    from_dataset = model.predict(dataset, verbose=0)
    np.testing.assert_allclose(predicted, eager, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(from_dataset, eager, rtol=tolerance, atol=tolerance)

    config = model.get_config()
    rebuilt = type(model).from_config(config)
    assert rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), predicted, rtol=tolerance, atol=tolerance)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)  # default safe_mode=True: no code in the file
    assert type(loaded) is type(model)
    assert loaded.get_config() == config
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), predicted)

    if labels is not None:
        before = [w.copy() for w in model.get_weights()]
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        history = model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
        assert all(changed), "every weight should move after one step"
    return predicted


def saved_model_constants(folder):
    """{dtype: [shape of each `Const` node]} over every graph and function of the SavedModel in `folder`."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as file:
        saved.ParseFromString(file.read())
    graph = saved.meta_graphs[0].graph_def
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    constants = {}
    for node in nodes:
        if node.op == "Const":
            tensor = node.attr["value"].tensor
            shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
            constants.setdefault(tf.as_dtype(tensor.dtype), []).append(shape)
    return constants
