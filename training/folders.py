"""Your own images: a folder with one subfolder per class, as a dataset for training and evaluation.

Layouts (class names are the subfolder names, sorted; files are found at any depth below them):

    photos/cat/*.jpg, photos/dog/*.png, ...                 one folder: a seeded, stratified test
                                                            part and validation part are held out
    photos/train/cat/..., photos/test/cat/...,              train/ and test/ (and optionally
    [photos/validation/cat/...]                             validation/) are used as they are

JPEG, PNG, BMP and GIF files of any size, grayscale or colour, are read; other files are ignored.
Every file is decoded once before training (`scan_images`): unreadable ones are reported and
either skipped (`--skip-bad-images`) or stop the run before anything is written. The resulting file
lists are written into the run (`splits.json`), so evaluate, export and predict see the same split,
and a resumed run does not scan again. Files are streamed by tf.data (`training.data.make_pipeline`
with `decode=`), never loaded into memory all at once.
"""

import json
import os

import numpy as np

from training.files import write_json_atomically
from training.quiet import native_stderr_silenced

SPLITS_FILE = "splits.json"
ROLES = ("train", "validation", "test")
SHOWN_BAD_FILES = 5


class FolderError(ValueError):
    """The folder cannot be used as a dataset (no classes, an empty class, unreadable files)."""


def is_image_folder(dataset):
    """A path that exists as a directory is a folder dataset; tfds names never are."""
    return isinstance(dataset, str) and os.path.isdir(dataset)


def _class_folders(folder):
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _extensions():
    from keras_mixer.preprocessing import IMAGE_FILE_EXTENSIONS  # noqa: PLC0415  (imports TensorFlow)

    return IMAGE_FILE_EXTENSIONS


def image_files_below(folder):
    """Image files below `folder`, as sorted paths relative to it."""
    found = []
    for root, directories, names in os.walk(folder):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        found += [
            os.path.relpath(os.path.join(root, name), folder)
            for name in names
            if name.lower().endswith(_extensions()) and not name.startswith(".")
        ]
    return sorted(found)


def _list_classes(folder, class_names=None):
    """{class name: [paths relative to the dataset root]} for one folder of class subfolders."""
    names = _class_folders(folder) if class_names is None else class_names
    present = _class_folders(folder)
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise FolderError(
            f"{folder} has class folders that the training folder lacks: {unknown}. Expected only {names}."
        )
    return {name: image_files_below(os.path.join(folder, name)) if name in present else [] for name in names}


def list_folder(root):
    """(class_names, {role: [(path relative to root, label)]} or None per role to carve, layout).

    Raises `FolderError` for no class folders, a single class, or a class folder without images.
    """
    subfolders = _class_folders(root)
    presplit = "train" in subfolders and "test" in subfolders
    train_root = os.path.join(root, "train") if presplit else root
    by_class = _list_classes(train_root)
    if not by_class:
        raise FolderError(
            f"{root} holds no class folders. Expected one subfolder per class (e.g. {root}/cat/*.jpg), "
            f"or train/ and test/ folders of class subfolders."
        )
    total = sum(len(files) for files in by_class.values())
    if total == 0:
        raise FolderError(f"No images in {train_root}: expected files ending in {', '.join(_extensions())}.")
    empty = [name for name, files in by_class.items() if not files]
    if empty:
        raise FolderError(
            f"Class folder(s) without images in {train_root}: {empty}. Every class needs training images "
            f"({', '.join(_extensions())})."
        )
    if len(by_class) < 2:
        raise FolderError(
            f"{train_root} has a single class folder ({list(by_class)}); classification needs two or more."
        )
    class_names = list(by_class)
    prefix = "train" if presplit else ""

    def labelled(files_by_class, folder):
        return [
            (os.path.join(folder, name, path) if folder else os.path.join(name, path), label)
            for label, name in enumerate(class_names)
            for path in files_by_class[name]
        ]

    lists = {"train": labelled(by_class, prefix), "validation": None, "test": None}
    if presplit:
        for role in ("test", "validation"):
            if role in subfolders:
                files = labelled(_list_classes(os.path.join(root, role), class_names), role)
                if not files:
                    raise FolderError(f"{os.path.join(root, role)} holds no images.")
                lists[role] = files
    return class_names, lists, "presplit" if presplit else "one_folder"


