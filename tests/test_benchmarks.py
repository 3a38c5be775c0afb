"""`python -m benchmarks.run` runs end to end on a small selection and writes what it promises.

Speed figures are never asserted here (they belong to benchmarks/, not to timed tests); only that
the suite runs, measures, and reports each row with its statistics.
"""

import json
import subprocess
import sys

from benchmarks.flops import flops_per_image
from keras_mixer.presets import preset_config
from tests.training_helpers import ROOT


def test_flops_match_the_published_figure_for_s16():
    # timm lists mixer_s16_224 at 3.79 GMACs.
    assert abs(flops_per_image({**preset_config("mixer_s16"), "image_size": 224}) / 2e9 - 3.79) < 0.02


def test_the_suite_runs_and_writes_json_and_png(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--presets", "fashion", "--batch-sizes", "1", "--rows",
         "keras,tflite,peer", "--repeats", "1", "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["machine"]["cores"] >= 1
    (fashion,) = report["results"]
    assert fashion["limits"]["float32_b1"]["median"] > 0
    rows = {row["row"]: row for row in fashion["rows"]}
    assert {"keras", "tflite_float32", "tflite_int8"} <= set(rows)
    assert rows["keras"]["images_per_second"]["min"] <= rows["keras"]["images_per_second"]["median"]
    assert rows["keras"]["latency_ms"]["p50"] > 0 and 0 < rows["keras"]["fraction_of_limit"]
    assert any(t["target"].endswith("TFLite int8 / float32 b1") for t in report["targets"])
    assert (tmp_path / "b.png").stat().st_size > 10_000
    assert "img/s (median)" in result.stdout


def test_unknown_models_and_rows_are_refused():
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--presets", "mixer_z9", "--rows", "keras,onnx"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown model 'mixer_z9'" in result.stderr and "unknown row 'onnx'" in result.stderr
