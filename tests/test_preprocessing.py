"""`keras_mixer.preprocessing`: the one decode / channel / resize path of training, serving and predict."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mixer.preprocessing import convert_channels, decode_image, load_image, resize_for_eval


def _gif(frames):
    buffer = io.BytesIO()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def test_an_animated_gif_gives_its_first_frame_in_the_asked_channels():
    black, white = np.zeros((6, 5, 3), np.uint8), np.full((6, 5, 3), 255, np.uint8)
    encoded = _gif([white, black])
    for channels in (1, 3):
        image = decode_image(tf.constant(encoded), channels).numpy()
        assert image.shape == (6, 5, channels) and image.min() == 255


def test_channel_conversions_match_the_itu_601_luma_and_drop_alpha():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (4, 3, 4)).astype(np.uint8)
    luma = rgba[..., :3].astype(float) @ np.array([0.2989, 0.5870, 0.1140])
    np.testing.assert_allclose(convert_channels(tf.constant(rgba), 1).numpy()[..., 0], luma, atol=1.0)
    np.testing.assert_array_equal(convert_channels(tf.constant(rgba), 3).numpy(), rgba[..., :3])
    gray_alpha = rgba[..., :2]
    np.testing.assert_array_equal(convert_channels(tf.constant(gray_alpha), 3).numpy(), np.repeat(rgba[..., :1], 3, -1))
    # The same with the channel count unknown until run time (files of mixed kinds in tf.data).
    dynamic = tf.function(
        lambda x: convert_channels(x, 1), input_signature=[tf.TensorSpec((None, None, None), tf.uint8)]
    )
    np.testing.assert_allclose(dynamic(tf.constant(rgba)).numpy()[..., 0], luma, atol=1.0)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        convert_channels(tf.constant(rgba), 4)


def test_large_images_lose_their_outer_eighth_small_ones_are_resized_whole():
    frame = np.full((400, 320, 3), 255, np.uint8)
    frame[:20], frame[-20:], frame[:, :16], frame[:, -16:] = 0, 0, 0, 0  # a 5 % black border
    cropped = resize_for_eval(tf.constant(frame), 224).numpy()
    assert cropped.shape == (224, 224, 3) and cropped.min() > 250  # the centre crop drops the border
    small = frame[::16, ::16]  # 25 x 20: smaller than the model's size / 0.875
    whole = resize_for_eval(tf.constant(small), 28).numpy()
    assert whole.shape == (28, 28, 3) and whole.min() < 5  # resized directly: the border stays


def test_not_an_image_raises(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"plain text")
    with pytest.raises(tf.errors.InvalidArgumentError):
        load_image(str(path), 28, 3)
