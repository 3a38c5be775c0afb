"""Image files -> model input: decoding, channel conversion and resizing, written once.

The training pipeline (`training/data.py`), the SavedModel's serving signatures
(`keras_mixer/export.py`) and `training.predict` all call these functions, so an image is
prepared the same way wherever it goes. Pixels stay in [0, 255]; the model normalises them.
This module uses TensorFlow directly (like `export.py`): it is the data side, not the model.

- `decode_image`: JPEG, PNG, BMP or GIF bytes (a GIF's first frame) -> uint8 (H, W, channels).
- `convert_channels`: grayscale, grayscale + alpha, RGB or RGBA -> the model's 1 or 3 channels.
- `resize_for_eval`: to the model's size; an image larger than the model's size / 0.875 is scaled
  so that a centred crop keeps 87.5 % of its shorter side (the usual evaluation crop), smaller
  ones are resized directly.
"""

import tensorflow as tf

EVAL_CROP_FRACTION = 0.875
IMAGE_FILE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def convert_channels(image, channels):
    """uint8 or float image (..., H, W, C) with C in 1-4 -> `channels` (1 or 3); alpha is dropped.

    Colour to grayscale uses ITU-R 601 luma (`tf.image.rgb_to_grayscale`); grayscale to colour
    repeats the channel.

    Example:
    >>> convert_channels(tf.zeros((2, 2, 4), tf.uint8), 3).shape
    TensorShape([2, 2, 3])
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels!r}")
    have = image.shape[-1]
    if have is not None:  # known statically: no graph branches
        if have in (1, 2):
            return image[..., :1] if channels == 1 else tf.repeat(image[..., :1], 3, axis=-1)
        return tf.image.rgb_to_grayscale(image[..., :3]) if channels == 1 else image[..., :3]
    is_colour = tf.shape(image)[-1] >= 3
    if channels == 1:
        return tf.cond(is_colour, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
    return tf.cond(is_colour, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))


# The first bytes of each format `decode_image` reads.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def is_image_bytes(encoded):
    """Whether each string starts like a JPEG, PNG, GIF or BMP file (a check before decoding,
    which lets an error name the item that is not an image).

    Example:
    >>> is_image_bytes(tf.constant([b"GIF89a...", b"hello"])).numpy().tolist()
    [True, False]
    """
    matches = [tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic) for magic in IMAGE_SIGNATURES]
    return tf.reduce_any(tf.stack(matches), axis=0)


def decode_image(encoded, channels=None):
    """Encoded JPEG, PNG, BMP or GIF bytes -> uint8 (H, W, `channels`); a GIF gives its first frame.

    `channels=None` keeps the file's own channels (1 to 4).

    Raises `tf.errors.InvalidArgumentError` on bytes that are not such an image.

    Example:
    >>> png = tf.io.encode_png(tf.zeros((4, 6, 1), tf.uint8))
    >>> decode_image(png, 3).shape
    TensorShape([4, 6, 3])
    """
    # channels=0 keeps the file's own count (GIF decoding refuses 1); convert afterwards.
    image = tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)
    if channels is None:
        return image
    image = convert_channels(image, channels)
    image.set_shape([None, None, channels])
    return image


def resize_for_eval(image, image_size):
    """float32 image(s) (..., H, W, C) at `image_size` (int or (height, width)), see the module docstring.

    Example:
    >>> resize_for_eval(tf.zeros((400, 300, 3)), 224).shape
    TensorShape([224, 224, 3])
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    image = tf.cast(image, tf.float32)
    if image.shape[-3] == height and image.shape[-2] == width:
        return image
    shape = tf.shape(image)
    source = tf.cast(tf.stack([shape[-3], shape[-2]]), tf.float32)
    # The scale at which the crop of the model's size keeps 87.5 % of the shorter side.
    scale = tf.reduce_max(tf.constant([height, width], tf.float32) / source) / EVAL_CROP_FRACTION
    resized = tf.cond(
        scale < 1.0,
        lambda: tf.image.resize(image, tf.cast(tf.round(source * scale), tf.int32)),
        lambda: tf.image.resize(image, (height, width)),
    )
    return tf.image.resize_with_crop_or_pad(resized, height, width)


def load_image(path, image_size, channels):
    """An image file -> float32 (height, width, `channels`) model input in [0, 255].

    Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> tf.io.write_file(path, tf.io.encode_png(tf.zeros((10, 10, 3), tf.uint8)))
    >>> load_image(path, 28, 1).shape
    TensorShape([28, 28, 1])
    """
    return resize_for_eval(decode_image(tf.io.read_file(path), channels), image_size)
