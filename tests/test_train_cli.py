"""End-to-end runs of `python -m training.train` on a slice of the offline Fashion-MNIST."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.training_helpers import ROOT, TINY_RUN, run_main_in_process, run_module, run_train
from training.machine import xla_for_training


def _history_epochs(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def _evaluate_cli(model_dir, data_dir, *flags):
    return run_module("training.evaluate", "--model-dir", model_dir, "--data-dir", data_dir, *flags)


def test_a_run_writes_every_artefact(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    # This run keeps the default XLA choice (auto), where TINY_RUN turns it off.
    flags = [*TINY_RUN, "--xla", "auto", "--epochs", "2", "--data-dir", fashion_data_dir, "--model-dir", str(model_dir)]
    result = run_train(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    for name in ("config.json", "best.keras", "best.json", "last.keras", "history.csv", "summary.json", "curves.png"):
        assert (model_dir / name).exists(), name
    assert any((model_dir / "logs").rglob("events.out.tfevents*"))
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["splits"]["test"] == "test[:256]"
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["train_images_per_second"] > 0
    assert summary["config"]["model"]["hidden_dim"] == 16 and summary["machine"]["cores"] >= 1
    assert _history_epochs(model_dir) == [0, 1]
    # The default recipe's test figure averages each image with its mirror; the single view is kept too.
    assert summary["test_flip_average"] and 0.0 <= summary["single_view_test_accuracy"] <= 1.0
    assert summary["precision"] == "float32"
    model_config, batch = summary["config"]["model"], summary["config"]["schedule"]["batch_size"]
    macs = batch * 16 * model_config["hidden_dim"] * model_config["channels_mlp_dim"]  # 28 px in 7 px patches
    assert summary["xla"] == xla_for_training(None, "float32", channel_macs=macs)[0]
    assert summary["xla_because"].startswith("auto: ")
    assert summary["steps_per_epoch"] == 14 and summary["steps_per_execution"] == 1  # 896 images / 64; as asked
    assert "one view:" in result.stdout

    # The trained checkpoint (optimizer and schedule included) loads in a fresh process and exports.
    export = run_module(
        "training.export", "--model", model_dir / "best.keras", "--name", "tiny", "--base-dir", tmp_path / "exports",
        "--formats", "saved_model,tflite", "--tflite-modes", "float32,int8", "--representative-images", "64",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-3000:]
    assert "Exporting the flip-averaged model" in export.stdout  # as the run was evaluated
    assert "fully_quantize" not in export.stderr and "XNNPACK" not in export.stderr  # the converter's, LiteRT's logs

    # The validation part evaluates like the test split; one view, it is the figure fit chose the checkpoint by.
    validation = _evaluate_cli(model_dir, fashion_data_dir, "--split", "validation")
    assert validation.returncode == 0, validation.stderr[-3000:]
    result = json.loads((model_dir / "validation_evaluation.json").read_text())
    assert result["split"] == "train[896:1024]" and result["examples"] == 128 and result["flip_average"]
    assert result["single_view_validation_accuracy"] == pytest.approx(summary["best_validation_accuracy"], abs=1e-6)
    assert (tmp_path / "exports" / "tiny" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "exports" / "tiny" / "tflite" / "1" / "int8.tflite").exists()
    class_names = (tmp_path / "exports" / "tiny" / "1" / "assets" / "class_names.txt").read_text().split("\n")
    assert class_names[0] == "T-shirt/top"
    # The parity report covers every export, on the run's own held-out test split.
    report = json.loads((tmp_path / "exports" / "tiny" / "1" / "assets" / "export_report.json").read_text())
    assert report["split"] == "test[:256]" and report["examples"] == 256
    assert [row["export"] for row in report["rows"]] == ["keras", "saved_model", "float32", "int8"]
    assert report["keras_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert "| saved_model |" in (tmp_path / "exports" / "tiny" / "1" / "assets" / "export_report.md").read_text()

    again = run_main_in_process("training.train", *flags)  # stops before any training: no new process needed
    assert again.returncode == 0 and "already holds this finished run" in again.stdout
    assert _history_epochs(model_dir) == [0, 1]  # not trained twice


def test_without_a_validation_part_the_training_accuracy_picks_the_checkpoint(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    # The last value of a flag wins; this run also covers plain single-view testing.
    flags = (*TINY_RUN, "--validation-fraction", "0", "--epochs", "2", "--test-flip-average", "false")
    result = run_train(*flags, "--data-dir", fashion_data_dir, "--model-dir", str(model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no validation part" in result.stdout
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["splits"]["validation"] is None and summary["splits"]["train"] == "train[0:1024]"
    assert summary["selected_by"] == "accuracy" and summary["best_validation_accuracy"] is None
    assert "val_accuracy" not in summary["final_epoch_metrics"]  # CSVLogger's "NA" is not a number
    assert not summary["test_flip_average"] and summary["single_view_test_accuracy"] == summary["test_accuracy"]

    # training.evaluate can still average a run's views on request; its single view is the run's figure.
    evaluation = _evaluate_cli(model_dir, fashion_data_dir, "--flip-average", "on")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert "one view:" in evaluation.stdout
    result = json.loads((model_dir / "evaluation.json").read_text())
    assert result["flip_average"] and result["single_view_test_accuracy"] == pytest.approx(summary["test_accuracy"])
    no_validation = run_main_in_process(
        "training.evaluate", "--model-dir", model_dir, "--data-dir", fashion_data_dir, "--split", "validation"
    )  # refused before the model loads
    assert no_validation.returncode == 2 and "held out no validation part" in no_validation.stderr
    assert (model_dir / "curves.png").stat().st_size > 0


def test_sigkill_then_the_same_command_resumes_and_finishes(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    flags = [*TINY_RUN, "--epochs", "6", "--data-dir", fashion_data_dir, "--model-dir", str(model_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "training.train", *flags],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    history = model_dir / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not history.exists() or len(_history_epochs(model_dir)) < 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # mid-training, after at least two finished epochs
    process.wait()
    done_before_kill = _history_epochs(model_dir)
    assert 2 <= len(done_before_kill) < 6, "the kill should land mid-run"

    result = run_train(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = _history_epochs(model_dir)
    assert epochs[-1] == 5, epochs  # finished all six epochs (0..5)
    resumed = epochs[len(done_before_kill) :]
    assert resumed and resumed[0] <= done_before_kill[-1] + 1  # continued, did not start over
    assert json.loads((model_dir / "summary.json").read_text())["epochs"] == 6


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dataset", "no_such_set"], "Unknown tfds dataset 'no_such_set'"),
        (["--dataset", "cifar10"], "not prepared"),
        (["--image-size", "30"], "not a multiple of the patch"),
        (["--batch-size", "4096"], "exceeds the"),
        (["--train-split", "nope"], "Bad split"),
        (["--flip", "false"], "needs a model trained with random flips. Received: flip=False"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_message(fashion_data_dir, tmp_path, flags, message):
    model_dir = tmp_path / "run"
    result = run_main_in_process(
        "training.train", *TINY_RUN, "--epochs", "1", "--data-dir", fashion_data_dir, "--model-dir", model_dir, *flags
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not model_dir.exists()  # nothing written


def test_a_model_dir_with_another_config_is_refused_unless_overwrite(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    base = [*TINY_RUN, "--epochs", "1", "--data-dir", fashion_data_dir, "--model-dir", str(model_dir)]
    assert run_train(*base).returncode == 0
    before = (model_dir / "best.keras").read_bytes()
    refused = run_main_in_process("training.train", *base, "--hidden-dim", "24")  # refused before any work
    assert refused.returncode == 2 and "different config (changed: model.hidden_dim)" in refused.stderr
    assert (model_dir / "best.keras").read_bytes() == before
    replaced = run_train(*base, "--hidden-dim", "24", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert list(tmp_path.glob("run.replaced-*/best.keras"))  # the old run was kept, not deleted


def test_a_diverging_loss_stops_with_a_clear_message(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    result = run_train(
        *TINY_RUN, "--epochs", "2", "--learning-rate", "1e30", "--clip-global-norm", "0", "--warmup-epochs", "0",
        "--data-dir", fashion_data_dir, "--model-dir", str(model_dir),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    assert "the loss became" in result.stderr and "Traceback" not in result.stderr
    assert not (model_dir / "best.keras").exists()  # no checkpoint of broken weights


def test_init_from_an_official_checkpoint_at_half_the_resolution(fashion_data_dir, tmp_path):
    import numpy as np  # noqa: PLC0415

    from tests.reference_mixer import random_official_checkpoint  # noqa: PLC0415

    # Trained at 14x14 (2x2 tokens of 7x7 patches); the run is at 28x28 (4x4 tokens): K = 2.
    params = random_official_checkpoint(
        np.random.default_rng(0), patch=7, channels=1, hidden=16, tokens=4, tokens_mlp=8, channels_mlp=32, blocks=1,
        classes=10,
    )  # fmt: skip
    checkpoint = tmp_path / "tiny_14px.npz"
    np.savez(checkpoint, **params)
    model_dir = tmp_path / "run"
    result = run_train(
        *TINY_RUN, "--epochs", "1", "--init-from", str(checkpoint), "--data-dir", fashion_data_dir,
        "--model-dir", str(model_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["model"]["tokens_mlp_dim"] == 4 * 8  # block-diagonal copies, paper Appendix C


def test_ema_checkpoints_hold_the_averaged_weights(fashion_data_dir, tmp_path):
    import keras  # noqa: PLC0415

    import keras_mixer  # noqa: F401, PLC0415  (registers the classes)
    from training.train import weights_fingerprint  # noqa: PLC0415

    model_dir = tmp_path / "ema"
    result = run_train(
        *TINY_RUN, "--epochs", "2", "--ema-decay", "0.5", "--data-dir", fashion_data_dir, "--model-dir", str(model_dir)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    # fit ends by copying the average into the model; the last checkpoint must already hold it
    # (saved with the average swapped in), not the raw weights of the last step.
    last = keras.saving.load_model(model_dir / "last.keras")
    assert weights_fingerprint(last) == summary["weights_fingerprint"]
    assert summary["config"]["optim"]["ema_decay"] == 0.5


def test_fit_runs_exactly_each_epochs_steps_whatever_the_steps_per_execution():
    # Keras' fit runs whole executions: at 4 steps per execution, an epoch of 10 steps would run 12, past the
    # learning-rate schedule's end. compile_for_training lowers it to a divisor of the epoch.
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from keras_mixer import MLPMixer  # noqa: PLC0415
    from training.config import TrainConfig  # noqa: PLC0415
    from training.train import compile_for_training  # noqa: PLC0415

    config = TrainConfig()
    config.distribute.steps_per_execution, config.distribute.xla = 4, False
    model = MLPMixer(num_classes=3, image_size=8, patch_size=4, num_channels=1, num_blocks=1, hidden_dim=4,
                     tokens_mlp_dim=2, channels_mlp_dim=4)  # fmt: skip
    compile_for_training(model, config, steps_per_epoch=10)
    # Built before fit, outside any strategy: one trace of the step, not Keras' second one (slots made in the first)
    assert model.optimizer.built
    traces, keras_train_step = [], model.train_step
    model.train_step = lambda data: traces.append(1) or keras_train_step(data)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    data = tf.data.Dataset.from_tensors((images, keras.ops.one_hot([0, 2], 3))).repeat()
    model.fit(data, epochs=2, steps_per_epoch=10, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == 20  # 24 with 4 steps per execution
    assert model.steps_per_execution == 2 and len(traces) == 1
