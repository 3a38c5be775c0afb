"""`MLPMixer.predict`'s compiled step, traced once with the batch size unknown.

Keras traces its predict step with the first batch's shapes and traces it again, relaxed, when a batch
of another size comes (the last, smaller batch of most inputs), and tracing S/16 twice costs seconds.
(The batch size once decided whether oneDNN's layer norm could run, `keras_mixer.fused_norm`; it no
longer does.) So on the TensorFlow backend the first call traces the
step with every batch dimension unknown; Keras' `reduce_retracing` then runs every batch size on that one
trace.
"""


def any_batch_size_spec(tensor):
    """The `tf.TensorSpec` of `tensor` with its first (batch) dimension unknown.

    Example:
    >>> import tensorflow as tf
    >>> any_batch_size_spec(tf.zeros((2, 3), tf.uint8))
    TensorSpec(shape=(None, 3), dtype=tf.uint8, name=None)
    """
    import tensorflow as tf  # noqa: PLC0415  (TensorFlow tensors)

    return tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype)


def with_any_batch_size(step):
    """`step` (Keras' compiled predict function), tracing its first call with the batch sizes unknown.

    Anything that is not a `tf.function` (an eagerly run model, other backends) is returned as it is,
    and so is a call whose data holds anything but tensors with a batch dimension (distributed values):
    Keras' own tracing then applies.

    Example:
    >>> import tensorflow as tf
    >>> traced = []
    >>> step = tf.function(lambda data: traced.append(data[0].shape) or data[0] * 2, reduce_retracing=True)
    >>> step = with_any_batch_size(step)
    >>> [int(step([tf.ones((n, 3))]).shape[0]) for n in (4, 1)], [list(shape) for shape in traced]
    ([4, 1], [[None, 3]])
    """
    if not hasattr(step, "get_concrete_function"):
        return step
    import tensorflow as tf  # noqa: PLC0415  (a tf.function: the TensorFlow backend)

    traced = False

    def call(data):
        nonlocal traced
        if not traced:
            traced = True
            leaves = tf.nest.flatten(data)
            if leaves and all(isinstance(leaf, tf.Tensor) and leaf.shape.rank for leaf in leaves):
                step.get_concrete_function(tf.nest.map_structure(any_batch_size_spec, data))
        return step(data)

    return call
