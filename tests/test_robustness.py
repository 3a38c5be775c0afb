"""What happens when: two runs in one dir, a kill, a full disk, bad numbers, an unwritable dir, noise."""

import dataclasses
import errno
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_mixer import MLPMixer
from keras_mixer.atomic import write_json_atomically
from tests.training_helpers import ROOT, TINY_RUN, run_main_in_process, run_module, run_train
from training.callbacks import AtomicModelCheckpoint
from training.config import TrainConfig, range_problems
from training.files import WriteError
from training.run_lock import RunDirLockedError, RunLock


def test_a_second_run_in_a_locked_dir_is_refused_and_touches_nothing(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    with RunLock(str(model_dir)):  # this test process plays the first run
        result = run_train(*TINY_RUN, "--epochs", "1", "--data-dir", fashion_data_dir, "--model-dir", str(model_dir))
        assert result.returncode == 2, result.stderr[-2000:]
        assert f"in use by process {os.getpid()}" in result.stderr and "Traceback" not in result.stderr
        assert sorted(os.listdir(model_dir)) == [".lock"]
        with pytest.raises(RunDirLockedError, match="two runs never write one model dir"):
            RunLock(str(model_dir)).__enter__()
    with RunLock(str(model_dir)):  # the lock went with its holder
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = "import sys, time; from training.run_lock import RunLock; RunLock(sys.argv[1]).__enter__(); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / ".lock").exists() or not (tmp_path / ".lock").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(RunDirLockedError, match=f"process {holder.pid}"):
            RunLock(str(tmp_path)).__enter__()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(str(tmp_path)):  # free again, with no clean-up by anyone
        pass


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("optim", "learning_rate", -0.01, "--learning-rate must be > 0. Received: -0.01"),
        ("schedule", "batch_size", 0, "--batch-size must be > 0. Received: 0"),
        ("schedule", "batch_size", -8, "--batch-size must be > 0"),
        ("schedule", "epochs", 0, "--epochs must be > 0"),
        ("schedule", "warmup_epochs", -1.0, "--warmup-epochs must be >= 0"),
        ("optim", "weight_decay", -0.1, "--weight-decay must be >= 0"),
        ("data", "validation_fraction", 1.0, "--validation-fraction must be in [0, 1)"),
        ("optim", "learning_rate", float("nan"), "--learning-rate must be > 0. Received: nan"),
    ],
)
def test_every_numeric_flag_has_a_range(section, field, value, message):
    config = TrainConfig()
    setattr(getattr(config, section), field, value)
    assert range_problems(config) == [message] or message in "; ".join(range_problems(config))
    assert range_problems(TrainConfig()) == []


def test_warmup_longer_than_training_is_refused():
    config = TrainConfig()
    config.schedule = dataclasses.replace(config.schedule, epochs=2, warmup_epochs=3.0)
    assert range_problems(config) == ["--warmup-epochs (3.0) must not exceed --epochs (2)"]


