"""Deployment exports: TF Serving SavedModels (versioned, atomic) and TFLite flatbuffers.

`export_saved_model(model, "saved_models/fashion_mixer", class_names=[...])` writes the next
integer version under TF Serving's `<name>/<version>/` layout, built in a temporary folder and
renamed into place, with three signatures (preprocessing inside the graph; clients send pixels):

- `serving_default`: float32 images (N, H, W, C) in [0, 255]; other sizes are resized.
- `serving_uint8`: the same for uint8 images.
- `serving_bytes`: encoded JPEG, PNG, BMP or GIF strings (N,) (REST clients send `{"b64": ...}`).

Each returns `probabilities` (N, K), `classes` and `scores` (top-k) and `class_names` (top-k
labels). `export_tflite(model, path, mode=...)` writes float32, float16, dynamic-range int8 or
full int8 models using builtin ops only; the CLI keeps version N's TFLite files in
`<name>/tflite/N/`. Published folders are 0755 and files 0644, whatever the umask. This module uses
TensorFlow directly (export is a TensorFlow-backend feature).
"""

import contextlib
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_mixer.atomic import write_bytes_atomically, write_text_atomically
from keras_mixer.constant_kernels import constant_kernels, mlp_kernels, saved_model_has_constant_kernels
from keras_mixer.fused_gelu import keras_gelu_at_inference
from keras_mixer.fused_norm import portable_graph

TFLITE_MODES = ("float32", "float16", "dynamic_int8", "int8")
SAVED_MODEL_PRECISIONS = ("float32", "bfloat16")
CLASS_NAMES_FILE = "class_names.txt"
TFLITE_FOLDER = "tflite"  # TFLite files of version N: <base>/tflite/N/<mode>.tflite
BFLOAT16_FOLDER = "bfloat16"  # the bfloat16 SavedModel of version N: <base>/bfloat16/N/ (a TF Serving base path)


def _check_mixer(model):
    from keras_mixer.model import MLPMixer  # noqa: PLC0415

    if not isinstance(model, MLPMixer):
        raise ValueError(f"Expected a keras_mixer.MLPMixer. Received: a {type(model).__name__}")
    if not model.include_top:
        raise ValueError("Export needs a classifier: the model was built with include_top=False.")


def model_class_names(model):
    """The model's `class_names`, or "0", "1", ... when it has none."""
    return list(model.class_names) if model.class_names else [str(i) for i in range(model.num_classes)]


def write_class_names(folder, class_names):
    """`class_names.txt` in `folder`, one name a line, written atomically; returns its path."""
    os.makedirs(folder, exist_ok=True)
    return write_text_atomically(os.path.join(folder, CLASS_NAMES_FILE), "\n".join(class_names) + "\n")


def read_class_names(folder):
    """The names in `folder/class_names.txt`, or None when there is no such file."""
    path = os.path.join(folder, CLASS_NAMES_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file if line.strip()]


def next_version(base_dir):
    """1 + the highest integer version in `base_dir`, its `tflite/` or its `bfloat16/` (1 when there is none)."""
    versions = []
    for folder in (base_dir, os.path.join(base_dir, TFLITE_FOLDER), os.path.join(base_dir, BFLOAT16_FOLDER)):
        if os.path.isdir(folder):
            versions += [int(name) for name in os.listdir(folder) if name.isdigit()]
    return max(versions, default=0) + 1


def _probabilities(model, images):
    import tensorflow as tf  # noqa: PLC0415

    outputs = tf.cast(model(images, training=False), tf.float32)
    return outputs if model.classifier_activation == "softmax" else tf.nn.softmax(outputs, axis=-1)


