#!/usr/bin/env bash
# The speed issue's measurements on a CPU with AMX or AVX512-BF16 (the Xeon of a lent GPU machine has
# AMX; run 22 in the README is this script there), in three parts that each fit one call to such a
# machine (10 minutes at most):
#   - rows (timeouts 510 s in all): the S/16 inference and training rows of benchmarks.run, with timm's
#     when PEER_VENV names a venv with torch and timm (the benchmark's own --peer venv needs the internet
#     to be made): the issue's goals; and bf16 training against float32's faster step in alternation
#     (precision_training_ab);
#   - peer (timeouts 400 s in all; only with PEER_VENV): ours against timm's rows in alternation, round
#     after round (peer_ab): float32 and bf16 inference at batch 32 (bf16 with the bf16 SavedModel and
#     predict too),
#     float32 and bf16 training steps;
#   - ab (timeouts 590 s in all): oneDNN's LayerNorm beside the XLA norm and Keras' op (fused_norm_ab,
#     bf16 and float32), the MLP's first Dense as a plain matmul with its bias in the compiled GELU
#     (training_matmul_ab --change mlp, bf16), the train step's norm as the package runs it against
#     Keras' op (training_norm_ab --against keras, bf16), the XLA train step against the
#     graph step with the compiled optimiser update (xla_training_ab), that update against Keras'
#     own (fused_update_ab), predict and the SavedModel against the fastest path (paths_ab, float32 and
#     bf16), and
#     the compiled GELU at inference against oneDNN's fused one (inference_gelu_ab, float32 and bf16;
#     the package runs it only on CPUs without AVX-512, where it was measured), and the bf16 SavedModel
#     with its MLP kernels as constants against variables (constant_kernels_ab).
# Every step writes its JSON into one folder (the first argument; default benchmarks/cpu_check/) and
# its output into cpu_check.log there, with lscpu beside them. A step that overruns its share is cut by
# its own timeout and the next one still runs. Run from a checkout (`.venv` if the README's set-up made
# one, else the python3 on PATH):
#   bash benchmarks/cpu_check.sh [FOLDER [all|rows|peer|ab]]
# The timeouts come from run 22 on the lent 16-core Xeon (each step took 35-48 s of its A/B share,
# and the rows 100-140 s with three of the rows here). On the 2-core AVX2 EPYC every S/16 step overran
# them, and with CPU_CHECK_TIMEOUT_SCALE=4 (it multiplies each one) the norm A/Bs still did: raise the
# scale on a slower machine. CPU_CHECK_DRY_RUN=1 prints the steps without running them.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/cpu_check}
half=${2:-all}
case "$half" in
  all | rows | peer | ab) ;;
  *) echo "error: the second argument is the part to run: all, rows, peer or ab; got '$half'" >&2; exit 2 ;;
esac
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
# Found, not imported: importing TensorFlow would add 5 s to every call, a dry run's included.
if ! "$python" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('tensorflow') and u.find_spec('keras')))" 2>/dev/null; then
  echo "error: $python has no tensorflow or no keras; expected the README's set-up (.venv) or a python with them" >&2
  exit 2
fi
mkdir -p "$out"
log=$out/cpu_check.log
peer=()
if [ -n "${PEER_VENV:-}" ]; then peer=(--peer-venv "$PEER_VENV"); fi

step() {  # step SECONDS COMMAND...: the command under its own timeout, logged; a failure does not stop the rest
  local seconds=$1
  shift
  echo "[$(date +%T)] $*" | tee -a "$log"
  if [ -n "${CPU_CHECK_DRY_RUN:-}" ]; then return; fi
  timeout "$((seconds * ${CPU_CHECK_TIMEOUT_SCALE:-1}))" "$@" >>"$log" 2>&1
  local status=$?
  if [ "$status" -ne 0 ]; then echo "[$(date +%T)] exit $status" | tee -a "$log"; fi
}

