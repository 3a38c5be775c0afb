#!/usr/bin/env bash
# The training goals against timm under a newer TensorFlow than the one the package is tested with, beside
# that one, in one sitting. TensorFlow 2.21 carries oneDNN 3.7.3, whose bf16 matmul on the Sapphire Rapids
# ran at about half the speed of torch's oneDNN 3.12 (same AMX kernel; the speed issue's closing notes).
# tf-nightly 2.23.0.dev20261026 carries oneDNN 3.12.3. This measures what that changes:
#   - benchmarks.run's S/16 training rows at batch 8 with timm's (--peer): the targets' "TensorFlow / torch
#     GEMM limit" rows show the kernels' speed, the train rows ours against timm;
#   - peer_ab's bf16 and float32 training steps against timm's in alternation, where the goals are read.
# Each step runs with .venv's TensorFlow, then with the newer one, so the two see the machine in the same
# state. The newer TensorFlow goes into a venv of its own (NEXT_TF_VENV, default
# ~/.cache/keras_mixer/next-tf-venv), made on first use from the package registries with .venv's Keras;
# .venv is not touched, and the package runs from this checkout (not installed there, as it asks for
# tensorflow, a different distribution from tf-nightly). NEXT_TF names the requirement (default
# tf-nightly==2.23.0.dev20261026). timm's venv is benchmarks.run's own --peer venv, or PEER_VENV.
#   bash benchmarks/next_tensorflow.sh [FOLDER]
# Writes JSON into FOLDER (default benchmarks/next_tensorflow/), `_pinned` for .venv's TensorFlow and `_next`
# for the newer one (each JSON's machine names its version), with the log (next_tensorflow.log, each
# TensorFlow's oneDNN version in it) and lscpu beside them. About 9 minutes on the
# 2-core Sapphire Rapids (2026-12-07), the new venv's install (about a minute, 2.4 GB) apart.
# NEXT_TF_DRY_RUN=1 prints the steps without making the venv or running them. A folder in NEXT_TF_VENV that this
# script did not make is refused, never replaced; two runs into one FOLDER at once are refused too.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 1 ]; then
  echo "error: expected at most one argument, the output folder; got $#: $*" >&2
  exit 2
fi
out=${1:-benchmarks/next_tensorflow}
next_tf=${NEXT_TF:-tf-nightly==2.23.0.dev20261026}
next_venv=${NEXT_TF_VENV:-$HOME/.cache/keras_mixer/next-tf-venv}
if [ ! -x .venv/bin/python ]; then
  echo "error: expected the README's set-up here (.venv/bin/python), the TensorFlow to compare with; found none" >&2
  exit 2
fi
if ! mkdir -p "$out" 2>/dev/null || [ ! -w "$out" ]; then
  echo "error: the output folder '$out' cannot be made or written to" >&2
  exit 2
fi
exec 9>"$out/.lock"
if ! flock -n 9; then
  echo "error: another next_tensorflow.sh is writing into $out; wait for it or name another folder" >&2
  exit 2
fi
log=$out/next_tensorflow.log
peer=()
if [ -n "${PEER_VENV:-}" ]; then peer=(--peer-venv "$PEER_VENV"); fi

say() { echo "[$(date +%T)] $*" | tee -a "$log"; }

run() {  # run COMMAND...: logged; a failure is logged and the next step still runs
  say "$*"
  if [ -n "${NEXT_TF_DRY_RUN:-}" ]; then return; fi
  "$@" >>"$log" 2>&1 || say "exit $?"
}

make_next_venv() {  # marked as made only at the end, so that a killed install is made again, not taken for one
  local made=$next_venv/.made_by_next_tensorflow making=$next_venv/.making_by_next_tensorflow keras want
  keras=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('keras'))") || return 1
  want="$next_tf keras==$keras"
  if [ -f "$made" ] && [ "$(cat "$made")" = "$want" ]; then return; fi
  if [ -e "$next_venv" ] && [ ! -f "$made" ] && [ ! -f "$making" ]; then
    say "error: $next_venv exists and was not made by this script; name another folder in NEXT_TF_VENV"
    return 1
  fi
  say "making $next_venv: $next_tf, keras==$keras"
  if [ -n "${NEXT_TF_DRY_RUN:-}" ]; then return; fi
  rm -rf "$next_venv" && mkdir -p "$next_venv" && echo "$want" >"$making" || return 1
  # tf-nightly asks for keras-nightly; .venv's Keras replaces it, so that only TensorFlow differs.
  python3 -m venv "$next_venv" &&
    "$next_venv/bin/pip" install -q "$next_tf" matplotlib tqdm >>"$log" 2>&1 &&
    "$next_venv/bin/pip" uninstall -q -y keras-nightly >>"$log" 2>&1 &&
    "$next_venv/bin/pip" install -q "keras==$keras" >>"$log" 2>&1 &&
    mv "$making" "$made" ||
    { say "error: could not make $next_venv (its pip output is in $log)"; return 1; }
}

onednn_version() {  # the oneDNN that a python's TensorFlow carries, from oneDNN's own verbose line
  ONEDNN_VERBOSE=1 TF_CPP_MIN_LOG_LEVEL=3 "$1" -c "
import tensorflow as tf
a = tf.ones((64, 64))
tf.matmul(a, a).numpy()
print('tensorflow', tf.__version__)" 2>&1 | grep -E "^tensorflow|info,oneDNN v" | sed 's/.*info,//'
}

lscpu >"$out/lscpu.txt" 2>&1
make_next_venv || exit 1
pythons=(.venv/bin/python "$next_venv/bin/python")
tags=(pinned next)
if [ -z "${NEXT_TF_DRY_RUN:-}" ]; then
  for python in "${pythons[@]}"; do say "$python: $(onednn_version "$python" | tr '\n' ' ')"; done
fi
for i in 0 1; do
  run "${pythons[i]}" -m benchmarks.run --presets mixer_s16 --batch-sizes 8 --rows train,peer --peer "${peer[@]}" \
    --repeats 3 --json "$out/run_training_b8_${tags[i]}.json" --plot "$out/run_training_b8_${tags[i]}.png"
done
for precision in bfloat16 float32; do
  for i in 0 1; do
    run "${pythons[i]}" -m benchmarks.peer_ab --preset mixer_s16 --training --precision "$precision" --batch-size 8 \
      --rounds 6 "${peer[@]}" --json "$out/peer_train_${precision}_b8_${tags[i]}.json"
  done
done
say "done: $out"
