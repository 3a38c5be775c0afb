"""Published weights by name, against a real HTTP server on 127.0.0.1 that each test starts.

The server stands in for the public bucket (`KERAS_MIXER_WEIGHTS_URL`) and serves checkpoints in
the official layout; it counts requests and can fail on purpose (HTTP 500, a cut-off body, never
answering). Nothing here reaches outside the machine.
"""

import hashlib
import http.server
import io
import os
import socket
import threading
import time

import keras
import numpy as np
import pytest

from keras_mixer import MLPMixer, WeightsDownloadError, download_weights, presets
from keras_mixer.weights import WEIGHTS_URL_VARIABLE, imagenet1k_class_names, resolve_weights
from tests.reference_mixer import random_official_checkpoint


def _npz_bytes(params):
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    return buffer.getvalue()


TINY = _npz_bytes({"stem/bias": np.arange(4, dtype="float32")})


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's name)
        server = self.server
        server.requests.append(self.path)
        behaviour = server.behaviour.get(self.path, "serve")
        body = server.files.get(self.path)
        if behaviour == "hang":
            time.sleep(5)
            return
        if body is None or behaviour == "error":
            self.send_error(404 if body is None else 500)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # "cut": the connection drops halfway, as when a download is interrupted.
        self.wfile.write(body[: len(body) // 2] if behaviour == "cut" else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """A local stand-in for the bucket; the Keras cache goes to `tmp_path/cache`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.behaviour, server.requests = {}, {}, []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(WEIGHTS_URL_VARIABLE, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "cache"))
    yield server
    server.shutdown()
    server.server_close()


def _cached_files(tmp_path):
    root = tmp_path / "cache"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_once_then_the_cache_answers_without_a_request(bucket, tmp_path):
    bucket.files["/gsam/Mixer-S_16.npz"] = TINY
    first = download_weights("mixer_s16", "gsam")
    second = download_weights("mixer_s16", "gsam")
    assert first == second and bucket.requests == ["/gsam/Mixer-S_16.npz"]
    assert first.startswith(str(tmp_path / "cache")) and open(first, "rb").read() == TINY
    assert _cached_files(tmp_path) == [os.path.join("models", "keras_mixer", "gsam", "Mixer-S_16.npz")]


def test_from_preset_by_name_loads_the_published_file_and_imagenet_names(bucket):
    rng = np.random.default_rng(0)
    sizes = dict(patch=32, channels=3, hidden=512, tokens=49, tokens_mlp=256, channels_mlp=2048, blocks=8)
    params = random_official_checkpoint(rng, **sizes, classes=1000)
    # float16 halves the file; the loader casts to the model's float32, as for any official file.
    bucket.files["/gsam/Mixer-S_32.npz"] = _npz_bytes({k: v.astype("float16") for k, v in params.items()})
    model = MLPMixer.from_preset("mixer_s32", weights="gsam")
    assert bucket.requests == ["/gsam/Mixer-S_32.npz"]
    loaded = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    np.testing.assert_array_equal(loaded, params["head/kernel"].astype("float16").astype("float32"))
    assert model.class_names[:2] == ["tench", "goldfish"] and len(model.class_names) == 1000
    # A new head for fine-tuning: every other weight loads (the warning says so), no names.
    with pytest.warns(UserWarning, match="except the head"):
        small = MLPMixer.from_preset("mixer_s32", weights="gsam", num_classes=10)
    assert small.class_names is None and len(bucket.requests) == 1  # cached


def test_imagenet21k_head_has_21843_classes():
    row = presets.published_weights("mixer_b16", "imagenet21k")
    assert row["num_classes"] == 21_843 and row["url"].endswith("/imagenet21k/Mixer-B_16.npz")
    assert row["url"].startswith("https://storage.googleapis.com/mixer_models/")


def test_a_server_error_is_one_clear_error_and_leaves_nothing(bucket, tmp_path):
    bucket.files["/sam/Mixer-B_32.npz"] = TINY
    bucket.behaviour["/sam/Mixer-B_32.npz"] = "error"
    started = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=r"(?s)/sam/Mixer-B_32\.npz.*500.*pass its path"):
        download_weights("mixer_b32", "sam")
    assert time.monotonic() - started < 5 and _cached_files(tmp_path) == []


def test_no_network_fails_within_seconds_naming_the_url(monkeypatch, tmp_path):
    with socket.socket() as closed:  # a port that refuses connections: what "no network" looks like
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(WEIGHTS_URL_VARIABLE, f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(WeightsDownloadError, match=rf"127\.0\.0\.1:{port}/imagenet1k/Mixer-B_16\.npz.*weights="):
        download_weights("mixer_b16", "imagenet1k", cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - started < 5 and _cached_files(tmp_path) == []


def test_a_silent_server_times_out(bucket, tmp_path):
    bucket.files["/gsam/Mixer-B_16.npz"] = TINY
    bucket.behaviour["/gsam/Mixer-B_16.npz"] = "hang"
    started = time.monotonic()
    with pytest.raises(WeightsDownloadError, match="timed out"):
        download_weights("mixer_b16", "gsam", timeout=1)
    assert time.monotonic() - started < 4 and _cached_files(tmp_path) == []


def test_an_interrupted_download_is_not_trusted_later(bucket, tmp_path):
    bucket.files["/imagenet1k/Mixer-L_16.npz"] = TINY
    bucket.behaviour["/imagenet1k/Mixer-L_16.npz"] = "cut"
    with pytest.raises(WeightsDownloadError):
        download_weights("mixer_l16", "imagenet1k")
    assert _cached_files(tmp_path) == []
    bucket.behaviour.clear()  # the network is back: the next call downloads the whole file
    assert open(download_weights("mixer_l16", "imagenet1k"), "rb").read() == TINY
    assert len(bucket.requests) == 2


def test_a_corrupt_file_in_the_cache_is_downloaded_again(bucket, tmp_path):
    bucket.files["/imagenet21k/Mixer-L_16.npz"] = TINY
    cached = tmp_path / "cache" / "models" / "keras_mixer" / "imagenet21k" / "Mixer-L_16.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(TINY[:100])  # e.g. copied by hand, half-way
    assert open(download_weights("mixer_l16", "imagenet21k"), "rb").read() == TINY
    assert len(bucket.requests) == 1


@pytest.mark.parametrize("served, sha256", [(TINY, "0" * 64), (b"<html>not found</html>", None)])
def test_a_hash_or_format_failure_leaves_nothing_in_the_cache(bucket, tmp_path, monkeypatch, served, sha256):
    bucket.files["/sam/Mixer-B_16.npz"] = served
    row = dict(presets.PUBLISHED_WEIGHTS[("mixer_b16", "sam")], sha256=sha256)
    monkeypatch.setitem(presets.PUBLISHED_WEIGHTS, ("mixer_b16", "sam"), row)
    with pytest.raises(WeightsDownloadError, match="corrupt: (its sha256 is|it is not a complete)"):
        download_weights("mixer_b16", "sam")
    assert _cached_files(tmp_path) == []


def test_a_known_sha256_is_checked_and_then_trusted(bucket, monkeypatch):
    bucket.files["/sam/Mixer-B_16.npz"] = TINY
    row = dict(presets.PUBLISHED_WEIGHTS[("mixer_b16", "sam")], sha256=hashlib.sha256(TINY).hexdigest())
    monkeypatch.setitem(presets.PUBLISHED_WEIGHTS, ("mixer_b16", "sam"), row)
    assert download_weights("mixer_b16", "sam") == download_weights("mixer_b16", "sam")
    assert len(bucket.requests) == 1


def test_names_that_do_not_exist_for_a_preset_list_what_does():
    with pytest.raises(ValueError, match=r"No published 'imagenet21k' weights for 'mixer_s32'.*\['gsam'\]"):
        MLPMixer.from_preset("mixer_s32", weights="imagenet21k")
    with pytest.raises(ValueError, match="published set name .* or the path of an existing file"):
        MLPMixer.from_preset("mixer_s32", weights="no/such/file.npz")
    with pytest.raises(ValueError, match="exists per preset"):
        resolve_weights(None, "imagenet1k")


def test_every_published_row_is_a_preset_with_the_official_file_name():
    assert len(presets.PUBLISHED_WEIGHTS) == 10  # paper-facts: 2 + 2 + 2 + 4 files for the seven presets
    for (preset, weight_set), row in presets.PUBLISHED_WEIGHTS.items():
        size, patch = preset[len("mixer_") :][0].upper(), preset[len("mixer_") + 1 :]
        assert row["url"] == f"https://storage.googleapis.com/mixer_models/{weight_set}/Mixer-{size}_{patch}.npz"
        assert weight_set in presets.PRESETS[preset]["metadata"]["official_weights"]


def test_imagenet_class_names_follow_tfds_wordnet_order():
    import tensorflow_datasets as tfds  # noqa: PLC0415

    labels = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    with open(labels) as file:
        wordnet_ids = file.read().split()
    shipped = os.path.join(os.path.dirname(presets.__file__), "data", "imagenet1k_class_names.tsv")
    with open(shipped) as file:
        rows = [line.rstrip("\n").split("\t") for line in file]
    assert [wnid for wnid, _ in rows] == wordnet_ids
    names = imagenet1k_class_names()
    assert len(set(names)) == 1000
    # Well-known ImageNet classes at their well-known indices.
    assert (names[0], names[1], names[207], names[281], names[999]) == (
        "tench", "goldfish", "golden retriever", "tabby", "toilet tissue",
    )  # fmt: skip


def test_the_cli_fine_tunes_a_folder_from_published_weights_at_a_non_integer_size(bucket, tmp_path, capsys):
    from tests.test_folders import make_folder  # noqa: PLC0415
    from tests.training_helpers import run_train  # noqa: PLC0415
    from training.train import main as train_main  # noqa: PLC0415

    sizes = dict(patch=32, channels=3, hidden=512, tokens=49, tokens_mlp=256, channels_mlp=2048, blocks=8)
    params = random_official_checkpoint(np.random.default_rng(1), **sizes, classes=1000)
    bucket.files["/gsam/Mixer-S_32.npz"] = _npz_bytes({k: v.astype("float16") for k, v in params.items()})
    photos = make_folder(str(tmp_path / "photos"), per_class=6)
    model_dir = tmp_path / "run"
    # 96 px is 3x3 tokens of the checkpoint's 7x7: not an integer factor, so interpolation, said explicitly.
    flags = ["--dataset", photos, "--preset", "mixer_s32", "--init-from", "gsam", "--image-size", "96"]
    flags += ["--epochs", "1", "--batch-size", "4", "--validation-fraction", "0", "--test-flip-average", "false"]
    flags += ["--model-dir", str(model_dir)]
    assert train_main(flags) == 2  # in this process, which has the mirror URL and the cache dir
    assert "--token-mixing-resize interpolate" in capsys.readouterr().err and not model_dir.exists()
    result = run_train(*flags, "--token-mixing-resize", "interpolate")  # a subprocess inherits both
    assert result.returncode == 0, result.stderr[-3000:]
    model = keras.saving.load_model(model_dir / "best.keras")
    assert model.num_tokens == 9 and model.tokens_mlp_dim == 256 and model.class_names == ["cat", "dog", "emu"]
    assert bucket.requests == ["/gsam/Mixer-S_32.npz"]  # the second run found it in the cache
