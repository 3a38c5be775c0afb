"""`keras_mixer.serving`: request encoding, clear errors, and a real TF Serving when there is one.

The round-trip tests run only against a real server: `tensorflow_model_server` on PATH (started
here on an exported test model) or one named by `TF_SERVING_URL` (REST) and `TF_SERVING_GRPC`
(host:port) serving `TF_SERVING_MODEL`. Without one they are skipped with that reason; they never
run against a stand-in.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from keras_mixer import MLPMixer, serving
from keras_mixer.export import export_saved_model
from tests.model_checks import random_images


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_rest_body_uses_tf_servings_row_column_and_b64_formats():
    images = np.arange(2 * 2 * 2 * 1).reshape(2, 2, 2, 1)
    rows = serving.rest_request_body(images, "serving_uint8")
    assert rows == {"signature_name": "serving_uint8", "instances": images.tolist()}
    columns = serving.rest_request_body(images, columns=True)
    assert columns["inputs"] == images.astype("float32").tolist()
    png = b"\x89PNG\r\n\x1a\n..."
    encoded = serving.rest_request_body([png, png], "serving_bytes")["instances"]
    assert [base64.b64decode(item["b64"]) for item in encoded] == [png, png]


def test_rest_answers_in_both_formats_become_arrays():
    rows = {"predictions": [{"scores": [0.9, 0.1], "class_names": ["a", "b"]}] * 3}
    parsed = serving.parse_rest_response(rows)
    assert parsed["scores"].shape == (3, 2) and parsed["class_names"][2, 1] == "b"
    columns = serving.parse_rest_response({"outputs": {"classes": [[1], [0]]}})
    assert columns["classes"].tolist() == [[1], [0]]
    with pytest.raises(serving.ServingError, match="Servable not found"):
        serving.parse_rest_response({"error": "Servable not found for request"})


@pytest.mark.parametrize(
    "images, signature, message",
    [
        (np.zeros((2, 8, 8)), "serving_default", r"Expected a batch of images \(N, H, W, C\).*shape \(2, 8, 8\)"),
        (np.array([["a"]]), "serving_default", "of numbers"),
        (np.zeros((1, 8, 8, 1)), "serving_bytes", "list of encoded JPEG/PNG"),
        (np.zeros((1, 8, 8, 1)), "serving_float", "Unknown signature"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(images, signature, message):
    with pytest.raises(ValueError, match=message):
        serving.predict(images, url="http://127.0.0.1:1", model="m", signature=signature)


def test_an_unreachable_server_or_bad_url_gives_one_clear_error():
    port = _free_port()  # nothing listens there
    images = np.zeros((1, 8, 8, 1))
    with pytest.raises(serving.ServingError, match="No TF Serving REST endpoint"):
        serving.predict(images, url=f"http://127.0.0.1:{port}", model="m", timeout=5)
    with pytest.raises(serving.ServingError, match="UNAVAILABLE"):
        serving.predict(images, url=f"grpc://127.0.0.1:{port}", model="m", timeout=5)
    with pytest.raises(ValueError, match="Expected a url starting with http"):
        serving.predict(images, url=f"127.0.0.1:{port}", model="m")


# --- against a real TF Serving ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(rest_url, grpc_url, model name, local SavedModel path or None) of a real TF Serving."""
    if os.environ.get("TF_SERVING_URL"):
        grpc_target = os.environ.get("TF_SERVING_GRPC")
        yield (
            os.environ["TF_SERVING_URL"],
            f"grpc://{grpc_target}" if grpc_target else None,
            os.environ.get("TF_SERVING_MODEL", "fashion_mixer"),
            None,
        )
        return
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("no TF Serving here: put tensorflow_model_server on PATH or set TF_SERVING_URL")
    base = tmp_path_factory.mktemp("serving") / "mixer"
    model = MLPMixer(
        num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=16, image_size=16, patch_size=4,
        num_channels=1, num_classes=3,
    )  # fmt: skip
    version = export_saved_model(model, str(base), class_names=["a", "b", "c"], top_k=2)
    rest_port, grpc_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=mixer",
         f"--model_base_path={base}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{rest}/v1/models/mixer", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        yield rest, f"grpc://127.0.0.1:{grpc_port}", "mixer", version
    finally:
        process.terminate()
        process.wait(timeout=30)


def _local(version, images, signature="serving_default"):
    import tensorflow as tf  # noqa: PLC0415

    function = tf.saved_model.load(version).signatures[signature]
    argument = "encoded_images" if signature == "serving_bytes" else "images"
    return {key: value.numpy() for key, value in function(**{argument: tf.constant(images)}).items()}


def _images(n=2, size=16, channels=1):
    return random_images(n, size, channels, dtype="uint8")


@pytest.mark.parametrize("columns", [False, True])
def test_rest_predictions_match_the_local_savedmodel(server, columns):
    rest, _, name, version = server
    images = _images()
    answer = serving.predict(images, url=rest, model=name, columns=columns)
    assert answer["probabilities"].shape[0] == 2 and set(answer) == set(serving.OUTPUTS)
    if version:
        local = _local(version, images.astype("float32"))
        np.testing.assert_allclose(answer["probabilities"], local["probabilities"], atol=1e-5)
        assert answer["class_names"].tolist() == local["class_names"].astype(str).tolist()


def test_grpc_and_encoded_png_predictions(server):
    rest, grpc_url, name, version = server
    if grpc_url is None:
        pytest.skip("set TF_SERVING_GRPC=host:port to test gRPC against the external server")
    images = _images()
    over_grpc = serving.predict(images, url=grpc_url, model=name, signature="serving_uint8")
    over_rest = serving.predict(images, url=rest, model=name, signature="serving_uint8")
    np.testing.assert_allclose(over_grpc["probabilities"], over_rest["probabilities"], atol=1e-6)
    if version:
        import tensorflow as tf  # noqa: PLC0415

        png = [tf.io.encode_png(image).numpy() for image in images]
        answer = serving.predict(png, url=rest, model=name, signature="serving_bytes")
        np.testing.assert_allclose(answer["probabilities"], over_rest["probabilities"], atol=1e-5)


def test_the_server_rejects_a_wrong_channel_count_with_a_message(server):
    rest, _, name, _ = server
    with pytest.raises(serving.ServingError, match="channel"):
        serving.predict(_images(channels=3), url=rest, model=name)
