"""`python -m training.predict` on the four model formats, after a tiny folder -> 2x fine-tune -> export run."""

import json

import keras
import numpy as np
import pytest

from keras_mixer import MLPMixer
from tests.test_folders import make_folder
from tests.training_helpers import run_module, run_train
from training.predict import FROZEN_WEIGHTS_FLAG
from training.predict import main as predict_main

TINY = ["--patch-size", "7", "--num-blocks", "1", "--hidden-dim", "16", "--tokens-mlp-dim", "8"]
TINY += ["--channels-mlp-dim", "32", "--batch-size", "8", "--validation-fraction", "0.1"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A 28 px "pretrained" model fine-tuned at 56 px on a folder, exported as SavedModel and TFLite."""
    tmp = tmp_path_factory.mktemp("predict")
    photos = make_folder(str(tmp / "photos"), per_class=12)
    pretrained = MLPMixer(
        image_size=28, patch_size=7, num_blocks=1, hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=32,
        num_classes=5, num_channels=3,
    )  # fmt: skip
    pretrained.save(tmp / "pretrained.keras")
    run = tmp / "run"
    flags = ["--dataset", photos, "--init-from", str(tmp / "pretrained.keras"), "--image-size", "56"]
    # One view per image, so that all four formats compute one function: a run evaluated flip-averaged (the
    # default recipe's) is exported and predicted flip-averaged, while its best.keras alone is one view, and
    # the two may legitimately disagree on an image (a fresh-clone CI run caught exactly that).
    flags += ["--test-flip-average", "false"]
    result = run_train(*flags, *TINY, "--epochs", "2", "--model-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    export = run_module(
        "training.export", "--model", run / "best.keras", "--name", "photos", "--base-dir", tmp / "exports",
        "--formats", "saved_model,tflite", "--tflite-modes", "float32", "--report", "off",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    return tmp, run


def test_fine_tuning_at_twice_the_size_used_appendix_c(deployed):
    _, run = deployed
    model = keras.saving.load_model(run / "best.keras")
    assert model.image_size == (56, 56) and model.num_tokens == 64
    assert model.tokens_mlp_dim == 4 * 8  # K^2 * D_S for K = 2
    assert model.class_names == ["cat", "dog", "emu"]


def test_the_four_formats_agree_on_every_image(deployed, tmp_path, capsys):
    tmp, run = deployed
    models = {
        "run": run,
        "keras": run / "best.keras",
        "saved_model": tmp / "exports" / "photos" / "1",
        "tflite": tmp / "exports" / "photos" / "tflite" / "1" / "float32.tflite",  # version 1, as the SavedModel
    }
    top1, margins = {}, []
    for name, model in ({"keras": models["keras"]} | models).items():
        report = tmp_path / f"{name}.json"
        code = predict_main(["--model", str(model), str(tmp / "photos"), "--top-k", "2", "--json", str(report)])
        assert code == 0, name
        results = json.loads(report.read_text())
        assert results["format"] == name and results["failed"] == 0 and len(results["results"]) == 36
        top1[name] = [r["predictions"][0]["name"] for r in results["results"]]
        if name == "keras":
            margins = [
                r["predictions"][0]["probability"] - r["predictions"][1]["probability"] for r in results["results"]
            ]
        assert {p["name"] for r in results["results"] for p in r["predictions"]} <= {"cat", "dog", "emu"}
    # Formats differ by float rounding, which can swap a near-tie: compare where the top two differ.
    decided = [i for i, margin in enumerate(margins) if margin > 1e-3]
    assert len(decided) > 18
    for name in models:
        assert [top1[name][i] for i in decided] == [top1["keras"][i] for i in decided], name
    table = capsys.readouterr().out
    assert "cat/0.png" in table and any(name in table for name in ("cat 0.", "dog 0.", "emu 0."))


def test_an_unreadable_file_is_reported_on_its_line_and_the_others_run(deployed, tmp_path, capsys):
    tmp, run = deployed
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"GIF89a but nothing else")
    good = str(tmp / "photos" / "dog" / "3.gif")
    code = predict_main(["--model", str(run / "best.keras"), good, str(broken), str(tmp_path / "missing.png")])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0].startswith(good) and "error" not in lines[0]
    assert "broken.gif" in lines[1] and "error: not a readable" in lines[1]
    assert "missing.png" in lines[2] and "error: no such file" in lines[2]


def test_a_corrupt_jpeg_gets_one_line_of_ours_and_none_of_libjpegs(deployed, tmp_path, capfd):
    _, run = deployed
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")  # libjpeg prints "Unsupported marker type 0x20" on it
    assert predict_main(["--model", str(run / "best.keras"), str(corrupt)]) == 1
    out, err = capfd.readouterr()
    assert "corrupt.jpg" in out and "error: not a readable" in out
    assert err.strip() == "1 of 1 file(s) could not be classified.", err


def test_a_tflite_model_classifies_quietly_without_litert_s_delegate_line(deployed):
    tmp, _ = deployed
    # A process of its own: LiteRT prints its line once per process, so an earlier test's interpreter would hide it.
    model = tmp / "exports" / "photos" / "tflite" / "1" / "float32.tflite"
    result = run_module("training.predict", "--model", model, tmp / "photos" / "dog" / "3.gif")
    assert result.returncode == 0, result.stderr
    assert "3.gif" in result.stdout and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "nowhere.keras", "x.png"], "--model must be a training run's --model-dir"),
        (["--top-k", "0"], "--top-k must be a positive integer"),
        (["--json", "."], "is a folder"),
        # root passes os.access here, but no file can be made: refused before any image is classified
        (["--json", "/proc/predictions.json"], "--json's folder '/proc' is not writable: no file can be created"),
    ],
)
def test_bad_arguments_exit_2_with_one_message(deployed, tmp_path, capsys, arguments, message):
    _, run = deployed
    full = arguments if arguments[0] == "--model" else ["--model", str(run), str(run), *arguments]
    assert predict_main(full) == 2
    assert message in capsys.readouterr().err


def _damaged_copies(tmp, run, folder):
    """A damaged model of each format: cut-off files, a SavedModel with a garbled graph, a zip that is no .keras."""
    import shutil  # noqa: PLC0415
    import zipfile  # noqa: PLC0415

    keras_file = (run / "best.keras").read_bytes()
    cut_keras = folder / "cut.keras"
    cut_keras.write_bytes(keras_file[: len(keras_file) // 2])
    not_keras = folder / "other.keras"
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("notes.txt", "a zip, but no model in it")
    cut_run = folder / "run"
    cut_run.mkdir()
    shutil.copy(run / "config.json", cut_run / "config.json")
    (cut_run / "best.keras").write_bytes(keras_file[:1000])
    garbled = folder / "saved_model"
    shutil.copytree(tmp / "exports" / "photos" / "1", garbled)
    (garbled / "saved_model.pb").write_bytes((garbled / "saved_model.pb").read_bytes()[:500])
    tflite = (tmp / "exports" / "photos" / "tflite" / "1" / "float32.tflite").read_bytes()
    cut_tflite = folder / "cut.tflite"
    cut_tflite.write_bytes(tflite[:3000])
    return {
        "cut .keras": (cut_keras, "is not a .keras file (a zip archive): is it truncated or corrupt?"),
        "zip without a model": (not_keras, "could not be loaded as a Keras model"),
        "run with a cut best.keras": (cut_run, "is not a .keras file"),
        "garbled SavedModel": (garbled, "could not be loaded"),
        "cut .tflite": (cut_tflite, "could not be loaded"),
    }


def test_a_damaged_model_of_any_format_exits_2_with_one_line_and_writes_nothing(deployed, tmp_path, capsys):
    tmp, run = deployed
    image = str(tmp / "photos" / "dog" / "3.gif")
    for name, (model, message) in _damaged_copies(tmp, run, tmp_path).items():
        report = tmp_path / f"{name}.json"
        assert predict_main(["--model", str(model), image, "--json", str(report)]) == 2, name
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err, (name, err)
        assert str(model) in err, (name, err)
        assert not report.exists(), name


def test_json_into_a_new_folder_is_written_and_a_file_in_the_way_is_refused_first(deployed, tmp_path, capsys):
    tmp, run = deployed
    image = str(tmp / "photos" / "dog" / "3.gif")
    report = tmp_path / "new" / "nested" / "predictions.json"
    assert predict_main(["--model", str(run), image, "--json", str(report)]) == 0
    assert json.loads(report.read_text())["results"][0]["file"] == image
    (tmp_path / "a_file").write_text("x")
    assert predict_main(["--model", str(run), image, "--json", str(tmp_path / "a_file" / "p.json")]) == 2
    out, err = capsys.readouterr()
    assert "is a file" in err and "--json" in err
    assert "dog" not in out.split("\n", 1)[-1]  # refused before classifying: only the first call's table


def test_the_program_keeps_oneDNNs_reordered_weights_and_gives_the_same_probabilities(deployed, tmp_path):
    """`python -m training.predict` turns on oneDNN's weight cache, under which a graph ignores a weight
    changed after the graph first ran with it. So loading a `.keras` file must finish before any graph runs:
    the program's probabilities (cache on, set explicitly here) must be this process's (cache off). The
    model has random weights throughout, so that every matmul weight moves the probabilities (a weight
    changed after a first call makes this test fail). A SavedModel restores its variables before any call."""
    tmp, _ = deployed
    model = MLPMixer(
        image_size=56, patch_size=7, num_blocks=1, hidden_dim=16, tokens_mlp_dim=32, channels_mlp_dim=32,
        num_classes=3, num_channels=3, class_names=["cat", "dog", "emu"],
    )  # fmt: skip
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0.0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save(tmp_path / "random.keras")
    here, program = tmp_path / "here.json", tmp_path / "program.json"
    assert predict_main(["--model", str(tmp_path / "random.keras"), str(tmp / "photos"), "--json", str(here)]) == 0
    result = run_module(
        "training.predict", "--model", tmp_path / "random.keras", tmp / "photos", "--json", program,
        env={FROZEN_WEIGHTS_FLAG: "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected, got = (json.loads(report.read_text())["results"] for report in (here, program))
    assert len({r["predictions"][0]["probability"] for r in expected}) > 10, "the images must give varied outputs"
    assert [r["file"] for r in got] == [r["file"] for r in expected]
    for mine, theirs in zip(got, expected):
        probabilities = [(p["name"], round(p["probability"], 5)) for p in mine["predictions"]]
        assert probabilities == [(p["name"], round(p["probability"], 5)) for p in theirs["predictions"]]
