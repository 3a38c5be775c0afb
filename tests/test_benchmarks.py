"""`python -m benchmarks.run` runs end to end on a small selection and writes what it promises.

Speed figures are never asserted here (they belong to benchmarks/, not to timed tests); only that
the suite runs, measures, and reports each row with its statistics.
"""

import argparse
import fcntl
import importlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import (
    constant_kernels_ab,
    frozen_weights_ab,
    fused_gelu_ab,
    fused_norm_ab,
    fused_update_ab,
    gpu_check,
    inference_gelu_ab,
    mlp_layout,
    op_breakdown,
    paths_ab,
    peer_ab,
    peer_worker,
    precision_training_ab,
    run,
    training_matmul_ab,
    training_norm_ab,
    xla_training_ab,
)
from benchmarks.alternation import alternate_train_steps
from benchmarks.flops import flops_per_image, gemm_operands
from benchmarks.peer import PeerError, PeerProcess, ensure_peer_venv
from benchmarks.run import check_targets, model_config, target_classes
from keras_mixer import constant_kernels, fused_gelu, fused_norm
from keras_mixer.fused_norm import onednn_enabled
from keras_mixer.layers import MixerBlock
from keras_mixer.presets import preset_config
from tests.training_helpers import ROOT, run_main_in_process, run_module
from training import EXIT_BAD_INPUT


def test_flops_match_the_published_figure_for_s16():
    # timm lists mixer_s16_224 at 3.79 GMACs.
    assert abs(flops_per_image({**preset_config("mixer_s16"), "image_size": 224}) / 2e9 - 3.79) < 0.02


def test_the_training_limit_times_every_matmul_and_both_of_its_gradients():
    config = {**preset_config("mixer_s16"), "image_size": 64, "num_channels": 3, "num_classes": 7}

    def products(operands):  # (output shape, FLOPs) of each matmul, computed as tf.matmul would
        for a_shape, b_shape, flags, count in operands:
            a, b = np.zeros(a_shape, "float32"), np.zeros(b_shape, "float32")
            a, b = (a.T if flags.get("transpose_a") else a), (b.T if flags.get("transpose_b") else b)
            yield (a @ b).shape, 2 * a.shape[0] * a.shape[1] * b.shape[1] * count

    forward = gemm_operands(config, 2)
    step = gemm_operands(config, 2, training=True)
    assert sum(flops for _, flops in products(step)) == 3 * sum(flops for _, flops in products(forward))
    assert sum(flops for _, flops in products(forward)) == 2 * flops_per_image(config)
    for i, (a_shape, b_shape, _, _) in enumerate(forward):  # the input's gradient, then the kernel's
        assert [shape for shape, _ in products(step[3 * i : 3 * i + 3])] == [(a_shape[0], b_shape[1]), a_shape, b_shape]


