"""Test-time flip averaging: a model's output as the mean over each image and its mirror image.

Not part of the paper's network. A Mixer trained with random horizontal flips has learned two
views of every class, and averaging them is a two-member ensemble at twice the inference cost
(on the default Fashion-MNIST model it adds about half a point of validation accuracy).
`MLPMixer(flip_average=True)` wraps its graph in these two layers, so the averaging travels
with the model into `.keras` files, SavedModels and TFLite files:

    MirrorImages        images (N, H, W, C) -> (2N, H, W, C): the images, then their mirrors
    AverageMirrorPairs  outputs (2N, ...)   -> (N, ...):      mean of each image and its mirror

Only `keras.ops` is used, so both layers run on every Keras backend.
"""

import keras
from keras import ops

from keras_mixer.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class MirrorImages(keras.layers.Layer):
    """Append the left-right mirror of every image to the batch: (N, H, W, C) -> (2N, H, W, C).

    Rows 0..N-1 of the output are the images, rows N..2N-1 their mirrors, in the same order.

    Example:
    >>> import numpy as np
    >>> images = np.arange(4, dtype="float32").reshape(1, 1, 4, 1)
    >>> MirrorImages()(images)[:, 0, :, 0].numpy().tolist()
    [[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]]
    """

    def call(self, images):
        return ops.concatenate([images, ops.flip(images, axis=2)], axis=0)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else 2 * input_shape[0]
        return (batch, *input_shape[1:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class AverageMirrorPairs(keras.layers.Layer):
    """The mean of row i and row N + i of a (2N, ...) batch: undoes `MirrorImages` by averaging.

    Example:
    >>> import numpy as np
    >>> outputs = np.array([[0.0, 2.0], [4.0, 6.0]], "float32")  # an image, then its mirror
    >>> AverageMirrorPairs()(outputs).numpy().tolist()
    [[2.0, 4.0]]
    """

    def call(self, outputs):
        pairs = ops.reshape(outputs, (2, -1, *outputs.shape[1:]))
        return ops.mean(pairs, axis=0)

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None else input_shape[0] // 2
        return (batch, *input_shape[1:])
