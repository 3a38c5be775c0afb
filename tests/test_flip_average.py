"""Test-time flip averaging (`MLPMixer(flip_average=True)`, `model.flip_averaged()`), checked against an
independent float64 NumPy forward pass run on each image and on its mirror image."""

import functools

import keras
import numpy as np
import pytest

from keras_mixer import MLPMixer, load_official_weights
from keras_mixer.flip_average import AverageMirrorPairs, MirrorImages
from tests.model_checks import CONFIG, SIZES, random_images, run_layer_checks, run_model_checks
from tests.reference_mixer import official_logits, random_official_checkpoint

_images = functools.partial(random_images, size=32, seed=1)


@pytest.fixture
def params():
    return random_official_checkpoint(np.random.default_rng(0), **SIZES)


def test_output_is_the_mean_of_the_reference_logits_of_each_image_and_its_mirror(params):
    model = MLPMixer(**CONFIG, flip_average=True)
    load_official_weights(model, params)
    images = _images(3)
    single, mirrored = official_logits(params, images), official_logits(params, images[:, :, ::-1])
    expected = (single + mirrored) / 2
    np.testing.assert_allclose(
        model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )
    # Not a degenerate comparison: the model itself tells an image from its mirror.
    assert np.abs(single - mirrored).max() > 0.1 * np.abs(single).max()


def test_flip_averaged_copies_the_weights_and_is_mirror_invariant(params):
    model = MLPMixer(**CONFIG)
    load_official_weights(model, params)
    averaged = model.flip_averaged()
    assert averaged.flip_average and not model.flip_average
    images = _images(4)
    expected = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        averaged.predict(images[:, :, ::-1], verbose=0), averaged.predict(images, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert [w.path for w in averaged.weights] == [w.path for w in model.weights]  # no weights of its own


def test_shared_model_checks_pass_with_flip_averaging(params):
    # Config and .keras round trips, eager == predict == tf.data, and a training step through both views.
    model = MLPMixer(**CONFIG, num_channels=1, classifier_activation="softmax", flip_average=True)
    images = _images(4, channels=1)
    for variable in model.weights:
        variable.assign(np.random.default_rng(2).standard_normal(variable.shape).astype("float32") * 0.2)
    probabilities = run_model_checks(model, images, labels=np.array([0, 1, 2, 3]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)  # the mean of two distributions


def test_features_without_a_head_are_averaged_per_image():
    model = MLPMixer(**CONFIG, include_top=False, pooling="avg", flip_average=True)
    assert model.predict(_images(3), verbose=0).shape == (3, CONFIG["hidden_dim"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"flip_average": "yes"}, r"`flip_average` must be True or False. Received: flip_average='yes'"),
        (
            {"flip_average": True, "include_top": False, "pooling": None},
            r"needs one vector per image.*Received: include_top=False, pooling=None",
        ),
    ],
)
def test_bad_flip_average_arguments_raise_one_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        MLPMixer(**{**CONFIG, **overrides})


def test_the_two_layers_against_numpy():
    images = _images(2, size=4)
    both = keras.ops.convert_to_numpy(MirrorImages()(images))
    np.testing.assert_array_equal(both, np.concatenate([images, images[:, :, ::-1]]))
    outputs = np.random.default_rng(3).standard_normal((6, 5)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(AverageMirrorPairs()(outputs)), (outputs[:3] + outputs[3:]) / 2, rtol=1e-6
    )
    run_layer_checks(MirrorImages(), images)
    run_layer_checks(AverageMirrorPairs(), outputs)
