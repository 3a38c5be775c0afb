"""tf.distribute strategies for the trainer, and the one fix `model.fit` needs for multi-worker.

`make_strategy("auto")` picks MultiWorkerMirroredStrategy when TF_CONFIG names more than one
worker, MirroredStrategy over all visible GPUs when there are any, and the default (one device)
strategy otherwise.

The multi-worker fixes (`enable_multi_worker_fit`). Keras 3.15's TF trainer has two problems
under MultiWorkerMirroredStrategy, both in how it *reduces* values, not in training itself:

1. Before the first step it pulls one batch and reduces it across replicas
   (`strategy.reduce("MEAN", batch)`) only to learn the input structure and shapes for
   `_symbolic_build`; that eager cross-worker reduce of a PerReplica value fails ("Attempt to
   convert a value (PerReplica...)", keras-team/keras#20585, tensorflow/tensorflow#72388).
   Fix: take this worker's first local replica batch instead (shapes are all it needs).
2. Every step it reduces the per-replica logs with `strategy.reduce("MEAN", v, axis=0)`, and
   the logs are scalars ("Invalid reduction dimension 0 for input with 0 dimensions").
   Fix: scalars are reduced with `axis=None`; everything else exactly as Keras does.

With both, `fit` keeps Keras' own train step, callbacks, progress bar and checkpoint semantics
on every strategy; tests/test_distribute.py runs a real two-process job on 127.0.0.1.
"""

import json
import os
import types

import tensorflow as tf

from training.choices import STRATEGIES


def tf_config_workers():
    """The number of workers TF_CONFIG names (0 when unset)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return len(config.get("cluster", {}).get("worker", []))


def make_strategy(name="auto"):
    """A `tf.distribute.Strategy` by name; see the module docstring for what "auto" picks."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Expected one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "auto":
        if tf_config_workers() > 1:
            name = "multi_worker"
        elif tf.config.list_logical_devices("GPU"):
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()  # the default strategy: one device, no wrapping
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)


def is_chief(strategy):
    """True on the worker that writes artefacts (the only one outside multi-worker runs)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or tf_config_workers() <= 1:
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)


def _symbolic_build_from_local_batch(model, iterator=None, data_batch=None):
    """Keras' `_maybe_symbolic_build`, minus the cross-replica reduce of the sample batch."""
    if model._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, batches in iterator:
            batch = next(batches)
            data_batch = tf.nest.map_structure(
                lambda value: (
                    model.distribute_strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                batch,
            )
            break
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=data_batch)


def _scalar_safe_reduce_per_replica(keras_reduce):
    """Wrap Keras' `reduce_per_replica` so multi-worker MEAN of scalar logs uses axis=None (fix 2)."""
    from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: PLC0415

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return keras_reduce(values, strategy, reduction)

        def reduce(value):
            scalar = value.values[0].shape.rank == 0 if hasattr(value, "values") else value.shape.rank == 0
            return strategy.reduce("MEAN", value, axis=None if scalar else 0)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.keras_original = keras_reduce
    return reduce_per_replica


def enable_multi_worker_fit(model):
    """Make `model.fit`/`evaluate` work under MultiWorkerMirroredStrategy (see module docstring).

    Harmless under every other strategy: fix 1 changes nothing there, fix 2 applies only to
    collective multi-worker strategies.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: PLC0415

    model._maybe_symbolic_build = types.MethodType(_symbolic_build_from_local_batch, model)
    if not hasattr(tf_trainer.reduce_per_replica, "keras_original"):
        tf_trainer.reduce_per_replica = _scalar_safe_reduce_per_replica(tf_trainer.reduce_per_replica)
    return model
