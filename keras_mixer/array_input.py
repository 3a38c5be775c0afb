"""Arrays given to `MLPMixer.predict` (batches sliced on the calling thread, without `tf.data`), `evaluate`, `fit`.

Keras turns a NumPy array into a `tf.data` pipeline and reads each batch inside the compiled step. Two
costs come with it on the TensorFlow backend:
- With tf.data's autotuning on (its default), the step that follows a batch that was not ready yet
  runs on a tf.data thread whose intra-op parallelism is capped, and the whole forward pass then uses
  one core: on a 2-core AMD EPYC (AVX-512), S/16 `predict` on a NumPy batch of 32 ran at 12.4 images/s
  in most calls against 24 for the same model in a `tf.function` (`benchmarks/run.py`, row
  `keras_predict_numpy`).
- Even without autotuning, making the pipeline and slicing through it took 19.6 ms for one batch of 32
  images of 224 x 224 (195 ms for ten), where converting the same slices to tensors took 4.9 ms (70 ms):
  a probe on the 2-core Sapphire Rapids, 2026-12-07, where S/16's bfloat16 step takes about 220 ms.

So `predict_batches` runs Keras' predict loop itself for an in-memory array or tensor: each batch is a
slice converted to a tensor on the calling thread and given to the model's compiled predict step, with
the same callbacks and progress bar. Only one batch at a time is copied into a tensor (`from_tensor_slices`
copies the whole array first). Where it does not apply (`predicts_batches_itself`: several
replicas, `steps_per_execution` > 1, `steps` given) `array_dataset` is the input: a dataset without
autotuning. `MLPMixer.evaluate` keeps Keras' loop (its metrics and callbacks) and is given
Keras' own array adapter for the images, labels and sample weights with autotuning off
(`array_adapter_without_autotuning`), and so is `MLPMixer.fit`. Other
backends, and datasets the user built, are passed through unchanged.
"""

import math

import keras

DEFAULT_BATCH_SIZE = 32  # keras.Model.predict's own default


def is_in_memory_batch(x):
    """True for a NumPy array or a backend tensor (not a dataset, generator or dict)."""
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, dict)


def check_batch_size(batch_size):
    """Raise a `ValueError` unless `batch_size` is None or a positive integer (NumPy integers too).

    >>> check_batch_size(0)
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be a positive integer or None. Received: batch_size=0
    """
    import numbers  # noqa: PLC0415

    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer or None. Received: batch_size={batch_size!r}")


def check_image_batch(x, image_shape):
    """Raise one `ValueError` unless the in-memory `x` is a batch of numbers shaped (batch, *image_shape).

    Without it a wrong batch could reach a step Keras had traced again with every size unknown, and fail deep in
    the graph ("Depth of input must be a multiple of depth of filter").

    >>> import numpy as np
    >>> check_image_batch(np.zeros((2, 8, 8, 1), "float32"), (8, 8, 3))
    Traceback (most recent call last):
    ...
    ValueError: Expected a batch of images of shape (batch, 8, 8, 3). Received: an array of shape (2, 8, 8, 1)
    """
    shape = tuple(x.shape)
    if len(shape) != len(image_shape) + 1 or any(
        want is not None and have != want for have, want in zip(shape[1:], image_shape)
    ):
        wanted = ", ".join("?" if size is None else str(size) for size in image_shape)
        raise ValueError(f"Expected a batch of images of shape (batch, {wanted}). Received: an array of shape {shape}")
    try:
        dtype = keras.backend.standardize_dtype(x.dtype)  # NumPy's, TensorFlow's, JAX's or torch's
    except (TypeError, ValueError):  # strings, objects
        dtype = str(x.dtype)
    if not dtype.startswith(("float", "int", "uint", "bfloat")):
        raise ValueError(f"Expected images of numbers (uint8 or float). Received: an array of dtype {dtype}")


def predicts_batches_itself(model, x, steps=None):
    """Whether `predict_batches(model, x, ...)` runs the predict loop: the TensorFlow backend, an in-memory `x`,
    no `steps`, one step per execution, and the default (one-replica) distribution strategy, in and out of
    which the batch needs no splitting."""
    if keras.backend.backend() != "tensorflow" or not is_in_memory_batch(x) or steps is not None:
        return False
    import tensorflow as tf  # noqa: PLC0415  (only on the TensorFlow backend)

    return (
        model.steps_per_execution == 1
        and not tf.distribute.has_strategy()
        and model.distribute_strategy is tf.distribute.get_strategy()
    )


