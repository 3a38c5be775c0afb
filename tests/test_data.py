import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training.config import AugmentConfig
from training.data import (
    DatasetError,
    dataset_spec,
    load_split,
    make_pipeline,
    open_builder,
    random_flip,
    random_pad_crop,
)


def test_random_pad_crop_is_a_per_sample_translation():
    images = np.random.default_rng(0).uniform(0, 255, (16, 6, 5, 2)).astype("float32")
    out = random_pad_crop(tf.constant(images), 2, tf.constant([1, 2], tf.int64)).numpy()
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets = set()
    for i in range(16):  # each output is some 6x5 window of its own padded image
        matches = [
            (r, c) for r in range(5) for c in range(5) if np.array_equal(out[i], padded[i, r : r + 6, c : c + 5])
        ]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 3  # offsets differ between samples


def test_random_flip_flips_some_samples_horizontally():
    images = np.arange(32 * 3 * 4, dtype="float32").reshape(32, 3, 4, 1)
    out = random_flip(tf.constant(images), tf.constant([3, 4], tf.int64)).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and 4 < sum(flipped) < 28


def test_fashion_mnist_pipelines_and_validation_carve(fashion_data_dir):
    builder = open_builder("fashion_mnist", fashion_data_dir)
    spec = dataset_spec(builder, "train[:1000]", "test", 0.1)
    assert spec.splits == {"train": "train[0:900]", "validation": "train[900:1000]", "test": "test"}
    assert (spec.num_classes, spec.num_channels, spec.train_examples) == (10, 1, 900)
    train = make_pipeline(
        load_split(builder, spec.splits["train"]), image_size=28, num_classes=10, batch_size=64, training=True,
        augment=AugmentConfig(), seed=1,
    )  # fmt: skip
    images, labels = next(iter(train))
    assert images.shape == (64, 28, 28, 1) and images.dtype == tf.float32 and labels.shape == (64, 10)
    assert float(tf.reduce_max(images)) > 1.0  # pixels stay in [0, 255]; the model normalises


def test_same_seed_same_batches(fashion_data_dir):
    builder = open_builder("fashion_mnist", fashion_data_dir)

    def first_batch(seed):
        ds = make_pipeline(
            load_split(builder, "train[:512]"), image_size=28, num_classes=10, batch_size=32, training=True,
            augment=AugmentConfig(), seed=seed,
        )  # fmt: skip
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first_batch(5), first_batch(5))
    assert not np.array_equal(first_batch(5), first_batch(6))


def test_unknown_dataset_says_how_to_list_them():
    with pytest.raises(DatasetError, match="Unknown tfds dataset 'no_such_set'.*list_builders"):
        open_builder("no_such_set")


def test_dataset_not_prepared_prints_the_command(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)not prepared.*download_and_prepare"):
        open_builder("cifar10", str(tmp_path))


def test_rgb_mock_cifar10_with_randaugment_mixup_cutmix():
    with tfds.testing.mock_data(num_examples=64):
        builder = open_builder("cifar10")
        spec = dataset_spec(builder, "train", "test", 0.0)
        augment = AugmentConfig(randaugment_layers=2, mixup_alpha=0.2, cutmix_alpha=1.0)
        ds = make_pipeline(
            load_split(builder, spec.splits["train"]), image_size=32, num_classes=10, batch_size=16, training=True,
            augment=augment,
        )  # fmt: skip
        images, labels = next(iter(ds))
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 10)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert np.any((labels.numpy() > 0) & (labels.numpy() < 1))  # mixed (soft) labels


def test_large_images_get_an_inception_crop_and_a_center_crop_for_eval():
    with tfds.testing.mock_data(num_examples=8):
        builder = open_builder("imagenet2012")
        spec = dataset_spec(builder, "train", "validation", 0.0)
        common = dict(image_size=64, num_classes=spec.num_classes, batch_size=4)
        train = make_pipeline(load_split(builder, "train"), training=True, augment=AugmentConfig(), **common)
        evaluation = make_pipeline(load_split(builder, "validation"), training=False, **common)
        assert next(iter(train))[0].shape == (4, 64, 64, 3)
        assert next(iter(evaluation))[0].shape == (4, 64, 64, 3)


@pytest.mark.parametrize("name, mixes_labels", [("RandomHue", False), ("GridMask", False), ("RandAugment", False),
                                                ("CutMix", True), ("MixUp", True), ("FourierMix", True)])  # fmt: skip
def test_keras_cv_layers_plug_in(name, mixes_labels):
    keras_cv = pytest.importorskip("keras_cv", reason="the `cv` extra (pip install -e '.[cv]') is not installed")
    arguments = {"RandomHue": dict(factor=0.5, value_range=(0, 255)), "RandAugment": dict(value_range=(0, 255)),
                 "GridMask": dict(), "CutMix": dict(seed=1), "MixUp": dict(seed=1),
                 "FourierMix": dict(seed=1)}  # fmt: skip
    layer = getattr(keras_cv.layers, name)(**arguments[name])
    with tfds.testing.mock_data(num_examples=32):
        builder = open_builder("cifar10")
        common = dict(image_size=32, num_classes=10, batch_size=8, training=True, augment=AugmentConfig(flip=False))
        plain = next(iter(make_pipeline(load_split(builder, "train"), **common)))
        augmented = next(iter(make_pipeline(load_split(builder, "train"), extra_layers=[layer], **common)))
    images, labels = (tensor.numpy() for tensor in augmented)
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32 and labels.shape == (8, 10)
    assert not np.allclose(images, plain[0].numpy())  # the layer really changed the images
    assert images.min() >= -1e-3 and images.max() <= 255 + 1e-3
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    soft = np.any((labels > 1e-6) & (labels < 1 - 1e-6))
    assert soft == mixes_labels  # label mixers mix the one-hot labels; the others leave them alone
    if not mixes_labels:
        np.testing.assert_array_equal(labels, plain[1].numpy())
