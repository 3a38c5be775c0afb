"""Image folders as datasets (`--dataset PATH`): layouts, formats, splits and bad files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.training_helpers import run_train
from training.config import AugmentConfig, DataConfig
from training.data import make_pipeline, open_source
from training.folders import FolderError, build_splits, list_folder, stratified_split
from training.train import main as train_main

FORMATS = ("png", "jpg", "bmp", "gif")


def _encode(image, fmt):
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    if fmt == "jpg":
        return tf.io.encode_jpeg(image, quality=95).numpy()
    if fmt == "bmp":  # 24-bit BMP, written by hand: TensorFlow has no BMP encoder
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        height, width = rgb.shape[:2]
        row = (width * 3 + 3) // 4 * 4
        pixels = np.zeros((height, row), np.uint8)
        pixels[:, : width * 3] = rgb[::-1, :, ::-1].reshape(height, width * 3)  # bottom-up, BGR
        header = b"BM" + (54 + pixels.size).to_bytes(4, "little") + b"\0\0\0\0" + (54).to_bytes(4, "little")
        info = (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little")
        info += (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(24)
        return header + info + pixels.tobytes()
    # GIF: matplotlib's Pillow writes it (a test-only dependency of the plotting stack).
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="GIF")
    return buffer.getvalue()


def make_folder(root, classes=("cat", "dog", "emu"), per_class=8, seed=0, colour=True):
    """Class folders of mixed formats, sizes and channels; each class has its own brightness."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index in range(per_class):
            channels = 3 if colour and index % 2 == 0 else 1
            size = tuple(int(s) for s in rng.integers(16, 60, 2))
            image = (rng.uniform(0, 60, (*size, channels)) + 90 * label).astype("uint8")
            fmt = FORMATS[index % len(FORMATS)]
            with open(os.path.join(root, name, f"{index}.{fmt}"), "wb") as file:
                file.write(_encode(image, fmt))
    return root


def test_every_format_and_channel_count_becomes_the_models_input(tmp_path):
    root = make_folder(str(tmp_path / "photos"))
    (tmp_path / "photos" / "cat" / "notes.txt").write_text("not an image, ignored")
    source = open_source(DataConfig(dataset=root, validation_fraction=0.0, test_fraction=0.25), progress=False)
    spec = source.spec
    assert spec.class_names == ["cat", "dog", "emu"] and spec.num_channels == 3
    assert (spec.train_examples, spec.test_examples) == (18, 6)
    for channels in (1, 3):
        data = make_pipeline(
            source.examples("test"), image_size=28, num_classes=3, batch_size=6, training=False,
            decode=source.decode, num_channels=channels,
        )  # fmt: skip
        images, labels = next(iter(data))
        assert images.shape == (6, 28, 28, channels) and images.dtype == tf.float32
        # Each class keeps its own brightness through every decoder (30 +- 30, 120 +- 30, 210 +- 30).
        brightness = images.numpy().mean(axis=(1, 2, 3))
        expected = 30 + 90 * labels.numpy().argmax(-1)
        np.testing.assert_allclose(brightness, expected, atol=12)


def test_a_folder_of_grayscale_images_gives_a_one_channel_model(tmp_path):
    root = make_folder(str(tmp_path / "gray"), colour=False)  # GIF and BMP decode to RGB: gray RGB counts as gray
    record = build_splits(root, 0.25, 0.0, 0, False, progress=False)
    assert record["num_channels"] == 1 and record["unreadable"] == []


def test_the_held_out_parts_are_stratified_seeded_and_disjoint():
    examples = [(f"{label}/{i}.png", label) for label in range(3) for i in range(10 + 5 * label)]
    train, test = stratified_split(examples, 0.2, seed=0)
    again, _ = stratified_split(examples, 0.2, seed=0)
    other, _ = stratified_split(examples, 0.2, seed=1)
    assert train == again and train != other
    assert sorted(train + test) == sorted(examples) and not set(train) & set(test)
    assert [sum(y == label for _, y in test) for label in range(3)] == [2, 3, 4]  # 20 % of 10, 15, 20


