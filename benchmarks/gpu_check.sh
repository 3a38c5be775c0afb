#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): S/16 fit in float32 and bf16, with and without XLA, under
# MirroredStrategy; B/16 training throughput and MFU; SavedModel and TFLite parity of a GPU-trained model.
# One JSON (benchmarks/gpu_check.json, or the path given), at most 8 minutes. Run from a checkout:
#   bash benchmarks/gpu_check.sh [--json PATH]
# Uses .venv when the README's set-up made one, else the python3 on PATH (TensorFlow with CUDA needs
# `pip install 'tensorflow[and-cuda]'` on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
exec timeout 480 "$python" -m benchmarks.gpu_check "$@"