def stratified_split(examples, fraction, seed):
    """(kept, held_out): `fraction` of each label's examples held out, seeded; at least one per
    label when the label has two or more examples and the fraction is above zero."""
    if not fraction:
        return list(examples), []
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    labels = sorted({label for _, label in examples})
    for label in labels:
        members = [example for example in examples if example[1] == label]
        order = rng.permutation(len(members))
        count = min(max(int(round(len(members) * fraction)), 1 if len(members) >= 2 else 0), len(members) - 1)
        held_out += [members[i] for i in sorted(order[:count])]
        kept += [members[i] for i in sorted(order[count:])]
    return kept, held_out


def _is_colour(image):
    """Whether a decoded image has colour: 3+ channels that are not all equal (GIF and BMP decode
    to RGB even when their pixels are gray)."""
    import tensorflow as tf  # noqa: PLC0415

    def channels_differ():
        rgb = tf.cast(image[..., :3], tf.int32)
        return tf.reduce_any(tf.not_equal(rgb[..., :1], rgb[..., 1:]))

    return tf.cond(tf.shape(image)[-1] >= 3, channels_differ, lambda: tf.constant(False))


def scan_images(root, paths, progress=True):
    """Decode every file once. Returns (unreadable paths, {path: True if the image has colour})."""
    import tensorflow as tf  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    from keras_mixer.preprocessing import decode_image  # noqa: PLC0415

    full = [os.path.join(root, path) for path in paths]
    dataset = (
        tf.data.Dataset.from_tensor_slices(full if full else tf.zeros((0,), tf.string))
        .enumerate()
        .map(
            lambda index, path: (index, _is_colour(decode_image(tf.io.read_file(path)))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=False,
        )
        .ignore_errors()
    )
    colour = {}
    bar_options = dict(desc="checking images", unit="file", disable=not progress, leave=False)
    with (
        native_stderr_silenced() as stderr,  # unreadable files are reported below, not by libjpeg
        tqdm(total=len(paths), file=stderr, **bar_options) as bar,
    ):
        for index, is_colour in dataset.as_numpy_iterator():
            colour[paths[int(index)]] = bool(is_colour)
            bar.update(1)
    unreadable = [path for path in paths if path not in colour]
    return unreadable, colour


def build_splits(root, test_fraction, validation_fraction, split_seed, skip_bad_images, progress=True):
    """The record `splits.json` holds: class names, channels and the file list of each role.

    Raises `FolderError` for every problem, before anything is written.
    """
    root = os.path.abspath(root)
    class_names, lists, layout = list_folder(root)
    every_file = [path for files in lists.values() if files for path, _ in files]
    unreadable, colour = scan_images(root, every_file, progress)
    if unreadable:
        shown = ", ".join(unreadable[:SHOWN_BAD_FILES]) + (", ..." if len(unreadable) > SHOWN_BAD_FILES else "")
        if not skip_bad_images:
            raise FolderError(
                f"{len(unreadable)} of {len(every_file)} files in {root} cannot be read as images: {shown}. "
                "Fix or remove them, or pass --skip-bad-images to train without them."
            )
        print(f"Skipping {len(unreadable)} unreadable image(s) of {len(every_file)}: {shown}")
        bad = set(unreadable)
        lists = {
            role: None if files is None else [f for f in files if f[0] not in bad] for role, files in lists.items()
        }
    if lists["test"] is None:
        lists["train"], lists["test"] = stratified_split(lists["train"], test_fraction, split_seed)
    if lists["validation"] is None:
        lists["train"], lists["validation"] = stratified_split(lists["train"], validation_fraction, split_seed + 1)
    missing = [name for label, name in enumerate(class_names) if not any(y == label for _, y in lists["train"])]
    if missing:
        raise FolderError(f"After removing unreadable files, these classes have no training images: {missing}.")
    if not lists["test"]:
        raise FolderError(
            f"{root} leaves no test images: add a test/ folder, or more images per class with test_fraction > 0."
        )
    return {
        "root": root,
        "layout": layout,
        "class_names": class_names,
        "num_channels": 3 if any(colour.values()) else 1,
        "unreadable": unreadable,
        **{role: lists[role] for role in ROLES},
    }


def write_splits(model_dir, record):
    """`splits.json` in the run: the file lists evaluate, export and predict read back."""
    write_json_atomically(os.path.join(model_dir, SPLITS_FILE), record)


def read_splits(model_dir):
    """The run's `splits.json`, or None when the run has none (a tfds run, or a new run)."""
    path = os.path.join(model_dir, SPLITS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        record = json.load(file)
    for role in ROLES:
        record[role] = [tuple(example) for example in record[role]]
    return record