def test_a_bad_number_is_the_only_line_a_new_process_prints(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    result = run_train(*TINY_RUN, "--data-dir", fashion_data_dir, "--model-dir", str(model_dir), "--lr", "-0.01")
    assert result.returncode == 2, result.stderr[-2000:]
    # One message, and nothing else: none of TensorFlow's start-up log lines either.
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: --learning-rate must be > 0. Received: -0.01"
    ]
    assert result.stdout == "" and not model_dir.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs must be > 0"),
        (["--batch-size", "0"], "--batch-size must be > 0"),
        (["--train-split", "train[50%:10%]"], "holds no examples"),
        (["--model-dir", ""], "--model-dir is empty"),
        (["--model-dir", "{file}"], "cannot be a folder"),
        (["--model-dir", "{file}/run"], "cannot be a folder"),
        (["--init-from", "imagenet1k"], "exists per preset: pass a preset"),
        (["--init-from", "no/such.npz"], "published set name (imagenet1k, imagenet21k, sam, gsam) or the path"),
        (["--init-from", "{cut}"], "is not a .keras file (a zip archive): is it truncated or corrupt?"),
    ],
)
def test_bad_flags_exit_2_before_anything_is_written(fashion_data_dir, tmp_path, capsys, flags, message):
    from training.train import main  # noqa: PLC0415

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cut = tmp_path / "cut.keras"
    cut.write_bytes(b"PK\x03\x04 the first bytes of a .keras archive, and nothing after them")
    model_dir = tmp_path / "run"
    flags = [flag.format(file=blocker, cut=cut) for flag in flags]
    assert main([*TINY_RUN, "--data-dir", fashion_data_dir, "--model-dir", str(model_dir), *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not model_dir.exists() and blocker.read_text() == "x"


@pytest.mark.parametrize(
    "module, flags",
    [
        ("training.export", ["--model", "{model}", "--name", "cut", "--base-dir", "{tmp}/exports"]),
        ("training.evaluate", ["--model-dir", "{tmp}/run"]),
        ("training.experiments.token_weights", ["--model", "{model}", "--output", "{tmp}/weights.png"]),
    ],
)
def test_a_cut_off_keras_file_is_named_as_such_by_every_cli_and_nothing_is_written(tmp_path, module, flags):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig().to_json())
    whole = MLPMixer(image_size=8, patch_size=4, num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=8)
    whole.save(tmp_path / "whole.keras")
    (run / "best.keras").write_bytes((tmp_path / "whole.keras").read_bytes()[:-200])  # the zip directory is at the end
    before = sorted(tmp_path.rglob("*"))
    flags = [flag.format(model=run / "best.keras", tmp=tmp_path) for flag in flags]
    result = run_main_in_process(module, *flags)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "is not a .keras file (a zip archive)" in result.stderr, result.stderr
    assert str(run / "best.keras") in result.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    model = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=8, image_size=8, patch_size=4)
    checkpoint = AtomicModelCheckpoint(str(tmp_path), monitor="accuracy")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"accuracy": 0.5})
    before = (tmp_path / "last.keras").read_bytes()

    def save_until_the_disk_is_full(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    model.save = save_until_the_disk_is_full
    with pytest.raises(WriteError, match="Could not write .*last.keras: No space left on device.*previous version"):
        checkpoint.on_epoch_end(1, {"accuracy": 0.6})
    assert (tmp_path / "last.keras").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["best.json", "best.keras", "last.keras"]  # no temporary left


def test_a_failed_first_write_does_not_claim_a_previous_version(tmp_path):
    from keras_mixer.atomic import atomic_path  # noqa: PLC0415

    final = tmp_path / "report.json"
    with pytest.raises(WriteError, match="No space left on device. Nothing was left in its place"):
        with atomic_path(final) as temporary:
            open(temporary, "w").close()
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []
    missing = tmp_path / "gone" / "report.json"
    with pytest.raises(WriteError, match=f"its folder {tmp_path / 'gone'} does not exist.$"):
        write_json_atomically(missing, {})


def test_ctrl_c_says_where_the_run_stopped_without_a_traceback(fashion_data_dir, tmp_path):
    model_dir = tmp_path / "run"
    command = [sys.executable, "-m", "training.train", *TINY_RUN, "--epochs", "50", "--data-dir", fashion_data_dir]
    command += ["--model-dir", str(model_dir)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (model_dir / "last.keras").exists():  # an epoch has finished
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Interrupted" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_checkpoints_with_non_finite_values_or_unused_keys_are_refused():
    from keras_mixer import load_official_weights, save_official_weights  # noqa: PLC0415

    model = MLPMixer(num_blocks=1, hidden_dim=8, tokens_mlp_dim=4, channels_mlp_dim=8, image_size=8, patch_size=4)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    params = save_official_weights(model)
    poisoned = {**params, "stem/bias": np.array([0, np.nan, np.inf, 0, 0, 0, 0, 0], "float32")}
    with pytest.raises(ValueError, match=r"'stem/bias' holds NaN or infinite values \(2 of 8\)"):
        load_official_weights(model, poisoned)
    extra = {**params, "MixerBlock_1/LayerNorm_0/scale": np.ones(8, "float32")}
    with pytest.raises(ValueError, match=r"1 key\(s\) the model has no variable for.*allow_partial=True"):
        load_official_weights(model, extra)
    for variable, value in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    load_official_weights(model, extra, allow_partial=True)  # when the caller says so


def test_a_resumed_run_drops_history_rows_the_backup_does_not_hold(tmp_path):
    from training.callbacks import AtomicBackupAndRestore  # noqa: PLC0415
    from training.files import read_history, trim_history  # noqa: PLC0415

    # Killed after epoch 2's history row, before its backup swap: the backup holds 2 epochs.
    state = tmp_path / "backup" / "state-00002-0000000"
    state.mkdir(parents=True)
    (state / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (tmp_path / "backup" / "current").write_text("state-00002-0000000")
    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n")
    completed = AtomicBackupAndRestore(str(tmp_path / "backup")).completed_epochs()
    assert completed == 2 and trim_history(str(history), completed) == 1
    assert [row["epoch"] for row in read_history(str(history))] == [0.0, 1.0]
    assert trim_history(str(history), completed) == 0  # nothing more to drop


@pytest.mark.parametrize("module", ["training.export", "benchmarks.run"])
def test_cli_output_is_quiet_by_default_and_verbose_on_request(module, tmp_path):
    # TensorFlow's own start-up lines (oneDNN notice, "Could not find cuda drivers") are printed at import,
    # before any flag is parsed; a CLI shows only its own message unless --verbose.
    bad = ["--model", tmp_path / "missing.keras"] if module == "training.export" else ["--presets", "mixer_z9"]
    quiet = run_module(module, *bad, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1 and quiet.stderr.startswith("error: "), quiet.stderr
    verbose = run_module(module, *bad, "--verbose", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert "oneDNN" in verbose.stderr
