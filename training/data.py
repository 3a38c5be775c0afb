"""tfds datasets and image folders -> tf.data pipelines for training, validation and the held-out test.

What lives here: opening a tfds dataset by name (with clear errors when it is unknown or not
prepared offline), carving a validation part out of the training split, `open_source`, the one
interface over tfds and image folders (`training/folders.py`), and the per-split pipelines
(decode, channels, resize/crop, augment, cache, shuffle, batch, prefetch), the same for both. The
offline preparation of Fashion-MNIST lives in `offline_data.py`; the model never sees this module.

Images leave the pipeline as float32 pixels in [0, 255] (the model normalises them) and labels
as one-hot float32 vectors (so MixUp/CutMix soft labels and label smoothing share one loss).
"""

import dataclasses
import os

import keras
import tensorflow as tf

from keras_mixer.preprocessing import convert_channels, decode_image, resize_for_eval
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


def open_builder(name, data_dir=None, split="train"):
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
    if name in OFFLINE_DATASETS:
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
        if end <= start:
            raise DatasetError(
                f"The training split {train_split!r} holds no examples (examples {start} to {end} of {base!r}): "
                "a slice must start before it ends, e.g. 'train[10%:50%]'."
            )
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

    Any other batch augmentation layer can be appended by the caller of `make_pipeline`
    (`extra_layers`): Keras' own, keras-cv's (its label-mixing CutMix, MixUp and FourierMix included)
    or a plain Keras layer that maps a batch of images to a batch of images.
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


def _takes_images_and_labels(layer):
    """Keras' label mixers and every keras-cv augmentation layer take (and return) {"images", "labels"}.

    keras-cv's layers all accept that dictionary, and its label mixers (CutMix, MixUp, FourierMix) accept
    nothing else; they are recognised by their package, as keras-cv is an optional install.
    """
    return isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix)) or type(layer).__module__.startswith(
        "keras_cv."
    )


def _apply_layer(layer, images, labels):
    if _takes_images_and_labels(layer):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], images.dtype), tf.cast(out["labels"], labels.dtype)
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
    decode=None,
    num_channels=None,
):
    """(image, label) examples -> batches of (float32 pixels [0, 255], one-hot float32 labels).

    Training pipelines shuffle, augment and drop the last partial batch (equal per-replica
    shapes); evaluation pipelines keep every example in order.

    Args:
        decode: turns an example's first element into a uint8 image (H, W, C), e.g. a file path
            into pixels (`training.folders`); None when the examples already hold images (tfds).
            Training shuffles before decoding, so the shuffle buffer holds paths, not pixels.
        num_channels: convert images to this many channels (1 or 3); None keeps theirs.
        cache: keep the decoded, resized images in memory after the first epoch.

    Example:
    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 28, 28, 1), "uint8"), np.arange(5)))
    >>> images, labels = next(iter(make_pipeline(ds, image_size=28, num_classes=5, batch_size=2, training=False)))
    >>> tuple(images.shape), tuple(labels.shape)
    ((2, 28, 28, 1), (2, 5))
    """
    spec = dataset.element_spec[0]
    height, width = spec.shape[:2] if spec.shape.rank == 3 else (None, None)
    small_images = height is not None and width is not None and height <= image_size and width <= image_size
    random_crop = training and augment is not None and augment.random_crop

    def pixels(image):
        image = image if decode is None else decode(image)
        return image if num_channels is None else convert_channels(image, num_channels)

    def one_hot(image, label):
        return image, tf.one_hot(tf.cast(label, tf.int32), num_classes)

    def prepare(image, label):
        return resize_for_eval(pixels(image), image_size), label

    dataset = dataset.map(one_hot, num_parallel_calls=AUTOTUNE)
    if small_images or not random_crop:
        # Resize once (a no-op at the model size); cached, the shuffle runs over the cached tensors,
        # else over the undecoded examples, before the decode.
        if cache:
            dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE).cache()
        if not training:
            dataset = dataset if cache else dataset.map(prepare, num_parallel_calls=AUTOTUNE)
            return _shard_by_element(dataset.batch(batch_size)).prefetch(AUTOTUNE)
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if not cache:
            dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE)
    else:
        # Large images: a fresh Inception crop of every example every epoch.
        def inception_crop(index, example):
            image, label = example
            return _inception_crop(pixels(image), image_size, tf.stack([tf.cast(seed, tf.int64), index])), label

        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.enumerate().map(inception_crop, num_parallel_calls=AUTOTUNE)
    if decode is not None:
        # Files were checked before training; one that breaks afterwards is skipped, not fatal.
        dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.repeat().batch(batch_size, drop_remainder=True)
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