def test_the_suite_runs_and_writes_json_and_png(tmp_path):
    scratch = tmp_path / "tmp"  # the child's TMPDIR: the SavedModels and TFLite files it timed must not stay
    scratch.mkdir()
    result = run_module(
        "benchmarks.run", "--presets", "fashion", "--batch-sizes", "1",
        "--rows", "keras,predict,tflite,frozen,breakdown,peer", "--repeats", "1",
        "--json", tmp_path / "b.json", "--plot", tmp_path / "b.png", env={"TMPDIR": str(scratch)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(scratch.glob("bench_*")), list(scratch.iterdir())
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["machine"]["cores"] >= 1
    (fashion,) = report["results"]
    assert fashion["limits"]["float32_b1"]["median"] > 0
    rows = {row["row"]: row for row in fashion["rows"]}
    assert {"keras", "keras_unfused_norm", "keras_predict_numpy", "tflite_float32", "tflite_int8"} <= set(rows)
    assert all(rows[f"keras_evaluate_numpy{kind}"]["images_per_second"]["median"] > 0 for kind in ("", "_unpatched"))
    # oneDNN's weight cache, measured in a process of its own (benchmarks/frozen_weights_ab.py)
    frozen = {f"{kind}_frozen_weights" for kind in ("keras", "keras_bfloat16", "saved_model", "saved_model_bfloat16")}
    assert frozen <= set(rows) and all(rows[kind]["images_per_second"]["median"] > 0 for kind in frozen)
    ops = {row["op"]: row for row in fashion["breakdown"]["float32"]}
    assert ops["_MklNativeFusedMatMul"]["count"] == 17  # 4 blocks x 4 matmuls + the head, bias (and GELU) fused
    # 4 blocks x 2 layer norms + the pre-head norm, all below the fused norm's size (16 x 128): Keras' ops,
    # the variance's square as one SquaredDifference each (TensorFlow 2.21), or as Sub and Square ops, 18 of
    # each (tf-nightly 2.23).
    squares = {(op, ops[op]["count"]) for op in ("SquaredDifference", "Square") if op in ops}
    assert squares in ({("SquaredDifference", 9)}, {("Square", 18)}), ops.keys()  # 2.21's form, the nightly's
    assert op_breakdown.XLA_OP_TYPE not in ops and "_MklLayerNorm" not in ops, ops.keys()
    assert abs(sum(row["share"] for row in ops.values()) - 1) < 1e-6
    assert rows["keras"]["images_per_second"]["min"] <= rows["keras"]["images_per_second"]["median"]
    assert rows["keras"]["latency_ms"]["p50"] > 0 and 0 < rows["keras"]["fraction_of_limit"]
    int8 = next(t for t in report["targets"] if t["target"].startswith("fashion TFLite int8 / float32 b1"))
    assert int8["applies"] == bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(report["machine"]["cpu_flags"]))
    assert (tmp_path / "b.png").stat().st_size > 10_000
    assert "img/s (median)" in result.stdout


@pytest.mark.parametrize("limit, label", [(math.inf, "keras b32, fused /"), (0, "keras b32, not fused (")])
def test_the_fused_norm_target_says_when_the_thread_count_kept_keras_op(monkeypatch, limit, label):
    monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", limit)
    rows = [{"row": kind, "batch_size": 32, "images_per_second": {"median": rate}, "fraction_of_limit": 0.8}
            for kind, rate in (("keras", 22.0), ("keras_unfused_norm", 20.0))]  # fmt: skip
    targets = check_targets([{"model": "mixer_s16", "rows": rows}], None)
    (norm,) = [t for t in targets if "unfused layer norm" in t["target"] and t["target"].startswith("mixer_s16 keras ")]
    assert label in norm["target"] and norm["measured"] == pytest.approx(1.1)


def test_the_op_breakdown_of_a_training_step_shows_the_backward_pass_one_op_at_a_time():
    # A process of its own: the inter-op setting only takes before TensorFlow's first op.
    result = run_module(
        "benchmarks.op_breakdown", "--preset", "fashion", "--batch-size", "4", "--training", "--one-op-at-a-time"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout
    assert "training step, one op at a time (inter-op threads: 1)" in printed
    counts = {line.split()[0]: int(line.split()[-1]) for line in printed.splitlines() if line.startswith("_Mkl")}
    # Forward: the 8 MLPs' second Dense and the head fused with their bias; each MLP's first Dense (its bias in
    # the compiled GELU) and the stem as plain matmuls. Backward: two plain matmuls per Dense, the gradients of
    # its input and of its kernel, and the stem kernel's.
    assert counts["_MklNativeFusedMatMul"] == 9, printed
    assert counts["_MklMatMul"] == (8 + 1) + (2 * 17 + 1), printed


def test_the_op_breakdown_names_every_bad_flag_in_one_line_before_touching_tensorflow():
    # In this process TensorFlow has run, so --one-op-at-a-time could not apply: the bad flags come first.
    flags = ["--preset", "mixer_z9", "--batch-size", "0", "--one-op-at-a-time", "--training", "--unknown-batch"]
    result = run_main_in_process("benchmarks.op_breakdown", *flags)
    assert result.returncode == EXIT_BAD_INPUT
    (line,) = result.stderr.strip().splitlines()
    assert "--batch-size must be >= 1. Received: 0" in line and "unknown model 'mixer_z9'" in line
    assert "--unknown-batch is for the forward pass" in line


def test_the_token_contraction_variant_computes_the_package_function_and_is_timed(monkeypatch):
    # _measure swaps MixerBlock.call for the variant (it runs alone in a child process in the A/B);
    # monkeypatch puts the package's call back after this test. It checks equal logits itself.
    monkeypatch.setattr(MixerBlock, "call", MixerBlock.call)
    settings = {"preset": "fashion", "precision": "float32", "train_batch": 4, "forward_batch": 4, "steps": 1}
    rates = mlp_layout._measure("contract", {**settings, "repeats": 1})
    assert MixerBlock.call is mlp_layout._contract_tokens
    assert rates["train"] > 0 and rates["forward"] > 0


def test_the_layout_ab_refuses_bad_flags_in_one_message_before_any_process(capsys):
    with pytest.raises(SystemExit) as exit_info:
        mlp_layout.main(["--preset", "mixer_z9", "--steps", "0", "--variants", "2d,contract"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--steps must be >= 1. Received: 0" in message and "unknown model 'mixer_z9'" in message


def test_unknown_models_and_rows_are_refused():
    result = run_main_in_process("benchmarks.run", "--presets", "mixer_z9", "--rows", "keras,onnx")
    assert result.returncode == 2
    assert "unknown model 'mixer_z9'" in result.stderr and "unknown row 'onnx'" in result.stderr


def test_gpu_check_script_is_valid_bash_and_its_gpu_rows_run_where_the_gpu_path_is_forced(tmp_path):
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], check=False).returncode == 0
    tiny = dict(gpu_check.SMALL, num_blocks=1, image_size=16)
    without_gpu = gpu_check.fit_rows([], time.perf_counter(), (tiny, tiny))
    assert all(row["skipped"].startswith("no NVIDIA GPU") for row in without_gpu.values())
    # MirroredStrategy without a GPU runs on the CPU: the GPU code path, with a fake device name (one bf16
    # row; the others differ only in their flags, and XLA compilation would cost CI 15 s).
    rows = gpu_check.fit_rows(["NVIDIA H100 (fake)"], time.perf_counter(), (tiny, tiny), 2, ("fit_s16_bfloat16",))
    assert rows["fit_s16_bfloat16"]["images_per_second"] > 0 and rows["fit_s16_float32"]["skipped"] == "not selected"
    parity = gpu_check.export_parity(tiny, 1, str(tmp_path))
    assert parity["saved_model_max_abs_difference"] < 1e-5 and parity["tflite_float32_max_abs_difference"] < 1e-4


def test_every_cpu_check_step_is_a_command_its_program_accepts(tmp_path, monkeypatch):
    script = os.path.join(ROOT, "benchmarks", "cpu_check.sh")
    env = {**os.environ, "CPU_CHECK_DRY_RUN": "1", "PEER_VENV": str(tmp_path / "peer")}

    def dry_steps(*half):
        dry = subprocess.run(
            ["bash", script, str(tmp_path / "out"), *half], capture_output=True, text=True, env=env, check=False
        )
        assert dry.returncode == 0, dry.stderr
        return [line.split("] ", 1)[1].split() for line in dry.stdout.splitlines() if " -m benchmarks." in line]

    steps = dry_steps()
    assert len(steps) == 18 and (tmp_path / "out" / "lscpu.txt").exists()
    rows, peer, ab = dry_steps("rows"), dry_steps("peer"), dry_steps("ab")  # one lent-machine call each
    assert rows + peer + ab == steps
    assert {w[w.index("-m") + 1] for w in rows} == {"benchmarks.run", "benchmarks.precision_training_ab"}
    assert {w[w.index("-m") + 1] for w in peer} == {"benchmarks.peer_ab"}
    del env["PEER_VENV"]
    assert dry_steps("peer") == []  # no venv with torch and timm: the part is skipped, with a line saying so
    env["PEER_VENV"] = str(tmp_path / "peer")
    wrong = subprocess.run(
        ["bash", script, str(tmp_path / "wrong"), "both"], capture_output=True, text=True, env=env, check=False
    )
    assert wrong.returncode == 2 and "all, rows, peer or ab; got 'both'" in wrong.stderr
    assert not (tmp_path / "wrong").exists()
    checkout, bin_dir = tmp_path / "checkout_without_venv", tmp_path / "bin"
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(script, checkout / "benchmarks")
    bin_dir.mkdir()
    (bin_dir / "python3").write_text("#!/bin/sh\nexit 1\n")  # the python3 on PATH finds no TensorFlow
    (bin_dir / "python3").chmod(0o755)
    bare = subprocess.run(
        ["bash", str(checkout / "benchmarks" / "cpu_check.sh"), str(tmp_path / "bare")], capture_output=True,
        text=True, env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=False,
    )  # fmt: skip
    assert bare.returncode == 2 and "has no tensorflow or no keras" in bare.stderr, bare.stderr
    assert not (tmp_path / "bare").exists()
    for words in steps:
        with_peer = words[words.index("-m") + 1] in ("benchmarks.run", "benchmarks.peer_ab")
        assert str(tmp_path / "out") in " ".join(words) and with_peer == ("--peer-venv" in words)
    _assert_each_program_parses_its_arguments(steps, monkeypatch)


def _assert_each_program_parses_its_arguments(steps, monkeypatch):
    """Each step's `python -m benchmarks.X ARGS` words: X's own parser accepts ARGS (stopped right after)."""

    class Parsed(Exception):
        pass

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, args=None, namespace=None):
        parse(parser, args, namespace)  # a flag the program does not have exits here with status 2
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for words in steps:
        module = words[words.index("-m") + 1]
        with pytest.raises(Parsed):
            importlib.import_module(module).main(words[words.index("-m") + 2 :])


def test_next_tensorflow_alternates_the_pinned_and_the_newer_tensorflow_step_by_step(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "benchmarks", "next_tensorflow.sh"), checkout / "benchmarks")
    next_venv, out = tmp_path / "next-venv", tmp_path / "out"
    env = {**os.environ, "NEXT_TF_DRY_RUN": "1", "NEXT_TF_VENV": str(next_venv), "PEER_VENV": str(tmp_path / "peer")}
    script = ["bash", str(checkout / "benchmarks" / "next_tensorflow.sh"), str(out)]
    bare = subprocess.run(script, capture_output=True, text=True, env=env, check=False)
    assert bare.returncode == 2 and "(.venv/bin/python)" in bare.stderr and not out.exists(), bare.stderr
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").write_text("#!/bin/sh\necho 3.15.1\n")  # .venv's Keras version
    (checkout / ".venv" / "bin" / "python").chmod(0o755)
    (tmp_path / "a_file").write_text("")
    for words, message in (
        ([str(out), "extra"], "at most one argument"),
        ([str(tmp_path / "a_file" / "out")], "cannot be made or written to"),
    ):
        wrong = subprocess.run([*script[:2], *words], capture_output=True, text=True, env=env, check=False)
        assert wrong.returncode == 2 and message in wrong.stderr and not out.exists(), wrong.stderr
    dry = subprocess.run(script, capture_output=True, text=True, env=env, check=False)
    assert dry.returncode == 0, dry.stderr
    lines = [line.split("] ", 1)[1] for line in dry.stdout.splitlines()]
    assert lines[0] == f"making {next_venv}: tf-nightly==2.23.0.dev20261026, keras==3.15.1" and not next_venv.exists()
    steps = [line.split() for line in lines if " -m benchmarks." in line]
    assert [words[0] for words in steps] == [".venv/bin/python", f"{next_venv}/bin/python"] * 3
    assert [words[2] for words in steps] == ["benchmarks.run"] * 2 + ["benchmarks.peer_ab"] * 4
    for pinned, newer in zip(steps[::2], steps[1::2]):  # the same step, into its own JSON
        assert [w.replace("_pinned", "_next") for w in pinned[1:]] == newer[1:] and "--peer-venv" in pinned
    assert all(str(out) in " ".join(words) for words in steps) and (out / "lscpu.txt").exists()
    _assert_each_program_parses_its_arguments(steps, monkeypatch)
    next_venv.mkdir()  # a folder the script did not make: refused, not replaced
    (next_venv / "keep").write_text("theirs")
    foreign = subprocess.run(script, capture_output=True, text=True, env=env, check=False)
    assert foreign.returncode == 1 and "was not made by this script" in foreign.stdout, foreign.stdout
    assert (next_venv / "keep").read_text() == "theirs"
    (next_venv / ".made_by_next_tensorflow").write_text("tf-nightly==2.23.0.dev20261026 keras==3.15.1\n")
    made = subprocess.run(script, capture_output=True, text=True, env=env, check=False)
    assert made.returncode == 0 and "making" not in made.stdout and made.stdout.count(" -m benchmarks.") == 6
    with open(out / ".lock") as lock:  # a run writing into the folder holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        second = subprocess.run(script, capture_output=True, text=True, env=env, check=False)
    assert second.returncode == 2 and "another next_tensorflow.sh is writing into" in second.stderr


