"""Shared fixtures: quiet TensorFlow logs, restore the global dtype policy after each test."""

import os

from training.quiet import quiet_tensorflow_import

quiet_tensorflow_import(())  # TensorFlow's start-up lines go to the terminal in each pytest-xdist process

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    yield
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory):
    """A tfds data dir holding fashion_mnist prepared offline from Debian's files (once per session)."""
    from training.offline_data import DEBIAN_DIR, prepare_fashion_mnist  # noqa: PLC0415

    if not os.path.isdir(DEBIAN_DIR):
        pytest.fail(f"{DEBIAN_DIR} is missing: the README's test command installs dataset-fashion-mnist")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    prepare_fashion_mnist(data_dir)
    return data_dir