lscpu >"$out/lscpu.txt" 2>&1
if [ "$half" = all ] || [ "$half" = rows ]; then
  step 240 "$python" -m benchmarks.run --presets mixer_s16 --batch-sizes 32 --rows keras,predict,xla,saved_model,bfloat16,frozen,peer --repeats 3 "${peer[@]}" --json "$out/run_inference_b32.json" --plot "$out/run_inference_b32.png"
  step 180 "$python" -m benchmarks.run --presets mixer_s16 --batch-sizes 8 --rows train,peer --repeats 2 "${peer[@]}" --json "$out/run_training_b8.json" --plot "$out/run_training_b8.png"
  # Its timeout: about 100 s with 8 rounds on the 2-core Sapphire Rapids (2026-12-07); 6 rounds here.
  step 90 "$python" -m benchmarks.precision_training_ab --preset mixer_s16 --batch-size 8 --rounds 6 --json "$out/precision_training_b8.json"
fi
if [ "$half" = all ] || [ "$half" = peer ]; then
  if [ ${#peer[@]} -eq 0 ]; then
    echo "[$(date +%T)] peer: skipped, PEER_VENV names no venv with torch and timm" | tee -a "$log"
  else
    # The peer_ab timeouts are estimates from run 22's row durations (timm's compilation included), unmeasured.
    pab=(--preset mixer_s16 --rounds 6 "${peer[@]}")
    step 90 "$python" -m benchmarks.peer_ab "${pab[@]}" --json "$out/peer_f32_b32.json"
    step 110 "$python" -m benchmarks.peer_ab "${pab[@]}" --precision bfloat16 --saved-model --predict --json "$out/peer_bf16_b32.json"
    step 100 "$python" -m benchmarks.peer_ab "${pab[@]}" --training --json "$out/peer_train_f32_b8.json"
    step 100 "$python" -m benchmarks.peer_ab "${pab[@]}" --training --precision bfloat16 --json "$out/peer_train_bf16_b8.json"
  fi
fi
if [ "$half" = all ] || [ "$half" = ab ]; then
  ab=(--preset mixer_s16 --rounds 6)
  step 50 "$python" -m benchmarks.fused_norm_ab "${ab[@]}" --precision bfloat16 --batch-size 32 --json "$out/norm_bf16_b32.json"
  step 50 "$python" -m benchmarks.fused_norm_ab "${ab[@]}" --precision float32 --batch-size 32 --json "$out/norm_f32_b32.json"
  # The train-step A/Bs' timeouts: estimates from their 8-round runs on the 2-core Sapphire Rapids (about a
  # minute each, 2026-12-07).
  step 60 "$python" -m benchmarks.training_matmul_ab "${ab[@]}" --change mlp --precision bfloat16 --batch-size 8 --json "$out/training_matmul_mlp_bf16_b8.json"
  step 60 "$python" -m benchmarks.training_norm_ab "${ab[@]}" --against keras --precision bfloat16 --batch-size 8 --json "$out/training_norm_bf16_b8.json"
  step 55 "$python" -m benchmarks.xla_training_ab "${ab[@]}" --batch-size 8 --json "$out/xla_training_f32_b8.json"
  step 55 "$python" -m benchmarks.fused_update_ab "${ab[@]}" --batch-size 8 --json "$out/fused_update_f32_b8.json"
  # The paths A/Bs' timeouts: 10 rounds took 89 s (float32) and 64 s (bf16) on the 2-core Sapphire Rapids
  # (2026-12-07), export and tracing included; 6 rounds here.
  step 70 "$python" -m benchmarks.paths_ab "${ab[@]}" --batch-size 32 --json "$out/paths_f32_b32.json"
  step 50 "$python" -m benchmarks.paths_ab "${ab[@]}" --precision bfloat16 --batch-size 32 --json "$out/paths_bf16_b32.json"
  # The inference GELU A/Bs' timeouts are estimates from the norm A/Bs' (the same forward passes), unmeasured there.
  step 50 "$python" -m benchmarks.inference_gelu_ab "${ab[@]}" --precision float32 --json "$out/inference_gelu_f32_b32.json"
  step 50 "$python" -m benchmarks.inference_gelu_ab "${ab[@]}" --precision bfloat16 --json "$out/inference_gelu_bf16_b32.json"
  # The constant-kernel A/B's timeout: 28 s on the 2-core Sapphire Rapids (2026-12-07), 8 rounds.
  step 40 "$python" -m benchmarks.constant_kernels_ab "${ab[@]}" --precision bfloat16 --json "$out/constant_kernels_bf16_b32.json"
fi
echo "[$(date +%T)] done: $out" | tee -a "$log"
