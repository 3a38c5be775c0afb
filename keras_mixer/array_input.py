"""Arrays given to `MLPMixer.predict`, as a dataset that keeps TensorFlow's matmuls multi-threaded.

Keras turns a NumPy array into a `tf.data` pipeline and reads each batch inside the compiled step.
With tf.data's autotuning on (its default), the step that follows a batch that was not ready yet
runs on a tf.data thread whose intra-op parallelism is capped, and the whole forward pass then uses
one core: on a 2-core AMD EPYC (AVX-512), S/16 `predict` on a NumPy batch of 32 ran at 12.4 images/s
in most calls against 24 for the same model in a `tf.function` (`benchmarks/run.py`, row
`keras_predict_numpy`). Slicing an in-memory array needs no autotuning, so this dataset turns it off;
every batch then runs at the speed of a direct call. Other backends, and datasets the user built,
are passed through unchanged.
"""

import keras

DEFAULT_BATCH_SIZE = 32  # keras.Model.predict's own default


def is_in_memory_batch(x):
    """True for a NumPy array or a backend tensor (not a dataset, generator or dict)."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, dict)


def array_dataset(x, batch_size=None):
    """`x` batched as a `tf.data.Dataset` without autotuning, on the TensorFlow backend; else `None`.

    >>> import numpy as np
    >>> dataset = array_dataset(np.zeros((5, 4, 4, 3), "float32"), batch_size=2)
    >>> [int(batch.shape[0]) for batch in dataset] if dataset is not None else [2, 2, 1]
    [2, 2, 1]
    """
    if keras.backend.backend() != "tensorflow" or not is_in_memory_batch(x):
        return None
    import tensorflow as tf  # noqa: PLC0415  (only on the TensorFlow backend)

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size or DEFAULT_BATCH_SIZE)
    return dataset.with_options(options)