def predict_batches(model, x, batch_size=None, verbose="auto", callbacks=None):
    """`model.predict(x, batch_size, verbose, callbacks)` for an in-memory `x` (where `predicts_batches_itself`):
    Keras' predict loop, with each batch a slice of `x` converted to a tensor on this thread.

    The batches reach `model.predict_function` as Keras' own loop passes a dataset's elements (a list of one
    batch), so both share one trace; callbacks see the same calls, `model.stop_predicting` ends the loop early.
    Returns the outputs as NumPy arrays, concatenated over batches.

    >>> import numpy as np
    >>> from keras_mixer import MLPMixer
    >>> tiny = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, patch_size=4,
    ...                 image_size=8, num_channels=1, num_classes=3)
    >>> predict_batches(tiny, np.zeros((5, 8, 8, 1), "float32"), batch_size=2, verbose=0).shape
    (5, 3)
    """
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415  (only on the TensorFlow backend)

    batch_size = batch_size or DEFAULT_BATCH_SIZE
    steps = math.ceil(int(x.shape[0]) / batch_size)
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = keras.callbacks.CallbackList(
            callbacks, add_progbar=verbose != 0, verbose=verbose, epochs=1, steps=steps, model=model
        )
    model.make_predict_function()
    model.stop_predicting = False
    callbacks.on_predict_begin()
    outputs = []
    for step in range(steps):
        callbacks.on_predict_batch_begin(step)
        batch = tf.convert_to_tensor(x[step * batch_size : (step + 1) * batch_size])
        batch_outputs = model.predict_function([batch])
        outputs.append(batch_outputs)
        callbacks.on_predict_batch_end(step, {"outputs": batch_outputs})
        if model.stop_predicting:
            break
    callbacks.on_predict_end()
    return keras.tree.map_structure(lambda *parts: np.concatenate([np.asarray(part) for part in parts]), *outputs)


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

    return _without_autotuning(tf.data.Dataset.from_tensor_slices(x).batch(batch_size or DEFAULT_BATCH_SIZE))


def array_adapter_without_autotuning(x, y=None, sample_weight=None, batch_size=None, shuffle=False, class_weight=None):
    """Keras' own array adapter for `(x, y, sample_weight)`, whose `tf.data` dataset runs without autotuning, for
    `MLPMixer.fit` and `MLPMixer.evaluate`; `None` on other backends or where `x` is not an in-memory array or tensor.

    Keras' `fit` and `evaluate` take an adapter in place of `x` (and `fit` in `validation_data`) and use it as is,
    so batching, shuffling each epoch, the cast of other floats to floatx, sample and class weights and the
    errors for data of different lengths stay Keras' own; only autotuning is off.

    Probes (2-core Sapphire Rapids, 2026-12-07, S/16 at 224 px): Keras' `evaluate` on NumPy arrays (320 random
    images in batches of 32, three rounds) ran at 0.50-0.58x `predict`'s speed (float32 15.0 images/s, bfloat16
    55-60), and on a dataset without autotuning at 0.82-0.95x (float32 25-27, bfloat16 89-100): autotuning had left
    the forward pass on one core, as the module docstring says of `predict`. `fit` on NumPy arrays ran at 0.87x a
    dataset without autotuning in bfloat16 (batch 16, 160 images, 3 of 3 rounds; 15.1-15.3 against 17.1-17.6
    images/s) and, in float32, at 0.55x in one round of three; with this adapter 18.6-18.9 against 18.8-19.4
    (bfloat16, 3 rounds).

    >>> import numpy as np
    >>> adapter = array_adapter_without_autotuning(np.zeros((5, 4, 4, 3), "float32"), np.arange(5), batch_size=2)
    >>> adapter.num_batches if adapter else 3
    3
    """
    if keras.backend.backend() != "tensorflow" or not is_in_memory_batch(x):
        return None
    try:  # Keras' own adapter, which is not public API: a Keras without it gets its own path
        from keras.src.trainers.data_adapters import array_data_adapter  # noqa: PLC0415
    except ImportError:
        return None

    if not array_data_adapter.can_convert_arrays((x, y, sample_weight)):
        return None

    class WithoutAutotuning(array_data_adapter.ArrayDataAdapter):
        def get_tf_dataset(self):
            return _without_autotuning(super().get_tf_dataset())

    return WithoutAutotuning(
        x, y, sample_weight=sample_weight, batch_size=batch_size, shuffle=shuffle, class_weight=class_weight
    )


def _without_autotuning(dataset):
    import tensorflow as tf  # noqa: PLC0415  (only on the TensorFlow backend)

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