def _serving_functions(model, class_names, top_k):
    """The three signature functions, sharing one preprocessing and output path.

    Images are prepared as in training and `training.predict` (`keras_mixer.preprocessing`).
    """
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer.preprocessing import decode_image, is_image_bytes, resize_for_eval  # noqa: PLC0415

    height, width = model.image_size
    channels = model.num_channels
    names = tf.constant(class_names)
    # One function for the three signatures, so that the SavedModel holds the model's graph (and any
    # constant kernels in it, `write_saved_model`) once.
    probabilities_of = tf.function(
        lambda images: _probabilities(model, images),
        input_signature=[tf.TensorSpec((None, height, width, channels), tf.float32)],
        autograph=False,
    )

    def predict(images):
        # The signatures take any shape, so that a wrong one gets this message rather than TF's own.
        # The check is a branch, not an assert beside the work: only one of the two ever runs.
        def checked():
            return tf.ensure_shape(images, (None, None, None, channels))

        def refused():
            message = f"images must be a batch of shape (batch, height, width, {channels}); received shape"
            with tf.control_dependencies([tf.debugging.Assert(False, [message, tf.shape(images)], summarize=8)]):
                return tf.zeros((0, 1, 1, channels), images.dtype)

        shape = tf.shape(images)
        valid = tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(shape[-1], channels))
        images = tf.cond(valid, checked, refused)
        images = resize_for_eval(images, (height, width))
        probabilities = probabilities_of(images)
        scores, classes = tf.math.top_k(probabilities, k=top_k)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "scores": scores,
            "class_names": tf.gather(names, classes),
        }

    def decode(encoded):
        return resize_for_eval(decode_image(encoded, channels), (height, width))

    def predict_bytes(encoded_images):
        not_images = tf.where(tf.logical_not(is_image_bytes(encoded_images)))[:, 0]
        all_images = tf.debugging.Assert(
            tf.equal(tf.size(not_images), 0),
            ["encoded_images: these items (0-based positions) are not JPEG, PNG, BMP or GIF files:", not_images],
            summarize=20,
        )
        with tf.control_dependencies([all_images]):
            encoded_images = tf.identity(encoded_images)
        images = tf.map_fn(decode, encoded_images, fn_output_signature=tf.TensorSpec((height, width, channels)))
        return predict(images)

    return predict, predict_bytes


def export_saved_model(model, base_dir, class_names=None, top_k=5, version=None, precision="float32"):
    """Write `model` as the next version of a TF Serving model; returns the version folder.

    Args:
        model: an `MLPMixer` with a head.
        base_dir: `saved_models/<name>`; versions are integer folders inside it.
        class_names: a label per class (default: the model's `class_names`, else "0", "1", ...).
        top_k: how many classes `classes`/`scores`/`class_names` return.
        version: an explicit version; an existing one is refused (never overwritten).
        precision: "float32", or "bfloat16": the `mixed_bfloat16` model's computation (matmuls in
            bfloat16, norms and head in float32), with the same float32 inputs and outputs, its
            matmul weights stored in bfloat16 (`with_precision(..., inference=True)`), the MLP
            kernels as graph constants, which oneDNN reorders once (`keras_mixer.constant_kernels`).
            Faster only on CPUs with bfloat16 units (AVX512-BF16, AMX): see the README.

    Example:
        export_saved_model(model, "saved_models/fashion_mixer", class_names=info.features["label"].names)
    """

    _check_mixer(model)
    class_names = list(class_names or model_class_names(model))
    if len(class_names) != model.num_classes:
        raise ValueError(f"Expected {model.num_classes} class names. Received: {len(class_names)}")
    check_saved_model_precision(precision)
    top_k = min(int(top_k), model.num_classes)
    version = next_version(base_dir) if version is None else int(version)
    with staged_folder(os.path.join(base_dir, str(version))) as staging:
        write_saved_model(model, staging, class_names, top_k, precision)
    return os.path.join(base_dir, str(version))


def check_saved_model_precision(precision):
    if precision not in SAVED_MODEL_PRECISIONS:
        raise ValueError(f"Unknown precision. Expected one of {SAVED_MODEL_PRECISIONS}. Received: {precision!r}")
    return precision


def with_precision(model, precision, inference=False):
    """`model` itself for "float32"; for "bfloat16" a copy with its weights whose matmuls run in bfloat16.

    Norms and head keep float32, inputs and outputs stay float32, as under `mixed_bfloat16`.
    `inference=False`: the `mixed_bfloat16` policy, float32 variables cast on every call (trainable as
    mixed precision). `inference=True` (the exports): the `bfloat16` policy, so the stem's and MLPs'
    weights are stored already rounded to bfloat16. Same outputs bit for bit, at half the weights' bytes
    and without a cast of every weight on every call: `Cast` ops were 13.6 % of S/16's mixed-bfloat16
    forward pass at batch 1 and 2.5 % at batch 32 on the 2-core AVX-512 EPYC, 2026-11-26 (`python -m
    benchmarks.op_breakdown --preset mixer_s16 --precision bfloat16 --batch-size 1`).

    >>> from keras_mixer import MLPMixer
    >>> tiny = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, patch_size=4,
    ...                 image_size=8, num_channels=1, num_classes=3)
    >>> with_precision(tiny, "bfloat16").mixer_blocks[0].compute_dtype
    'bfloat16'
    >>> with_precision(tiny, "bfloat16", inference=True).mixer_blocks[0].token_mixing.dense_0.kernel.dtype
    'bfloat16'
    """
    if check_saved_model_precision(precision) == "float32":
        return model
    from keras_mixer.model import MLPMixer  # noqa: PLC0415

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision if inference else f"mixed_{precision}")
    try:
        copy = MLPMixer.from_config(model.get_config())
    finally:
        keras.config.set_dtype_policy(policy)
    copy.set_weights(model.get_weights())
    return copy