def fits_in_memory(examples, image_size, num_channels, budget_bytes=2 << 30):
    """Whether `examples` images at the model's size (float32) fit a cache of `budget_bytes`."""
    return examples * image_size * image_size * num_channels * 4 <= budget_bytes


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


# --- one interface over tfds datasets and image folders ----------------------------------------


@dataclasses.dataclass
class DataSource:
    """A dataset the trainer, evaluate and export read the same way, whatever it comes from.

    `examples(role, shuffle_files, seed)` gives (image or file path, integer label) examples of
    "train", "validation" or "test"; `decode` (None for tfds, which decodes itself) turns a file
    path into pixels inside `make_pipeline`. `splits_record` is the folder file lists a new run
    writes into its model dir (None for tfds, or when the run already has them).
    """

    spec: DatasetSpec
    examples: object
    decode: object = None
    splits_record: dict | None = None


def open_source(data, model_dir=None, progress=True):
    """The `DataSource` of a `DataConfig`: a tfds name, or a folder of class subfolders.

    A folder's file lists come from `model_dir/splits.json` when the run has one, else from
    listing and checking the folder (see `training.folders`).
    """
    from training import folders  # noqa: PLC0415

    if not folders.is_image_folder(data.dataset):
        if os.sep in data.dataset and not os.path.exists(data.dataset):
            raise DatasetError(f"No such folder: {data.dataset!r} (a tfds name has no '/' in it).")
        builder = open_builder(data.dataset, data.data_dir, split=data.train_split)
        spec = dataset_spec(builder, data.train_split, data.test_split, data.validation_fraction)
        return DataSource(
            spec=spec,
            examples=lambda role, shuffle_files=False, seed=0: load_split(
                builder, spec.splits[role], shuffle_files, seed
            ),
        )
    if (data.train_split, data.test_split) != ("train", "test"):
        raise DatasetError(
            "--train-split and --test-split name tfds splits; an image folder uses its train/ and test/ "
            f"subfolders or --test-fraction. Received: train_split={data.train_split!r}, test_split={data.test_split!r}"
        )
    record = folders.read_splits(model_dir) if model_dir else None
    new_record = None
    if record is None:
        record = new_record = folders.build_splits(
            data.dataset, data.test_fraction, data.validation_fraction, data.split_seed, data.skip_bad_images, progress
        )
    root, channels = record["root"], record["num_channels"]

    def examples(role, shuffle_files=False, seed=0):
        files = record[role]
        paths = tf.constant([os.path.join(root, path) for path, _ in files], tf.string)
        labels = tf.constant([label for _, label in files], tf.int64)
        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        return dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True) if shuffle_files else dataset

    spec = DatasetSpec(
        name=os.path.basename(root.rstrip(os.sep)),
        num_classes=len(record["class_names"]),
        num_channels=channels,
        class_names=record["class_names"],
        train_examples=len(record["train"]),
        validation_examples=len(record["validation"]),
        test_examples=len(record["test"]),
        splits={
            role: f"{root}: {len(record[role])} files" + (f" ({role}/)" if record["layout"] == "presplit" else "")
            if record[role]
            else None
            for role in folders.ROLES
        },
    )
    return DataSource(
        spec=spec,
        examples=examples,
        decode=lambda path: decode_image(tf.io.read_file(path), channels),
        splits_record=new_record,
    )
