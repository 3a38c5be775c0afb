"""tf.distribute on CPU: two replicas equal one device; a real two-process multi-worker run."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.training_helpers import ROOT, TINY_RUN, run_module
from training.distribute import make_strategy, tf_config_workers
from training.train import ConfigError, check_batch_split


def test_two_mirrored_replicas_train_like_one_device():
    result = run_module("tests.two_replica_equivalence", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == [1, 2]
    assert report["moved"] > 1e-2  # the steps really changed the weights
    assert report["max_difference"] < 1e-5


def test_global_batch_must_split_across_replicas():
    check_batch_split(64, 2)
    with pytest.raises(ConfigError, match="split evenly across 2 replicas. Received: batch_size=63"):
        check_batch_split(63, 2)


def test_auto_strategy_on_cpu_is_one_device(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("auto").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="Expected one of"):
        make_strategy("parameter_server")


def test_tf_config_workers_counts_the_cluster(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}})
    )
    assert tf_config_workers() == 2


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_multi_worker_mirrored_run_ends_with_identical_weights(fashion_data_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    flags = [*TINY_RUN, "--epochs", "1", "--strategy", "auto", "--data-dir", fashion_data_dir]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "training.train", *flags, "--model-dir", str(tmp_path / "run")],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=400)
        assert process.returncode == 0, stderr[-3000:]
        outputs.append(stdout)
    fingerprints = [re.search(r"weights fingerprint: (\w+)", out).group(1) for out in outputs]
    assert fingerprints[0] == fingerprints[1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["replicas"] == 2 and "test_accuracy" in summary