def test_train_and_test_subfolders_are_used_as_they_are(tmp_path):
    make_folder(str(tmp_path / "set" / "train"), per_class=6)
    make_folder(str(tmp_path / "set" / "test"), classes=("cat", "dog"), per_class=2, seed=1)  # a class may be absent
    record = build_splits(str(tmp_path / "set"), 0.5, 0.0, 0, False, progress=False)
    assert record["layout"] == "presplit" and len(record["train"]) == 18 and len(record["test"]) == 4
    assert all(path.startswith("test" + os.sep) for path, _ in record["test"])
    make_folder(str(tmp_path / "set" / "test"), classes=("cat", "yak"), per_class=1)
    with pytest.raises(FolderError, match=r"class folders that the training folder lacks: \['yak'\]"):
        build_splits(str(tmp_path / "set"), 0.5, 0.0, 0, False, progress=False)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "holds no class folders"),
        ({"cat": 0, "dog": 0}, "No images in"),
        ({"cat": 3, "dog": 0}, r"without images .*\['dog'\]"),
        ({"cat": 3}, "a single class folder"),
    ],
)
def test_folders_that_cannot_be_a_dataset_get_one_error_each(tmp_path, layout, message):
    root = tmp_path / "photos"
    root.mkdir()
    for name, count in layout.items():
        make_folder(str(root), classes=(name,), per_class=count) if count else (root / name).mkdir()
    with pytest.raises(FolderError, match=message):
        list_folder(str(root))


def _corrupt(root):
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")  # libjpeg would print a line
    (root / "dog" / "empty.png").write_bytes(b"")
    png = (root / "emu" / "0.png").read_bytes()
    (root / "emu" / "truncated.png").write_bytes(png[: len(png) // 3])


def test_unreadable_files_stop_the_cli_before_anything_is_written(tmp_path, capfd):
    root = tmp_path / "photos"
    make_folder(str(root))
    _corrupt(root)
    model_dir = tmp_path / "run"
    assert train_main(["--dataset", str(root), "--model-dir", str(model_dir), "--epochs", "1"]) == 2
    err = capfd.readouterr().err
    message = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Unsupported marker type" not in err  # libjpeg's own line on broken.jpg (printed into the bar's)
    assert len(message) == 1 and "3 of 27 files" in message[0] and "--skip-bad-images" in message[0]
    assert "cat/broken.jpg" in message[0] and "dog/empty.png" in message[0]
    assert not model_dir.exists()


def test_skipping_bad_images_trains_and_writes_the_file_lists_into_the_run(tmp_path):
    root = tmp_path / "photos"
    make_folder(str(root), per_class=12)
    _corrupt(root)
    model_dir = tmp_path / "run"
    flags = ["--dataset", str(root), "--model-dir", str(model_dir), "--skip-bad-images", "--epochs", "1"]
    flags += ["--image-size", "28", "--num-blocks", "1", "--hidden-dim", "16", "--tokens-mlp-dim", "8"]
    flags += ["--channels-mlp-dim", "32", "--batch-size", "8", "--validation-fraction", "0.1"]
    result = run_train(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipping 3 unreadable image(s) of 39" in result.stdout
    splits = json.loads((model_dir / "splits.json").read_text())
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["class_names"] == ["cat", "dog", "emu"] and splits["class_names"] == ["cat", "dog", "emu"]
    listed = [path for role in ("train", "validation", "test") for path, _ in splits[role]]
    assert len(listed) == len(set(listed)) == 36 and "cat/broken.jpg" not in listed
    assert len(splits["validation"]) == 3  # one per class (10 % of 10 training images, at least one)
    # The run's evaluate reads the same lists, not the folder (a new file there changes nothing).
    make_folder(str(root), classes=("cat",), per_class=20, seed=9)
    from training.evaluate import evaluate  # noqa: PLC0415

    assert evaluate(str(model_dir), flip_average="off")["examples"] == len(splits["test"])


def test_a_file_that_breaks_after_the_check_does_not_stop_an_epoch(tmp_path):
    root = tmp_path / "photos"
    make_folder(str(root), per_class=16)
    source = open_source(DataConfig(dataset=str(root), validation_fraction=0.0), progress=False)
    (root / "cat" / "0.png").write_bytes(b"gone bad")  # after the check, before training reads it
    data = make_pipeline(
        source.examples("train", shuffle_files=True), image_size=28, num_classes=3, batch_size=8, training=True,
        augment=AugmentConfig(random_crop=False), decode=source.decode, num_channels=1, cache=False,
    )  # fmt: skip
    batches = list(data.take(12))  # more than an epoch's worth (38 readable images)
    assert len(batches) == 12 and all(images.shape == (8, 28, 28, 1) for images, _ in batches)


def test_a_missing_folder_is_not_taken_for_a_tfds_name(tmp_path, capsys):
    assert train_main(["--dataset", str(tmp_path / "no" / "such"), "--model-dir", str(tmp_path / "run")]) == 2
    assert "No such folder" in capsys.readouterr().err and not (tmp_path / "run").exists()
