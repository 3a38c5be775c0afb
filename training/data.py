"""tfds image classification -> tf.data pipelines for training, validation and the held-out test.

What lives here: opening a tfds dataset by name (with clear errors when it is unknown or not
prepared offline), carving a validation part out of the training split, and the per-split
pipelines (decode, resize/crop, augment, cache, shuffle, batch, prefetch). The offline
preparation of Fashion-MNIST lives in `offline_data.py`; the model never sees this module.

Images leave the pipeline as float32 pixels in [0, 255] (the model normalises them) and labels
as one-hot float32 vectors (so MixUp/CutMix soft labels and label smoothing share one loss).
"""

import dataclasses

import keras
import tensorflow as tf

from training.offline_data import OFFLINE_DATASETS, prepare_command, prepare_fashion_mnist

AUTOTUNE = tf.data.AUTOTUNE


class DatasetError(ValueError):
    """The dataset cannot be used: unknown, not prepared, or not image classification."""


@dataclasses.dataclass
class DatasetSpec:
    """What the model and the trainer need to know about a dataset."""

    name: str
    num_classes: int
    num_channels: int
    class_names: list
    train_examples: int
    validation_examples: int
    test_examples: int
    splits: dict  # role -> tfds split string


def open_builder(name, data_dir=None, prepare_offline=True, split="train"):
    """The tfds builder of `name`, readable (`split` is what is tried); Fashion-MNIST is prepared offline."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"Unknown tfds dataset {name!r}. List the names with: "
            "python -c \"import tensorflow_datasets as tfds; print('\\n'.join(tfds.list_builders()))\""
        ) from None
    if _is_readable(builder, split):
        return builder
    if prepare_offline and name in OFFLINE_DATASETS:
        return prepare_fashion_mnist(data_dir)
    raise DatasetError(
        f"Dataset {name!r} is not prepared in {builder.data_dir_root} and this machine has no network. "
        f"Prepare it with:\n  {prepare_command(name, data_dir)}"
    )


def _is_readable(builder, split):
    """Prepared on disk, or served some other way (`tfds.testing.mock_data` patches `as_dataset`)."""
    if builder.is_prepared():
        return True
    try:
        builder.as_dataset(split=split)
    except (AssertionError, FileNotFoundError, ValueError, OSError):
        return False
    return True


def dataset_spec(builder, train_split="train", test_split="test", validation_fraction=0.05):
    """Class count, channels, names and the three split strings (train / validation / test)."""
    info = builder.info
    if info.supervised_keys is None or "label" not in info.features or "image" not in info.features:
        raise DatasetError(f"{builder.name!r} is not an image-classification dataset (needs 'image' and 'label').")
    import tensorflow_datasets as tfds  # noqa: PLC0415

    if not 0.0 <= validation_fraction < 1.0:
        raise DatasetError(
            f"validation_fraction must be in [0, 1). Received: validation_fraction={validation_fraction}"
        )
    if not info.splits:
        # No split metadata (e.g. under tfds.testing.mock_data): count, and hold nothing out.
        def count(split):
            return int(builder.as_dataset(split=split).reduce(0, lambda total, _: total + 1))

        start, end, held_out, test_examples = 0, count(train_split), 0, count(test_split)
        splits = {"train": train_split, "validation": None, "test": test_split}
    else:
        try:
            train_part = tfds.core.ReadInstruction.from_spec(train_split).to_absolute(info.splits)
            test_examples = info.splits[test_split].num_examples
        except (ValueError, KeyError, AssertionError) as error:
            raise DatasetError(
                f"Bad split for {builder.name!r} ({error}). Available splits: {sorted(info.splits)}; slices such "
                f"as 'train[:5000]' work. Received: train_split={train_split!r}, test_split={test_split!r}"
            ) from None
        if len(train_part) != 1:
            raise DatasetError(f"train_split must be one split or one slice of it. Received: {train_split!r}")
        base = train_part[0].splitname
        start = train_part[0].from_ or 0
        end = train_part[0].to if train_part[0].to is not None else info.splits[base].num_examples
        held_out = int(round((end - start) * validation_fraction))
        splits = {
            "train": f"{base}[{start}:{end - held_out}]",
            "validation": f"{base}[{end - held_out}:{end}]" if held_out else None,
            "test": test_split,
        }
    label = info.features["label"]
    return DatasetSpec(
        name=builder.name,
        num_classes=label.num_classes,
        num_channels=info.features["image"].shape[-1] or 3,
        class_names=list(label.names),
        train_examples=end - start - held_out,
        validation_examples=held_out,
        test_examples=test_examples,
        splits=splits,
    )


# --- per-example and per-batch transforms ----------------------------------------------------


def _resize_for_eval(image, image_size):
    """Small images: resize to the model size. Large ones: resize so the crop is 87.5 %, center crop."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    image = tf.cast(image, tf.float32)
    if image.shape[0] is not None and image.shape[0] == image_size and image.shape[1] == image_size:
        return image
    scale = tf.cast(image_size, tf.float32) / 0.875 / tf.cast(tf.minimum(height, width), tf.float32)
    large = tf.cast(tf.minimum(height, width), tf.float32) > image_size / 0.875
    resized = tf.cond(
        large,
        lambda: tf.image.resize(
            image, tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
        ),
        lambda: tf.image.resize(image, (image_size, image_size)),
    )
    return tf.image.resize_with_crop_or_pad(resized, image_size, image_size)


