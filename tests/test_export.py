"""SavedModel (TF Serving layout, signatures, parity, atomic versions) and TFLite exports."""

import io
import os
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mixer import MLPMixer
from keras_mixer.export import export_saved_model, export_tflite, next_version, with_precision
from keras_mixer.lite import TFLiteClassifier
from tests.model_checks import random_images, saved_model_constants
from tests.training_helpers import run_main_in_process, run_module
from training.export_report import parity_report, report_markdown, write_report

CLASSES = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def model():
    mixer = MLPMixer(
        num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, image_size=16, patch_size=4,
        num_channels=1, num_classes=4,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for variable in mixer.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return mixer


def _images(n=3, size=16, seed=1):
    return random_images(n, size, channels=1, seed=seed, dtype="uint8")


def _probabilities(model, images):
    return keras.ops.convert_to_numpy(keras.ops.softmax(model(images.astype("float32"))))


def test_saved_model_versions_signatures_and_parity(model, tmp_path):
    base = tmp_path / "mixer"
    first = export_saved_model(model, str(base), class_names=CLASSES, top_k=2)
    second = export_saved_model(model, str(base), class_names=CLASSES, top_k=2)
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2") and next_version(str(base)) == 3
    assert sorted(os.listdir(base)) == ["1", "2"]  # no partial folders left behind
    with pytest.raises(ValueError, match="never overwritten"):
        export_saved_model(model, str(base), class_names=CLASSES, version=1)

    loaded = tf.saved_model.load(second)
    images = _images()
    expected = _probabilities(model, images)
    out = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["classes"].numpy()[:, 0], expected.argmax(axis=1))
    assert [n.decode() for n in out["class_names"].numpy()[:, 0]] == [CLASSES[i] for i in expected.argmax(axis=1)]
    out_uint8 = loaded.signatures["serving_uint8"](images=tf.constant(images))
    np.testing.assert_allclose(out_uint8["probabilities"].numpy(), expected, atol=1e-5)

    encoded = tf.stack([tf.io.encode_png(tf.constant(image)) for image in images])
    out_bytes = loaded.signatures["serving_bytes"](encoded_images=encoded)
    np.testing.assert_allclose(out_bytes["probabilities"].numpy(), expected, atol=1e-5)
    gif = io.BytesIO()  # GIF decodes to RGB; the signature converts it to the model's one channel
    Image.fromarray(images[0, ..., 0]).save(gif, format="GIF")
    out_gif = loaded.signatures["serving_bytes"](encoded_images=tf.constant([gif.getvalue()]))
    assert out_gif["probabilities"].shape == (1, 4)

    bigger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # 32x32: resized in the graph
    assert loaded.signatures["serving_default"](images=tf.constant(bigger, tf.float32))["probabilities"].shape == (3, 4)
    assert (base / "2" / "assets" / "class_names.txt").read_text().split() == CLASSES