def write_saved_model(model, folder, class_names, top_k, precision="float32"):
    """The SavedModel with the three signatures and `assets/class_names.txt`, written into `folder`.

    In bfloat16 the MLP kernels are graph constants where they fit (`keras_mixer.constant_kernels`: oneDNN
    then reorders each one once, not on every request) and only the other weights are variables.
    """
    import tensorflow as tf  # noqa: PLC0415

    model = with_precision(model, precision, inference=True)
    as_constants = saved_model_has_constant_kernels(model, precision)
    predict, predict_bytes = _serving_functions(model, class_names, top_k)
    # TF Serving runs no XLA-compiled functions by default (`portable_graph`).
    with portable_graph(), constant_kernels(model) if as_constants else contextlib.nullcontext():
        archive = keras.export.ExportArchive()
        if as_constants:  # `variables` of the loaded SavedModel: all but the kernels, which are stored once
            kernels = {id(kernel) for kernel in mlp_kernels(model)}
            archive.add_variable_collection("variables", [v for v in model.variables if id(v) not in kernels])
        else:
            archive.track(model)
        archive.add_endpoint("serving_default", predict, input_signature=[tf.TensorSpec(None, tf.float32)])
        archive.add_endpoint("serving_uint8", predict, input_signature=[tf.TensorSpec(None, tf.uint8)])
        archive.add_endpoint("serving_bytes", predict_bytes, input_signature=[tf.TensorSpec((None,), tf.string)])
        archive.write_out(folder, verbose=False)
    write_class_names(os.path.join(folder, "assets"), class_names)


def make_world_readable(folder):
    """Folders 0755 and files 0644 below and including `folder`, whatever the umask (TF Serving
    often runs as another user than the one who exported)."""
    os.chmod(folder, 0o755)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


@contextlib.contextmanager
def staged_folder(final):
    """Build a folder under a temporary name beside `final`, then publish it whole.

    Yields the temporary folder. When the block ends without error the folder is made readable by
    everyone (`make_world_readable`) and renamed to `final` in one step, so a reader (TF Serving,
    a phone build) never sees it half-written; on any error it is removed. An existing `final` is
    refused: versions are never overwritten.
    """
    if os.path.exists(final):
        raise ValueError(f"{final} already exists; versions are never overwritten.")
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.partial-", dir=parent)
    try:
        yield staging
        make_world_readable(staging)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_tflite(model, path, mode="float32", representative_data=None, int8_io=False):
    """Convert `model` to a TFLite flatbuffer (builtin ops only) at `path`; returns the path.

    Args:
        mode: "float32", "float16" (float16 weights), "dynamic_int8" (int8 weights, float
            activations) or "int8" (int8 weights and activations, calibrated).
        representative_data: for "int8": an iterable of float32 image batches (pixels in
            [0, 255], shape (N, H, W, C)) drawn from the training data.
        int8_io: for "int8": int8 input and output tensors instead of float32.

    Input: float32 (1, H, W, C) pixels in [0, 255]; output: class probabilities. The model's
    class names are written beside the file, as `class_names.txt`.
    """
    import tensorflow as tf  # noqa: PLC0415

    _check_mixer(model)
    if mode not in TFLITE_MODES:
        raise ValueError(f"Unknown TFLite mode. Expected one of {TFLITE_MODES}. Received: mode={mode!r}")
    if mode == "int8" and representative_data is None:
        raise ValueError(
            "Full int8 needs calibration data: pass representative_data=<an iterable of float32 image "
            "batches from the training split> (the CLI draws them with --representative-images N)."
        )
    height, width = model.image_size
    with tempfile.TemporaryDirectory() as scratch, keras_gelu_at_inference():
        # Keras' GELU, which the converter maps to TFLite's own GELU op. Through a SavedModel, so the
        # converter freezes the weights into constants.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serving_default",
            lambda images: _probabilities(model, images),
            input_signature=[tf.TensorSpec((1, height, width, model.num_channels), tf.float32)],
        )
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if mode != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if mode == "int8":

            def calibration():
                for batch in representative_data:
                    for image in np.asarray(batch, np.float32):
                        yield [image[None]]

            converter.representative_dataset = calibration
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_bytes_atomically(path, flatbuffer)
    write_class_names(folder, model_class_names(model))  # TFLite files carry no labels; predict reads these
    return path
