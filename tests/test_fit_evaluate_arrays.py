"""`MLPMixer.evaluate` and `fit` on arrays run Keras' loop on Keras' own array adapter without `tf.data`'s
autotuning (`keras_mixer.array_input.array_adapter_without_autotuning`).

The references: the loss and accuracy computed in NumPy from the model's outputs, and Keras' own `evaluate` and
`fit` (its array adapter, autotuned) on the same model.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer
from keras_mixer.array_input import array_adapter_without_autotuning
from tests.test_model import TINY, _images, _randomize


def _compiled_model():
    model = _randomize(MLPMixer(**TINY))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def _record_calls_to(monkeypatch, method):
    """[(x, y, keyword arguments)] of each call to `keras.Model.<method>` (Keras' loop, which still runs)."""
    calls, keras_method = [], getattr(keras.Model, method)

    def recording(self, x=None, y=None, **kwargs):
        calls.append((x, y, kwargs))
        return keras_method(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, method, recording)
    return calls


def _numpy_loss_and_accuracy(logits, labels, weights):
    """Cross-entropy weighted and summed over the number of images (Keras' "sum_over_batch_size", over batches
    weighted by their size) and plain accuracy, from the logits in float64."""
    logits = logits.astype("float64")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    losses = -log_probabilities[np.arange(len(labels)), labels]
    return (losses * weights).sum() / len(labels), (logits.argmax(axis=1) == labels).mean()


@pytest.mark.parametrize("as_tensors", [False, True])
def test_evaluate_on_arrays_gives_the_numpy_loss_and_accuracy(as_tensors):
    model = _compiled_model()
    images, labels = _images(7), np.array([0, 1, 2, 3, 4, 0, 1])
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.25])  # float64, cast to floatx as Keras does
    loss, accuracy = _numpy_loss_and_accuracy(model.predict(images, verbose=0), labels, weights)
    if as_tensors:
        images, labels, weights = tf.constant(images), tf.constant(labels), tf.constant(weights)
    result = model.evaluate(images, labels, sample_weight=weights, batch_size=3, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(loss, abs=1e-5) and result["accuracy"] == pytest.approx(accuracy)
    unweighted = model.evaluate(images, labels, batch_size=3, verbose=0)  # [loss, accuracy]
    expected = keras.Model.evaluate(model, np.asarray(images), np.asarray(labels), batch_size=3, verbose=0)
    np.testing.assert_allclose(unweighted, expected, atol=1e-6)


def test_evaluate_gives_keras_loop_its_own_adapter_without_autotuning(monkeypatch):
    model = _compiled_model()
    received = _record_calls_to(monkeypatch, "evaluate")
    model.evaluate(_images(5), np.arange(5), batch_size=2, verbose=0)
    ((adapter, y, kwargs),) = received
    assert (y, kwargs["sample_weight"]) == (None, None) and adapter._shuffle is False
    dataset = adapter.get_tf_dataset()
    assert dataset.options().autotune.enabled is False
    assert [int(images.shape[0]) for images, _ in dataset] == [2, 2, 1]


def test_what_it_does_not_take_goes_to_keras_adapter_unchanged(monkeypatch):
    model = _compiled_model()
    images, labels = _images(5), np.arange(5)
    received = _record_calls_to(monkeypatch, "evaluate")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    model.evaluate(dataset, verbose=0)
    model.evaluate(images, labels, batch_size=2, steps=2, verbose=0)
    assert received[0][0] is dataset and received[1][0] is images
    assert array_adapter_without_autotuning(None, labels) is None
    with pytest.raises(ValueError, match="[Cc]ardinality|sizes"):  # Keras' own message for lengths that differ
        model.evaluate(images, labels[:4], verbose=0)


@pytest.mark.parametrize(
    "images, batch_size, message",
    [
        (np.zeros((2, 16, 16, 1), "float32"), None, r"shape \(batch, 16, 16, 3\)\. Received: an array of shape"),
        (np.array([["a"] * 3] * 16 * 16 * 2).reshape(2, 16, 16, 3), None, "images of numbers"),
        (np.zeros((2, 16, 16, 3), "float32"), 0, "must be a positive integer or None. Received: batch_size=0"),
    ],
)
def test_bad_input_is_one_clear_error(images, batch_size, message):
    model = _compiled_model()
    with pytest.raises(ValueError, match=message):
        model.evaluate(images, np.zeros(2, "int64"), batch_size=batch_size, verbose=0)


def _fit_twice(fit, class_weight=None, sample_weight=None):
    """Weights after two epochs of `fit` (shuffle off, so the batches are the same) from one initialisation."""
    model = _compiled_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    images, labels = _images(7), np.array([0, 1, 2, 3, 4, 0, 1])
    fit(model, images, labels, batch_size=3, epochs=2, shuffle=False, verbose=0, class_weight=class_weight,
        sample_weight=sample_weight, validation_data=(images[:4], labels[:4]))  # fmt: skip
    return [weight.numpy() for weight in model.weights]


@pytest.mark.parametrize("weights", ["none", "class", "sample"])
def test_fit_on_arrays_trains_as_keras_own_fit(weights):
    class_weight = {0: 2.0, 1: 0.5, 2: 1.0, 3: 1.0, 4: 3.0} if weights == "class" else None
    sample_weight = np.linspace(0.5, 2.0, 7) if weights == "sample" else None
    ours = _fit_twice(MLPMixer.fit, class_weight, sample_weight)
    keras_own = _fit_twice(keras.Model.fit, class_weight, sample_weight)
    for a, b in zip(ours, keras_own):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fit_gives_keras_loop_its_own_adapter_without_autotuning(monkeypatch):
    model = _compiled_model()
    received = _record_calls_to(monkeypatch, "fit")
    images, labels = _images(5), np.arange(5)
    model.fit(images, labels, batch_size=2, verbose=0, validation_data=(images, labels))
    ((adapter, _, kwargs),) = received
    validation, shuffle = kwargs["validation_data"], kwargs["shuffle"]
    assert adapter.get_tf_dataset().options().autotune.enabled is False and adapter.num_batches == 3
    assert validation.get_tf_dataset().options().autotune.enabled is False and shuffle is True
    assert adapter._shuffle is True and validation._shuffle is False  # Keras' own shuffling of each epoch
    with pytest.raises(ValueError, match=r"shape \(batch, 16, 16, 3\)"):
        model.fit(np.zeros((2, 16, 16, 1), "float32"), np.zeros(2), verbose=0)