def _inception_crop(image, image_size, seed):
    """Random area 8-100 %, aspect 3/4-4/3 crop, resized to the model size (large images)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    return tf.image.resize(tf.cast(crop, tf.float32), (image_size, image_size))


def random_pad_crop(images, padding, seed):
    """Per-sample random translation by up to `padding` pixels (zero pad, then crop), vectorised.

    images: (batch, height, width, channels) float32.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform((2, batch), seed, 0, 2 * padding + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(height)[None, :]  # (batch, height)
    cols = offsets[1][:, None] + tf.range(width)[None, :]  # (batch, width)
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)  # (batch, height, width + 2p, channels)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)  # (batch, height, width, channels)


def random_flip(images, seed):
    """Per-sample horizontal flip with probability 1/2, vectorised."""
    flip = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def batch_augmenters(augment, seed):
    """Keras 3 batch layers from the config (RandAugment, MixUp, CutMix), in that order.

    Any extra layer with the same batch contract (keras_cv's included) can be appended by the
    caller of `make_pipeline`.
    """
    layers = []
    if augment.randaugment_layers:
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=augment.randaugment_layers,
                factor=augment.randaugment_magnitude,
                seed=seed,
            )
        )
    if augment.mixup_alpha:
        layers.append(keras.layers.MixUp(alpha=augment.mixup_alpha, seed=seed))
    if augment.cutmix_alpha:
        layers.append(keras.layers.CutMix(factor=augment.cutmix_alpha, seed=seed))
    return layers


def _apply_layer(layer, images, labels):
    """Image-only layers take images; label-mixing ones (MixUp, CutMix) take {"images", "labels"}."""
    if isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix)) or getattr(layer, "mixes_labels", False):
        out = layer({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]
    return layer(images, training=True), labels


# --- pipelines ----------------------------------------------------------------------------------


def make_pipeline(
    dataset,
    *,
    image_size,
    num_classes,
    batch_size,
    training,
    augment=None,
    seed=0,
    cache=True,
    shuffle_buffer=10_000,
    extra_layers=(),
    repeat=None,
):
    """(image, label) examples -> batches of (float32 pixels [0, 255], one-hot float32 labels).

    Training pipelines shuffle, augment and drop the last partial batch (equal per-replica
    shapes); evaluation pipelines keep every example in order.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 28, 28, 1), "uint8"), np.arange(5)))
    >>> images, labels = next(iter(make_pipeline(ds, image_size=28, num_classes=5, batch_size=2, training=False)))
    >>> tuple(images.shape), tuple(labels.shape)
    ((2, 28, 28, 1), (2, 5))
    """
    height, width = dataset.element_spec[0].shape[:2]
    small_images = height is not None and width is not None and height <= image_size and width <= image_size
    random_crop = training and augment is not None and augment.random_crop

    def decode(image, label):
        return image, tf.one_hot(tf.cast(label, tf.int32), num_classes)

    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)
    if small_images or not random_crop:
        # Resize once (a no-op at the model size), cache, then shuffle the cached tensors.
        dataset = dataset.map(lambda i, y: (_resize_for_eval(i, image_size), y), num_parallel_calls=AUTOTUNE)
        if cache:
            dataset = dataset.cache()
        if not training:
            return _shard_by_element(dataset.batch(batch_size)).prefetch(AUTOTUNE)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        # Large images: a fresh Inception crop of every example every epoch.
        def inception_crop(index, example):
            image, label = example
            return _inception_crop(image, image_size, tf.stack([tf.cast(seed, tf.int64), index])), label

        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.enumerate().map(inception_crop, num_parallel_calls=AUTOTUNE)
    dataset = dataset.repeat(repeat).batch(batch_size, drop_remainder=True)
    pad_crop = random_crop and small_images and augment.crop_padding > 0

    layers = [*batch_augmenters(augment, seed), *extra_layers] if augment is not None else list(extra_layers)

    def augment_batch(step, batch):
        images, labels = batch
        step_seed = tf.stack([tf.cast(seed, tf.int64), step])
        if pad_crop:
            images = random_pad_crop(images, augment.crop_padding, step_seed)
        if augment is not None and augment.flip:
            images = random_flip(images, step_seed + 1)
        for layer in layers:
            images, labels = _apply_layer(layer, images, labels)
        return images, labels

    dataset = dataset.enumerate().map(augment_batch, num_parallel_calls=AUTOTUNE)
    return _shard_by_element(dataset).prefetch(AUTOTUNE)


def _shard_by_element(dataset):
    """Multi-worker input sharding by element: small tfds datasets have one file, too few to shard."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def load_split(builder, split, shuffle_files=False, seed=0):
    """(image, label) examples of one tfds split string."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    read_config = tfds.ReadConfig(shuffle_seed=seed) if shuffle_files else None
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=shuffle_files, read_config=read_config)
