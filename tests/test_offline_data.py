import gzip
import os
import shutil

import pytest
import tensorflow_datasets as tfds

from training.offline_data import DEBIAN_DIR, ChecksumError, decompress_verified, prepare_fashion_mnist


def test_prepared_dataset_is_tfds_own_fashion_mnist(fashion_data_dir):
    images, info = tfds.load(
        "fashion_mnist", split="test", data_dir=fashion_data_dir, with_info=True, as_supervised=True
    )
    assert str(info.version) == "3.0.1"
    assert info.splits["train"].num_examples == 60_000 and info.splits["test"].num_examples == 10_000
    assert info.features["label"].names[0] == "T-shirt/top" and info.features["label"].num_classes == 10
    image, label = next(iter(images))
    assert image.shape == (28, 28, 1) and image.dtype.name == "uint8" and 0 <= int(label) < 10


def test_preparing_again_is_a_no_op(fashion_data_dir):
    builder = prepare_fashion_mnist(fashion_data_dir)
    assert builder.is_prepared()


def test_a_corrupt_source_file_is_refused(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(DEBIAN_DIR, source)
    with gzip.open(source / "t10k-labels-idx1-ubyte.gz", "wb") as file:
        file.write(b"not fashion mnist")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz decompresses to sha256"):
        decompress_verified(source, tmp_path)
    with pytest.raises(ChecksumError):
        prepare_fashion_mnist(str(tmp_path / "tfds"), source_dir=str(source))
    assert not os.path.exists(tmp_path / "tfds" / "fashion_mnist" / "3.0.1")


def test_a_missing_source_file_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        decompress_verified(tmp_path, tmp_path)
