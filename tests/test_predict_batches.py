"""`MLPMixer.predict` on arrays runs Keras' predict loop itself (`keras_mixer.array_input.predict_batches`):
checked against Keras' own loop over the same model, which is the reference for results and callback calls."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import MLPMixer
from keras_mixer.array_input import predicts_batches_itself
from tests.test_model import TINY, _images, _randomize


class RecordingCallback(keras.callbacks.Callback):
    def __init__(self, stop_after=None):
        super().__init__()
        self.calls, self.stop_after = [], stop_after

    def on_predict_begin(self, logs=None):
        self.calls.append("begin")

    def on_predict_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_predict_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, tuple(logs["outputs"].shape)))
        if self.stop_after is not None and batch + 1 >= self.stop_after:
            self.model.stop_predicting = True

    def on_predict_end(self, logs=None):
        self.calls.append("end")


def _keras_predict(model, images, **kwargs):
    """Keras' own predict loop (its array adapter and `tf.data`), on the same model and step."""
    return keras.Model.predict(model, images, verbose=0, **kwargs)


def test_predict_on_arrays_does_not_go_through_tf_data(monkeypatch):
    model = _randomize(MLPMixer(**TINY))
    images = _images(7)
    expected = _keras_predict(model, images, batch_size=3)

    def no_dataset(*args, **kwargs):
        raise AssertionError("predict on an array made a tf.data dataset")

    monkeypatch.setattr(tf.data.Dataset, "from_tensor_slices", no_dataset)
    np.testing.assert_allclose(model.predict(images, batch_size=3, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(model.predict(tf.constant(images), batch_size=3, verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("stop_after", [None, 1])
def test_callbacks_see_what_keras_own_loop_shows_them(stop_after):
    model = _randomize(MLPMixer(**TINY))
    images = _images(7)
    ours, keras_own = RecordingCallback(stop_after), RecordingCallback(stop_after)
    predicted = model.predict(images, batch_size=3, verbose=0, callbacks=[ours])
    expected = _keras_predict(model, images, batch_size=3, callbacks=[keras_own])
    assert ours.calls == keras_own.calls
    assert len(ours.calls) == (8 if stop_after is None else 4)  # begin, 3 x (batch begin, end), end
    np.testing.assert_allclose(predicted, expected, atol=1e-6)


def test_the_progress_bar_counts_the_batches(capsys):
    model = MLPMixer(**TINY)
    model.predict(_images(7), batch_size=3, verbose=1)
    assert "3/3" in capsys.readouterr().out


@pytest.mark.parametrize("batch_size", [0, -2, 2.5, "8", True])
def test_a_bad_batch_size_is_refused_by_name(batch_size):
    with pytest.raises(
        ValueError, match=f"`batch_size` must be a positive integer or None. Received: batch_size={batch_size!r}"
    ):
        MLPMixer(**TINY).predict(_images(3), batch_size=batch_size, verbose=0)


def test_a_numpy_integer_batch_size_is_taken():
    model = MLPMixer(**TINY)
    assert model.predict(_images(5), batch_size=np.int64(2), verbose=0).shape == (5, 5)


def test_steps_and_strategies_keep_keras_own_loop():
    model = _randomize(MLPMixer(**TINY))
    images = _images(7)
    assert predicts_batches_itself(model, images)
    assert not predicts_batches_itself(model, images, steps=1)
    assert model.predict(images, batch_size=3, steps=2, verbose=0).shape == (6, 5)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert not predicts_batches_itself(model, images)
        np.testing.assert_allclose(model.predict(images, verbose=0), _keras_predict(model, images), atol=1e-6)


def test_a_batch_of_the_wrong_shape_or_dtype_is_refused_by_name_even_after_a_good_one():
    # After one good call Keras traces its step again with every size unknown, and a wrong batch then failed deep
    # in the graph ("Depth of input must be a multiple of depth of filter").
    model = MLPMixer(**TINY)
    model.predict(_images(2), verbose=0)
    for wrong in (np.zeros((2, 16, 16, 1), "float32"), np.zeros((2, 20, 20, 3), "float32"), _images(1)[0]):
        expected = f"shape (batch, 16, 16, 3). Received: an array of shape {wrong.shape}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            model.predict(wrong, verbose=0)
    with pytest.raises(ValueError, match="images of numbers .* Received: an array of dtype object"):
        model.predict(np.empty((2, 16, 16, 3), object), verbose=0)
    assert model.predict(np.zeros((2, 16, 16, 3), "uint8"), verbose=0).shape == (2, 5)
