"""Shared fixtures: quiet TensorFlow logs, restore the global dtype policy after each test, a cheap collector."""

import fcntl
import gc
import os

from training.quiet import quiet_tensorflow_import

quiet_tensorflow_import(())  # TensorFlow's start-up lines go to the terminal in each pytest-xdist process

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_finish(session):
    """Hide the imported modules' objects from the collector once the test modules are imported (see below)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _collect_what_the_module_left():
    """At the end of each test module, collect what the per-test freezes kept out of the collector's sight."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Reset Keras' dtype policy and names after each test, then hide the survivors from the collector.

    `keras.utils.clear_session()` ends in `gc.collect()`, which walks every object Python tracks: with
    TensorFlow, Keras and what tests import lazily (tfds, the TFLite converter, ...), hundreds of thousands of
    objects that live until the process ends, 0.1-0.3 s a test on a 2-core Sapphire Rapids. `gc.freeze()`
    moves the survivors of each collection out of its sight, so that the next test's collection walks only
    what that test created; the module fixture above collects the rest once a module.
    """
    yield
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    gc.freeze()


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory, worker_id):
    """A tfds data dir holding fashion_mnist prepared offline from Debian's files (once per test run).

    The pytest-xdist processes share one copy: the first prepares it (half a minute) while the other
    waits on the lock, instead of each preparing its own.
    """
    from training.offline_data import DEBIAN_DIR, prepare_fashion_mnist  # noqa: PLC0415

    if not os.path.isdir(DEBIAN_DIR):
        pytest.fail(f"{DEBIAN_DIR} is missing: the README's test command installs dataset-fashion-mnist")
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the parent is this run's, common to its workers
    with open(shared / "tfds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a killed worker's process ends
        prepare_fashion_mnist(str(shared / "tfds"))  # does nothing where the dataset is already prepared
    return str(shared / "tfds")