def _tensorflow_products(plan):
    """(a, b) shapes of each matmul of a `gemm_plan` as tf.matmul multiplies them (after its transposes)."""
    for a_shape, b_shape, flags, *_ in plan:
        a, b = np.zeros(a_shape, "float32"), np.zeros(b_shape, "float32")
        yield (a.T if flags.get("transpose_a") else a).shape, (b.T if flags.get("transpose_b") else b).shape


def test_the_peer_worker_times_the_same_products_as_tensorflow_inner_times_per_call():
    plan = run.gemm_plan({**preset_config("mixer_s16"), "image_size": 64, "num_classes": 7}, 2, training=True)
    multiplied = []

    class Shape:  # stands in for a torch tensor: its shape, and a transpose that swaps it
        def __init__(self, *shape):
            self.shape = shape

        def to(self, dtype):
            assert dtype == "bf16"
            return self

        def t(self):
            return Shape(*reversed(self.shape))

    fake_torch = argparse.Namespace(bfloat16="bf16", randn=Shape, mm=lambda a, b: multiplied.append((a.shape, b.shape)))
    worker = object.__new__(peer_worker.Peer)
    worker.torch = fake_torch
    request = {"gemm": [[a, b, flags, inner] for a, b, flags, _, _, inner in json.loads(json.dumps(plan))],
               "dtype": "bfloat16", "repeats": 2}  # fmt: skip
    answer = worker.answer(request)
    assert [len(seconds) for seconds in answer["seconds"]] == [2] * len(plan)
    expected = [pair for pair, entry in zip(_tensorflow_products(plan), plan) for _ in range(3 * entry[-1])]
    assert multiplied == expected  # a warm-up call and two timed ones, each `inner` matmuls