def test_serving_signature_rejects_bad_input_with_a_message(model, tmp_path):
    loaded = tf.saved_model.load(export_saved_model(model, str(tmp_path / "m"), class_names=CLASSES))
    serve = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(batch, height, width, 1\).*\[1 16 16 3\]"):
        serve(images=tf.zeros((1, 16, 16, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(batch, height, width, 1\).*\[16 16 1\]"):
        serve(images=tf.zeros((16, 16, 1)))  # one image without its batch axis
    png = tf.io.encode_png(tf.zeros((16, 16, 1), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not JPEG, PNG, BMP or GIF files:.*\[1 3\]"):
        loaded.signatures["serving_bytes"](encoded_images=tf.stack([png, b"not an image", png, b""]))


def test_saved_model_cli_shows_and_runs_the_signature(model, tmp_path):
    path = export_saved_model(model, str(tmp_path / "m"), class_names=CLASSES)
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in ("serving_default", "serving_bytes", "probabilities", "class_names", "scores"):
        assert text in shown.stdout
    np.save(tmp_path / "x.npy", _images(2).astype("float32"))
    ran = subprocess.run(
        [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'x.npy'}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "probabilities" in ran.stdout


def _export_cli(*args):
    """`python -m training.export ARGS` from the repository root; the finished process."""
    return run_module("training.export", *args)


def _export_cli_in_process(*args):
    return run_main_in_process("training.export", *args)  # bad input: refused before any heavy work


def _run_tflite(path, images):
    # TensorFlow's own (deprecated) interpreter on purpose: an independent check of the LiteRT one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    assert inp["dtype"] == out["dtype"] == np.float32  # float I/O only: int8 I/O is what is under test
    for image in images.astype("float32"):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0])
    return np.array(results)


@pytest.mark.parametrize(
    "mode, tolerance", [("float32", 1e-4), ("float16", 1e-2), ("dynamic_int8", 0.1), ("int8", 0.15)]
)
def test_tflite_modes_convert_with_builtin_ops_and_agree(model, tmp_path, mode, tolerance):
    calibration = [_images(8, seed=s).astype("float32") for s in range(4)]
    path = export_tflite(model, str(tmp_path / f"{mode}.tflite"), mode, representative_data=calibration)
    images = _images(6, seed=9)
    got = _run_tflite(path, images)
    np.testing.assert_allclose(got, _probabilities(model, images), atol=tolerance)


def test_tflite_int8_without_data_says_how_to_provide_it(model, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, str(tmp_path / "q.tflite"), "int8")
    with pytest.raises(ValueError, match="Unknown TFLite mode"):
        export_tflite(model, str(tmp_path / "q.tflite"), "int4")
    assert not list(tmp_path.iterdir())


def test_export_cli_bad_inputs_write_nothing(tmp_path):
    base = tmp_path / "exports"
    result = _export_cli_in_process(
        "--model", tmp_path / "absent.keras", "--base-dir", base, "--formats", "saved_model,onnx",
        "--tflite-modes", "int3",
    )  # fmt: skip
    assert result.returncode == 2
    for text in ("unknown format 'onnx'", "unknown TFLite mode 'int3'", "model file not found"):
        assert text in result.stderr
    assert not base.exists()
    nameless = _export_cli_in_process("--model", tmp_path / "absent.keras", "--base-dir", base, "--name", "a/b",
                                      "--formats", ",", "--tflite-modes", "")  # fmt: skip
    assert nameless.returncode == 2
    assert "--name must be one folder name" in nameless.stderr and "--formats names no format" in nameless.stderr
    assert not base.exists()


def test_exporting_a_model_that_is_not_a_mixer_is_refused(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Expected a keras_mixer.MLPMixer"):
        export_saved_model(other, str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_litert_classifier_matches_tensorflows_own_interpreter(model, tmp_path):
    # Two interpreter builds (LiteRT and tf.lite) must give one answer on the same file.
    path = export_tflite(model, str(tmp_path / "float32.tflite"), "float32")
    images = _images(5, seed=3)
    np.testing.assert_allclose(TFLiteClassifier(path).predict(images), _run_tflite(path, images), atol=1e-6)
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 16, 16, 1\)"):
        TFLiteClassifier(path).predict(_images(2, size=8))


def test_int8_inputs_and_outputs_are_quantised_like_the_float_io_file_and_agree_with_keras(model, tmp_path):
    # The int8-I/O file gets pixels quantised by TFLiteClassifier (numpy); the float-I/O int8 file, built from
    # the same calibration, quantises them with TFLite's own Quantize op. Both must agree with each other to
    # about one output step, and with the float32 Keras model within int8 error.
    calibration = [_images(8, seed=s).astype("float32") for s in range(4)]
    int8_io = TFLiteClassifier(export_tflite(model, str(tmp_path / "io.tflite"), "int8", calibration, int8_io=True))
    float_io = export_tflite(model, str(tmp_path / "float_io.tflite"), "int8", calibration)
    images = _images(6, seed=9)
    probabilities = int8_io.predict(images)
    assert int8_io._input["dtype"] == np.int8 and probabilities.dtype == np.float32
    output_step = int8_io._output["quantization"][0]
    np.testing.assert_allclose(probabilities, _run_tflite(float_io, images), atol=2 * output_step + 1e-6)
    np.testing.assert_allclose(probabilities, _probabilities(model, images), atol=0.15)


def test_parity_report_measures_each_export_and_flags_a_wrong_one(model, tmp_path):
    images, labels = _images(40, seed=5).astype("float32"), np.arange(40) % 4
    version = export_saved_model(model, str(tmp_path / "m"))
    good = export_tflite(model, str(tmp_path / "float32.tflite"))
    other = MLPMixer.from_config(model.get_config())  # same architecture, different (fresh) weights
    wrong = export_tflite(other, str(tmp_path / "float16.tflite"), "float16")
    report = parity_report(model, images, labels, {"saved_model": version}, {"float32": good, "float16": wrong})
    rows = {row["export"]: row for row in report["rows"]}
    assert rows["saved_model"]["max_abs_difference"] <= 1e-5 and rows["saved_model"]["meets_target"]
    assert rows["float32"]["max_abs_difference"] <= 1e-4 and rows["float32"]["meets_target"]
    assert rows["float16"]["max_abs_difference"] > 1e-2 and not rows["float16"]["meets_target"]
    assert not report["all_targets_met"]
    expected_accuracy = (_probabilities(model, images).argmax(-1) == labels).mean()
    assert report["keras_accuracy"] == pytest.approx(expected_accuracy)
    markdown = write_report(report, str(tmp_path / "report"))
    assert (tmp_path / "report" / "export_report.json").exists()
    assert "| float16 |" in report_markdown(report) and "| NO |" in open(markdown).read()


def test_export_cli_int8_outside_a_training_run_says_how_and_writes_nothing(model, tmp_path):
    model.save(tmp_path / "loose.keras")  # no config.json beside it: no training data to calibrate on
    base = tmp_path / "exports"
    result = _export_cli_in_process(
        "--model", tmp_path / "loose.keras", "--base-dir", base, "--formats", "saved_model,tflite",
        "--tflite-modes", "float32,int8",
    )  # fmt: skip
    assert result.returncode == 2
    assert "full int8 calibrates on the training data" in result.stderr and "representative_data" in result.stderr
    assert not base.exists()


def test_versions_keep_their_own_tflite_files_and_are_world_readable(model, tmp_path):
    model.save(tmp_path / "m.keras")
    base = tmp_path / "exports"
    previous = os.umask(0o077)  # a strict umask must not leak into what TF Serving reads
    try:
        for _ in range(2):
            result = _export_cli(
                "--model", tmp_path / "m.keras", "--base-dir", base, "--name", "m", "--formats", "saved_model,tflite",
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-2000:]
    finally:
        os.umask(previous)
    assert sorted(os.listdir(base / "m")) == ["1", "2", "tflite"]
    assert sorted(os.listdir(base / "m" / "tflite")) == ["1", "2"]  # version 2 did not overwrite version 1's file
    assert (base / "m" / "tflite" / "1" / "class_names.txt").exists()
    for root, folders, files in os.walk(base / "m" / "2"):
        assert all(os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o755 for name in folders)
        assert all(os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o644 for name in files)
    assert os.stat(base / "m" / "2").st_mode & 0o777 == 0o755


def test_a_failed_export_publishes_no_version(model, tmp_path, monkeypatch):
    from keras_mixer import export  # noqa: PLC0415

    def broken(*args, **kwargs):
        raise ValueError("the converter failed")

    monkeypatch.setattr(export, "write_saved_model", broken)
    with pytest.raises(ValueError, match="the converter failed"):
        export_saved_model(model, str(tmp_path / "m"))
    assert os.listdir(tmp_path / "m") == []  # no version, no partial folder


@pytest.mark.parametrize("blocked", ["name", "tflite"])
def test_a_file_where_an_export_folder_goes_is_one_clear_error(model, tmp_path, capsys, blocked):
    model.save(tmp_path / "m.keras")
    base = tmp_path / "exports"
    (base / "m").mkdir(parents=True) if blocked == "tflite" else base.mkdir()
    (base / "m" / "tflite" if blocked == "tflite" else base / "m").write_text("in the way")
    from training.export import main as export_main  # noqa: PLC0415

    flags = ["--model", str(tmp_path / "m.keras"), "--base-dir", str(base), "--name", "m", "--formats", "tflite"]
    assert export_main(flags) == 2
    assert "is a file; exports need a folder there" in capsys.readouterr().err


def test_bfloat16_saved_model_takes_and_returns_float32_close_to_the_float32_model(model, tmp_path):
    base = tmp_path / "mixer_bf16"
    folder = export_saved_model(model, str(base), class_names=CLASSES, precision="bfloat16")
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.float32
    images = _images(8)
    out = serve(images=tf.constant(images, tf.float32))["probabilities"]
    assert out.dtype == tf.float32
    expected = _probabilities(model, images)  # the float32 Keras model: bfloat16 keeps ~3 significant digits
    np.testing.assert_allclose(out.numpy(), expected, atol=0.03)
    # The SavedModel of Keras' own mixed_bfloat16 model (float32 weights as variables, cast on every call)
    # computes the same bfloat16 model. Not bit for bit: oneDNN may pick another matmul kernel for a
    # constant weight (`keras_mixer.constant_kernels`), which sums in another order before rounding.
    mixed_folder = export_saved_model(with_precision(model, "bfloat16"), str(tmp_path / "mixed"), class_names=CLASSES)
    mixed = tf.saved_model.load(mixed_folder).signatures["serving_default"]
    mixed_out = mixed(images=tf.constant(images, tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(out.numpy(), mixed_out, atol=5e-3)
    # The MLP kernels are bfloat16 constants of the graph, stored once; the other weights are variables,
    # the head and the norms in float32.
    stored = {v.name: v.dtype for v in tf.saved_model.load(folder).variables}
    assert not [name for name in stored if "mixing/Dense" in name and "kernel" in name]
    assert stored["MixerBlock_0/channel_mixing/Dense_0/bias:0"] == tf.bfloat16
    assert stored["head/kernel:0"] == stored["pre_head_layer_norm/gamma:0"] == tf.float32
    assert (8, 16) in saved_model_constants(folder)[tf.bfloat16]  # channel_mixing/Dense_0's kernel
    assert model.mixer_blocks[0].compute_dtype == "float32"  # the exported model was a copy
    with pytest.raises(ValueError, match="Expected one of \\('float32', 'bfloat16'\\). Received: 'float16'"):
        export_saved_model(model, str(base), precision="float16")
    assert sorted(os.listdir(base)) == ["1"]
