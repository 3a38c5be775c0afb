"""The optimiser's update of a graph-mode train step as one XLA-compiled call.

Keras 3's optimisers update each weight with separate element-wise ops: weight decay, the two moment
updates, the square root, the division and the assignment each pass over every weight, and gradient
clipping adds passes over the gradients. Compiled as one XLA function the passes fuse, per weight, into
one that reads the gradient, the weight and its slots once, while the forward and backward matmuls stay
on oneDNN (a step compiled whole by XLA, `--xla`, loses oneDNN's matmuls).

`python -m benchmarks.fused_update_ab` times train steps with and without it in alternation. On the
2-core AMD EPYC with AVX2 only it trained S/16 at batch 8 1.05x as fast (median of 12 rounds, faster in
9), and the small default model as fast as before (1.00x, 6 of 12); compiling the update adds 3-4 s to
a run's start (README, "Performance"). `training.train.compile_for_training` uses it wherever the step
is not compiled whole by XLA. Like the package's compiled GELU it applies on the TensorFlow backend with
no GPU visible; a run with several replicas (MirroredStrategy) keeps Keras' own update.
"""


def compile_update_with_xla(optimizer):
    """Make `optimizer.apply` (so `apply_gradients`, and `model.fit`'s update) one XLA-compiled call.

    Build the optimiser first. It keeps its class, config and variables, so checkpoints load without this
    module. The compiled update runs only where `tensorflow_cpu_xla_allowed()`, inside a traced step,
    with one replica, for the weights the optimiser was built on in their order; anything else calls
    Keras' own `apply`. Returns `optimizer`.

    Example:
    >>> import keras, tensorflow as tf
    >>> weight = keras.Variable([1.0, 2.0])
    >>> optimizer = keras.optimizers.SGD(0.5)
    >>> optimizer.build([weight])
    >>> optimizer = compile_update_with_xla(optimizer)
    >>> step = tf.function(lambda: optimizer.apply([tf.constant([1.0, 1.0])], [weight]))
    >>> _ = step()
    >>> [float(v) for v in weight.numpy()], optimizer.apply.compiled.experimental_get_tracing_count()
    ([0.5, 1.5], 1)
    """
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.fused_norm import tensorflow_cpu_xla_allowed  # noqa: PLC0415

    if not optimizer.built:
        raise ValueError("compile_update_with_xla needs a built optimiser: call optimizer.build(variables) first")
    keras_apply = optimizer.apply  # the class's method, bound
    # Called with the gradients only: Keras Variables cannot be tf.function arguments, so the built ones
    # are captured (`apply` without variables uses them).
    compiled = tf.function(keras_apply, jit_compile=True)

    def apply(grads, trainable_variables=None):
        grads = list(grads)
        if (
            tf.inside_function()
            and tensorflow_cpu_xla_allowed()
            and tf.distribute.get_strategy().num_replicas_in_sync == 1
            and all(g is not None for g in grads)
            and _same_variables(trainable_variables, optimizer._trainable_variables)
        ):
            return compiled(grads)
        return keras_apply(grads, trainable_variables)

    apply.compiled = compiled  # traced once used: `apply.compiled.experimental_get_tracing_count()`
    optimizer.apply = apply
    return optimizer


def _same_variables(given, built):
    return given is None or (len(given) == len(built) and all(a is b for a, b in zip(given, built)))