def test_the_peer_gemm_limit_counts_each_matmul_as_tensorflow_s_limit_does():
    config = {**preset_config("mixer_s16"), "image_size": 64, "num_classes": 7}
    plan = run.gemm_plan(config, 2, training=True)
    step_flops = 3 * 2 * flops_per_image(config)  # forward and backward, batch 2

    class Peer:  # every matmul at exactly 1 GFLOP/s in the first repeat, 0.5 in the second
        versions = {"torch": "fake"}

        def gemm_seconds(self, matmuls, dtype, repeats):
            assert [tuple(m) for m in matmuls] == [(a, b, f, inner) for a, b, f, _, _, inner in plan]
            flops = [2 * a[0] * a[1] * b[1] for a, b in _tensorflow_products(plan)]
            return {"seconds": [[inner * f / 1e9, 2 * inner * f / 1e9] for f, (*_, inner) in zip(flops, matmuls)]}

    limit = run.peer_gemm_limit(Peer(), config, 2, "bfloat16", repeats=2, training=True)
    assert limit["max"] == pytest.approx(1e9) and limit["min"] == pytest.approx(0.5e9) and limit["note"] == "torch fake"
    assert sum(count * flops for *_, count, flops, _ in plan) == step_flops

    class Gone(Peer):
        def gemm_seconds(self, matmuls, dtype, repeats):
            return {"note": "the peer worker exited on an earlier row"}

    assert run.peer_gemm_limit(Gone(), config, 2, "float32", 2) == {"note": "the peer worker exited on an earlier row"}


def test_the_training_targets_state_the_ceiling_that_tensorflow_s_matmuls_set_against_timm():
    limits = {
        "float32_training_b8": {"max": 200e9},
        "torch_float32_training_b8": {"max": 250e9, "note": "torch"},
        "bfloat16_training_b8": {"max": 600e9},
        "torch_bfloat16_training_b8": {"note": "worker exited"},
    }

    def row(kind, fraction):
        return {"row": kind, "batch_size": 8, "images_per_second": {"median": 9.0}, "fraction_of_limit": fraction}

    rows = [row("train_float32", 0.9), row("timm_train_float32", 0.95), row("timm_train_bfloat16", 0.8)]
    targets = {
        t["target"]: t
        for t in check_targets([{"model": "mixer_s16", "rows": rows, "limits": limits}], None, ["amx_bf16"])
    }
    ratio = targets["mixer_s16 float32 GEMM limit, train step's matmuls b8: TensorFlow / torch (stated as measured)"]
    assert ratio["measured"] == pytest.approx(0.8) and ratio["goal"] is None and ratio["met"] is None
    ceiling = "training / timm step, if ours ran at TensorFlow's GEMM limit (a ceiling, stated as measured)"
    assert targets[f"mixer_s16 float32 {ceiling}"]["measured"] == pytest.approx(1 / 0.95)
    assert targets[f"mixer_s16 bfloat16 {ceiling}"]["measured"] == pytest.approx(1.25)
    assert not any("bfloat16 GEMM limit" in target for target in targets)  # torch's limit is missing: no ratio


def test_the_fit_rows_time_one_epoch_of_numpy_batches_and_state_our_path_against_keras_own():
    calls = []

    def spy(model, images, labels, **kwargs):  # in place of `fit`: what the row passes it
        calls.append((model.compute_dtype, type(images), images.shape, labels.shape, kwargs))

    rates = run.fit_training("fashion", 3, repeats=2, precision="bfloat16", fit=spy)
    assert len(rates) == 2 and min(rates) > 0 and len(calls) == 3  # a warm-up call, then one per repeat
    dtype, kind, image_shape, label_shape, kwargs = calls[0]
    assert dtype == "bfloat16" and kind is np.ndarray and kwargs == {"batch_size": 3, "epochs": 1, "verbose": 0}
    assert image_shape == (3 * run.FIT_BATCHES, 28, 28, 1) and label_shape == (3 * run.FIT_BATCHES,)

    def row(kind, rate):
        return {"row": kind, "batch_size": 8, "images_per_second": {"median": rate}, "fraction_of_limit": 0.5}

    rows = [row("fit_numpy_float32", 9.0), row("fit_numpy_float32_unpatched", 6.0)]
    targets = {t["target"]: t["measured"] for t in check_targets([{"model": "fashion", "rows": rows}], None)}
    assert targets["fashion float32 fit(NumPy) / fit through Keras' own array path (stated as measured)"] == 1.5


def test_the_plot_adds_a_panel_of_both_frameworks_gemm_limits_when_the_peer_measured_them(monkeypatch, tmp_path):
    saved = []
    monkeypatch.setattr(run, "save_figure_atomically", lambda figure, path: saved.append(figure))
    row = {"row": "train_float32", "batch_size": 8, "images_per_second": {"median": 9.0, "min": 8.0, "max": 9.5}}
    limits = {
        "float32_training_b8": {"max": 2e11},
        "torch_float32_training_b8": {"max": 3e11},
        "float32_b8": {"max": 1e11},
    }
    report = {"machine": {"cpu": "test CPU", "cores": 2, "tensorflow": "2.21.0"}, "results": [
        {"model": "mixer_s16", "flops_per_image": 7.5e9, "rows": [row], "limits": limits}]}  # fmt: skip
    run.plot(report, tmp_path / "b.png")
    without_peer = {**report["results"][0], "limits": {"float32_b8": {"max": 1e11}}}
    run.plot({**report, "results": [without_peer]}, tmp_path / "c.png")
    with_torch, without = saved
    _, panel = with_torch.axes
    assert panel.get_title() == "the frameworks' matmuls" and len(without.axes) == 1
    assert with_torch._suptitle.get_text() == "test CPU (2 cores), TensorFlow 2.21.0"  # figures differ by version
    labels = [tick.get_text() for tick in panel.get_yticklabels()]
    assert labels == ["float32_training_b8"]  # float32_b8 has no torch figure
    assert sorted(bar.get_width() for bar in panel.patches) == [200.0, 300.0]  # GFLOP/s


def test_targets_apply_by_cpu_class():
    assert target_classes(["avx2"])["bfloat16"] == (False, "no AMX-BF16 or AVX512-BF16")
    assert target_classes(["amx_bf16", "avx512_bf16"])["bfloat16"] == (True, "has amx_bf16, avx512_bf16")
    assert target_classes(["avx_vnni"])["int8"][0] and not target_classes(["avx512f"])["int8"][0]


def test_a_peer_venv_without_torch_and_timm_is_one_clear_error(tmp_path):
    with pytest.raises(PeerError, match="did not start: the peer worker exited"):
        PeerProcess(sys.executable)  # this venv has neither torch nor timm, by design
    with pytest.raises(PeerError, match="has no bin/python"):
        ensure_peer_venv(str(tmp_path / "missing"), create=False)


def test_the_fused_norm_ab_times_the_three_paths_in_alternation(tmp_path, capsys):
    out = tmp_path / "ab.json"
    args = ["--preset", "mixer_s16", "--batch-size", "1", "--rounds", "2", "--calls", "1", "--json", str(out)]
    assert fused_norm_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert len(report["ratios_fused_over_unfused"]) == 2 and report["machine"]["cpu"]
    assert len(report["onednn_over_unfused"]["ratios_onednn_over_unfused"]) == 2
    assert len(report["onednn_over_fused"]["ratios_onednn_over_fused"]) == 2
    assert sorted(report["images_per_second"]) == ["fused", "onednn", "unfused"]
    assert all(rate > 0 for rates in report["images_per_second"].values() for rate in rates)
    assert report["onednn_layer_norm_ran"] is onednn_enabled() and report["xla_norm_ran"] is True
    printed = capsys.readouterr().out
    assert "fused faster in" in printed and "onednn faster in" in printed
    bad = ["--rounds", "0", "--calls", "-1", "--min-elements", "-5", "--json", str(tmp_path)]
    assert fused_norm_ab.main(bad) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert f"--json must be a file path; {str(tmp_path)!r} is a folder" in error
    assert "--rounds must be >= 1. Received: 0; --calls must be >= 1. Received: -1" in error
    assert "--min-elements must be >= 0. Received: -5" in error


def test_the_paths_ab_times_predict_and_the_saved_model_against_the_fastest_keras_path(tmp_path, capsys):
    out = tmp_path / "ab.json"
    args = ["--preset", "fashion", "--batch-size", "2", "--rounds", "2", "--json", str(out)]
    assert paths_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert sorted(report["images_per_second"]) == ["keras", "keras_predict_numpy", "keras_xla", "saved_model"]
    assert all(len(rates) == 2 and min(rates) > 0 for rates in report["images_per_second"].values())
    fastest = report["fastest_keras_path"]
    ratios = report["comparisons"]["saved_model"][f"ratios_saved_model_over_{fastest}"]
    rates = report["images_per_second"]
    assert ratios == [a / b for a, b in zip(rates["saved_model"], rates[fastest])]
    predict = report["comparisons"]["keras_predict_numpy"]
    assert predict["held_to"] == max(("keras", "keras_xla", "saved_model"), key=lambda p: statistics.median(rates[p]))
    assert report["goals_apply"] is False and "goal " not in capsys.readouterr().out  # goals are set at batch 32
    assert paths_ab.main(["--rounds", "0", "--preset", "mixer_x9", "--json", str(tmp_path)]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "mixer_x9" in error
    assert "is a folder" in error


def test_the_paths_ab_times_the_bfloat16_paths(tmp_path, monkeypatch):
    timed = []

    def recording_paths(model, images, folder, precision="float32"):
        paths = inference_paths(model, images, folder, precision)
        timed.append((model.mixer_blocks[0].compute_dtype, precision))
        return paths

    inference_paths = paths_ab.inference_paths
    monkeypatch.setattr(paths_ab, "inference_paths", recording_paths)
    out = tmp_path / "ab.json"
    args = ["--preset", "fashion", "--precision", "bfloat16", "--batch-size", "2", "--rounds", "1", "--json", str(out)]
    assert paths_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert timed == [("bfloat16", "bfloat16")]
    assert report["precision"] == "bfloat16" and len(report["images_per_second"]) == 4


def test_the_frozen_weights_ab_refuses_bad_flags_before_starting_a_process(capsys, monkeypatch):
    monkeypatch.setattr(frozen_weights_ab, "measure_in_a_process", lambda *a: pytest.fail("a process started"))
    assert frozen_weights_ab.main(["--pairs", "0", "--repeats", "-2", "--preset", "mixer_x9"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "--pairs must be >= 1. Received: 0; --repeats must be >= 1. Received: -2" in error
    assert "--preset: unknown model 'mixer_x9'" in error


def test_the_fused_gelu_ab_times_both_train_steps_in_alternation(tmp_path, capsys):
    out = tmp_path / "ab.json"
    args = ["--preset", "fashion", "--batch-size", "4", "--rounds", "2", "--steps", "1", "--json", str(out)]
    assert fused_gelu_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert len(report["ratios_compiled_over_keras"]) == 2 and report["machine"]["cpu"]
    assert all(rate > 0 for rates in report["images_per_second"].values() for rate in rates)
    assert "compiled faster in" in capsys.readouterr().out
    assert fused_gelu_ab.main(["--rounds", "0", "--steps", "-1"]) == EXIT_BAD_INPUT
    assert "--rounds must be >= 1. Received: 0; --steps must be >= 1. Received: -1" in capsys.readouterr().err


def test_the_inference_gelu_ab_times_both_forward_passes_and_restores_the_package_settings(tmp_path, capsys):
    out = tmp_path / "new" / "ab.json"
    settings = (fused_gelu.MIN_INFERENCE_ELEMENTS_PER_EXAMPLE, fused_gelu.ONEDNN_GELU_KEPT_WITH,
                fused_norm.MAX_TENSORFLOW_THREADS)  # fmt: skip
    args = ["--preset", "fashion", "--batch-size", "2", "--rounds", "2", "--min-elements", "0", "--json", str(out)]
    assert inference_gelu_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert len(report["ratios_compiled_over_onednn"]) == 2 and report["machine"]["cpu"]
    assert all(rate > 0 for rates in report["images_per_second"].values() for rate in rates)
    assert report["xla_gelu_ran"] is True and report["min_elements_per_example"] == 0
    assert 0 < report["max_output_difference"] < 1e-4  # a random head: the outputs differ only by rounding
    assert "compiled faster in" in capsys.readouterr().out
    assert settings == (fused_gelu.MIN_INFERENCE_ELEMENTS_PER_EXAMPLE, fused_gelu.ONEDNN_GELU_KEPT_WITH,
                        fused_norm.MAX_TENSORFLOW_THREADS)  # fmt: skip
    bad = ["--rounds", "0", "--min-elements", "-1", "--preset", "mixer_x9", "--json", str(tmp_path)]
    assert inference_gelu_ab.main(bad) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "is a folder" in error
    assert "--min-elements must be >= 0. Received: -1" in error and "unknown model 'mixer_x9'" in error


def test_the_constant_kernels_ab_times_both_saved_models_and_restores_the_package_setting(tmp_path, capsys):
    out = tmp_path / "ab.json"
    kept = constant_kernels.CONSTANT_KERNEL_PRECISIONS
    args = ["--preset", "fashion", "--precision", "float32", "--batch-size", "2", "--rounds", "2", "--json", str(out)]
    assert constant_kernels_ab.main(args) == 0
    report = json.loads(out.read_text())
    blocks = model_config("fashion")["num_blocks"]
    assert report["mlp_kernels_stored_as_variables"] == {"constants": 0, "variables": 4 * blocks}
    assert len(report["ratios_constants_over_variables"]) == 2 and report["machine"]["cpu"]
    assert report["max_probability_difference"] < 1e-5  # a random head: the sides differ by rounding at most
    assert "constants faster in" in capsys.readouterr().out
    assert constant_kernels.CONSTANT_KERNEL_PRECISIONS == kept
    bad = ["--rounds", "0", "--calls", "-1", "--preset", "mixer_x9", "--json", str(tmp_path)]
    assert constant_kernels_ab.main(bad) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "is a folder" in error
    assert "--calls must be >= 1. Received: -1" in error and "unknown model 'mixer_x9'" in error


@pytest.mark.parametrize(
    "change, replaced_op", [("mlp", "BiasAddGrad"), ("stem", "Conv2DBackpropFilter"), ("residual", "BiasAddGrad")]
)
def test_the_training_matmul_ab_times_each_plain_matmul_form_against_the_form_it_replaced(
    tmp_path, capsys, monkeypatch, change, replaced_op
):
    if change == "residual":  # the Fashion model's norms made large enough for the compiled norm, which it needs
        monkeypatch.setattr(fused_norm, "MIN_ELEMENTS_PER_EXAMPLE", 0)
        monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)
    out = tmp_path / "ab.json"
    args = ["--change", change, "--preset", "fashion", "--precision", "float32", "--batch-size", "4", "--rounds", "2"]
    assert training_matmul_ab.main([*args, "--steps", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    blocks = model_config("fashion")["num_blocks"]
    # Only on the side before: one BiasAddGrad a first Dense (two MLPs a block), the stem's filter gradient, or
    # one BiasAddGrad a token MLP's second Dense (its bias summed inside the compiled residual's gradient).
    fewer = {"mlp": 2 * blocks, "stem": 1, "residual": blocks}[change]
    counts = report["op_counts_that_differ"][replaced_op]
    assert counts["before"] - counts["matmul"] == fewer, report["op_counts_that_differ"]
    assert len(report["ratios_matmul_over_before"]) == 2 and report["machine"]["cpu"]
    assert report["max_weight_difference_after_first_call"] < 1e-5  # the same training, to rounding
    assert "matmul faster in" in capsys.readouterr().out
    assert training_matmul_ab.main(["--change", "mlp", "--rounds", "0", "--preset", "mixer_x9"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "mixer_x9" in error


def test_the_precision_training_ab_reads_bf16_against_the_faster_float32_step(tmp_path, capsys):
    out = tmp_path / "ab.json"
    args = ["--preset", "fashion", "--batch-size", "4", "--rounds", "2", "--steps", "1", "--json", str(out)]
    assert precision_training_ab.main(args) == 0
    report = json.loads(out.read_text())
    assert set(report["images_per_second"]) == {"bfloat16", "float32", "float32_xla"}
    faster = report["faster_float32_step"]
    assert faster == max(("float32", "float32_xla"), key=lambda p: report["median_images_per_second"][p])
    assert len(report[f"ratios_bfloat16_over_{faster}"]) == 2 and report["goal"] == 2.0
    assert report["met"] is None if not report["applies"] else report["met"] == (report["median_ratio"] >= 2.0)
    assert f"goal bfloat16 / {faster} >= 2.0" in capsys.readouterr().out
    assert precision_training_ab.main(["--rounds", "0", "--preset", "mixer_x9"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "mixer_x9" in error


@pytest.mark.parametrize("against, forced", [("onednn", True), ("keras", False)])
def test_the_training_norm_ab_times_the_packages_norm_against_each_other_form(tmp_path, capsys, monkeypatch, against,
                                                                              forced):  # fmt: skip
    monkeypatch.setattr(fused_norm, "MIN_ELEMENTS_PER_EXAMPLE", 0)  # the default model's norms are small
    monkeypatch.setattr(fused_norm, "MAX_TENSORFLOW_THREADS", math.inf)  # the compiled norm on any machine
    out = tmp_path / "ab.json"
    args = ["--preset", "fashion", "--precision", "float32", "--against", against, "--batch-size", "4", "--rounds", "2"]
    assert training_norm_ab.main([*args, *(["--force"] if forced else []), "--steps", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    norms = 2 * model_config("fashion")["num_blocks"] + 1  # two a block and the pre-head norm
    assert report["norms_in_onednn_form"] == {"package": 0, against: norms if forced else 0}
    assert len(report[f"ratios_package_over_{against}"]) == 2 and report["machine"]["cpu"]
    assert report["max_weight_difference_after_first_call"] < 1e-5  # the same training, to rounding
    assert "package faster in" in capsys.readouterr().out
    bad = ["--rounds", "0", "--preset", "mixer_x9", "--against", "keras", "--force"]
    assert training_norm_ab.main(bad) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error and "mixer_x9" in error
    assert "--force needs --against onednn" in error


def test_the_fused_update_ab_refuses_bad_flags(capsys, tmp_path):
    assert fused_update_ab.main(["--rounds", "0", "--preset", "mixer_x9", "--json", str(tmp_path)]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0; --preset: " in error and "mixer_x9" in error
    assert f"--json must be a file path; {str(tmp_path)!r} is a folder" in error  # before minutes of timing


def test_the_xla_training_ab_refuses_bad_flags(capsys):
    assert xla_training_ab.main(["--batch-size", "0", "--preset", "mixer_x9"]) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--batch-size must be >= 1. Received: 0; --preset: " in error
    assert xla_training_ab.main(["--preset", "mixer_s16", "--image-size", "100"]) == EXIT_BAD_INPUT
    assert "--image-size must be a positive multiple of the patch size 16. Received: 100" in capsys.readouterr().err


def test_the_xla_and_graph_steps_train_the_same_model():
    tiny = dict(num_classes=3, image_size=8, patch_size=4, num_channels=1, num_blocks=2, hidden_dim=8,
                tokens_mlp_dim=4, channels_mlp_dim=16)  # fmt: skip
    rates, first_call, difference, _ = alternate_train_steps(tiny, 4, 2, 3, xla_training_ab.PATHS)
    assert sorted(rates) == ["graph", "xla"] and all(len(values) == 2 and min(values) > 0 for values in rates.values())
    assert sorted(first_call) == ["graph", "xla"]
    assert 0 < difference < 1e-5  # the same three steps, compiled two ways: rounding apart, not identical code


def test_carry_tensorflow_stashes_three_parts_and_unpacks_them_in_order(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "carry_tensorflow.sh")
    env = {**os.environ, "CARRY_STASH": str(tmp_path / "stash"), "CARRY_SITE": str(tmp_path / "site")}

    def carry(*words):
        return subprocess.run(
            ["bash", script, *words], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
        )

    assert carry().returncode == 2 and "usage:" in carry().stderr
    assert carry("stash", str(tmp_path / "absent")).returncode == 2
    missing = carry("unpack")
    assert missing.returncode == 2 and "payload.part00 is missing" in missing.stderr
    checkout = tmp_path / "checkout_without_venv"  # pack reads its versions from the checkout's .venv
    (checkout / "benchmarks").mkdir(parents=True)
    shutil.copy(script, checkout / "benchmarks")
    no_venv = subprocess.run(["bash", str(checkout / "benchmarks" / "carry_tensorflow.sh"), "pack"],
                             capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert no_venv.returncode == 2 and "cannot import tensorflow" in no_venv.stderr
    assert not (checkout / ".carry").exists()
    # A stand-in zstd that passes its input through: the script's part is the order and the unpacking.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "zstd").write_text("#!/bin/sh\ncat\n")
    (tools / "zstd").chmod(0o755)
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    package = tmp_path / "package"
    package.mkdir()
    (package / "module.py").write_text("VALUE = 42\n" * 5000)
    archive = tmp_path / "payload.tar"
    subprocess.run(["tar", "-C", str(package), "-cf", str(archive), "."], check=True)
    data = archive.read_bytes()
    third = len(data) // 3 + 1
    for number in range(3):  # as `pack` leaves them: .carry/1, 2 and 3, one part each
        folder = tmp_path / ".carry" / str(number + 1)
        folder.mkdir(parents=True)
        (folder / f"payload.part0{number}").write_bytes(data[number * third : (number + 1) * third])
    for number in (3, 1, 2):  # one call each, in any order
        assert carry("stash", str(tmp_path / ".carry" / str(number))).returncode == 0
    unpacked = carry("unpack")
    assert unpacked.returncode == 0, unpacked.stderr
    assert (tmp_path / "site" / "module.py").read_text() == "VALUE = 42\n" * 5000


FAKE_PEER_WORKER = """
import json, sys
print(json.dumps({"ready": True, "torch": "fake", "timm": "fake"}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    # always 4 images/s per call, whatever the wall time: the A/B must use the worker's own timing
    seconds = request["batch_size"] * request["steps"] / 4.0
    print(json.dumps({"seconds": [seconds] * request["repeats"], "images": request["batch_size"] * request["steps"]}),
          flush=True)
"""


def test_the_peer_ab_alternates_ours_with_timm_rows_timed_by_the_worker(tmp_path, monkeypatch, capsys):
    worker = tmp_path / "worker.py"
    worker.write_text(FAKE_PEER_WORKER)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.setattr("benchmarks.peer.WORKER", str(worker))
    out = tmp_path / "new folder" / "ab.json"  # made when the report is written
    args = ["--preset", "mixer_s32", "--batch-size", "1", "--rounds", "2", "--peer-venv", str(venv), "--json", str(out)]
    assert peer_ab.main([*args, "--saved-model"]) == 0
    report = json.loads(out.read_text())
    assert report["peer"] == {"torch": "fake", "timm": "fake"} and report["machine"]["cpu"]
    assert report["images_per_second"]["timm_eager"] == report["images_per_second"]["timm_compile"] == [4.0, 4.0]
    for path in ("keras", "saved_model"):  # the SavedModel too, with --saved-model
        assert len(report["images_per_second"][path]) == 2 and min(report["images_per_second"][path]) > 0
        assert f"{path}_over_timm_eager" in report["comparisons"]
    comparison = report["comparisons"]["keras_over_timm_compile"]
    assert comparison["ratios_keras_over_timm_compile"] == [r / 4.0 for r in report["images_per_second"]["keras"]]
    assert comparison["goal"] is None and comparison["met"] is None  # the inference goals are set at batch 32
    assert "keras faster in" in capsys.readouterr().out


def test_the_peer_ab_reads_each_goal_on_the_faster_of_our_paths_and_only_where_it_applies():
    rates = {"train": [5.0, 5.0, 5.0], "train_xla": [6.0, 5.0, 6.0], "timm_train_float32": [5.0, 5.0, 5.0]}
    result = peer_ab.comparisons(rates, ["train", "train_xla"], ["timm_train_float32"], ["avx2"], 8, training=True)
    faster, slower = result["train_xla_over_timm_train_float32"], result["train_over_timm_train_float32"]
    assert faster["goal_read_here"] and faster["median_ratio"] == 1.2 and faster["met"] is True
    assert not slower["goal_read_here"] and slower["met"] is None
    bf16 = {"keras": [9.0], "timm_bfloat16_compile": [10.0]}
    result = peer_ab.comparisons(bf16, ["keras"], ["timm_bfloat16_compile"], ["avx2"], 32, training=False)
    assert result["keras_over_timm_bfloat16_compile"]["applies"] is False
    assert result["keras_over_timm_bfloat16_compile"]["met"] is None
    result = peer_ab.comparisons(bf16, ["keras"], ["timm_bfloat16_compile"], ["amx_bf16"], 32, training=False)
    assert result["keras_over_timm_bfloat16_compile"]["met"] is False  # 0.9 < 1.1


def test_the_peer_ab_refuses_bad_flags_in_one_line_before_starting_the_peer(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(peer_ab, "PeerProcess", lambda *a: pytest.fail("the peer started"))
    monkeypatch.setattr(peer_ab, "cpu_model_and_flags", lambda: ("AMD EPYC", ["avx2"]))
    argv = ["--preset", "mixer_h14", "--rounds", "0", "--precision", "bfloat16", "--peer-venv", str(tmp_path)]
    argv += ["--json", str(tmp_path), "--saved-model", "--training"]
    assert peer_ab.main(argv) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--rounds must be >= 1. Received: 0" in error
    assert "--saved-model and --predict time inference; they do not go with --training" in error
    assert "--preset must be a paper preset timm builds" in error and "Received: mixer_h14" in error
    assert "--precision bfloat16 needs a CPU with bf16 units" in error and "no AMX-BF16 or AVX512-BF16" in error
    assert f"--peer-venv {str(tmp_path)!r} has no bin/python" in error
    assert f"--json must be a file path; {str(tmp_path)!r} is a folder" in error
