#!/usr/bin/env bash
# TensorFlow for a lent GPU machine whose image has none (its CPU is the one benchmarks/cpu_check.sh is for).
# At most 64 MiB travels there per call, and TensorFlow's CPU wheel is 274 MB, so it goes in three parts:
#
#   here:   bash benchmarks/carry_tensorflow.sh pack          # 8-16 min on the 2-core AVX2 EPYC; writes .carry/1, 2, 3
#   there:  call 1, carry [".carry/1"]: bash benchmarks/carry_tensorflow.sh stash .carry/1
#           call 2, carry [".carry/2"]: bash benchmarks/carry_tensorflow.sh stash .carry/2
#           call 3, carry [".carry/3"]: bash benchmarks/carry_tensorflow.sh stash .carry/3 &&
#                   bash benchmarks/carry_tensorflow.sh unpack && export PYTHONPATH=/tmp/site && ...
#
# Make the three calls back to back: a machine idle for 30 s is given back, and what was stashed with it.
# `pack` takes the versions of this checkout's .venv (the ones the suite passed with), as the CPU wheel
# (tensorflow-cpu) for CPython TARGET_PYTHON (default 3.12, the lent image's), with Keras and the
# dependencies whose versions matter, leaves out TensorFlow's C++ headers, and compresses with zstd.
# `unpack` puts the packages in /tmp/site: run python with PYTHONPATH=/tmp/site. The zstd program
# travels too, as the lent image has none.
set -euo pipefail
cd "$(dirname "$0")/.."
stash=${CARRY_STASH:-/tmp/carry_tensorflow}  # where the parts wait on the lent machine
site=${CARRY_SITE:-/tmp/site}  # where unpack puts the packages

usage() {
  echo "usage: bash benchmarks/carry_tensorflow.sh pack | stash FOLDER | unpack" >&2
  exit 2
}

pack() {
  local python=.venv/bin/python target=${TARGET_PYTHON:-3.12}
  local names=(keras astunparse gast google-pasta termcolor namex optree ml_dtypes numpy protobuf wrapt
    flatbuffers opt_einsum absl-py)
  local pins  # tensorflow-cpu at .venv's TensorFlow version, then each name at .venv's version
  if ! pins=$(TF_CPP_MIN_LOG_LEVEL=3 "$python" -c '
import importlib.metadata, sys, tensorflow
print(f"tensorflow-cpu=={tensorflow.__version__}", *(f"{n}=={importlib.metadata.version(n)}" for n in sys.argv[1:]))
' "${names[@]}" 2>/dev/null); then
    echo "error: pack takes its versions from .venv, which cannot import tensorflow and its dependencies; run the README's set-up first" >&2
    exit 2
  fi
  command -v zstd >/dev/null || { echo "error: pack needs the zstd program here" >&2; exit 2; }
  work=$(mktemp -d)  # global: the EXIT trap reads it after pack returns
  trap 'rm -rf "$work"' EXIT
  read -r -a pins <<<"$pins"
  echo "pack: ${pins[*]} for CPython $target"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$target" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$work/wheels" "${pins[@]}"
  mkdir -p "$work/site"
  local wheel
  for wheel in "$work"/wheels/*.whl; do "$python" -m zipfile -e "$wheel" "$work/site"; done
  rm -rf "$work/site/tensorflow/include"  # C++ headers (287 MB unpacked): for building ops, not running them
  tar -C "$work/site" -cf - . | zstd -19 --long=27 -T0 -q -o "$work/payload.tar.zst"
  rm -rf .carry
  mkdir -p .carry/1 .carry/2 .carry/3
  (cd "$work" && split -n 3 -d payload.tar.zst payload.part)
  mv "$work/payload.part00" .carry/1/
  mv "$work/payload.part01" .carry/2/
  mv "$work/payload.part02" .carry/3/
  # zstd and the libraries it links beyond glibc's, for the unpacking there
  cp "$(command -v zstd)" .carry/1/
  ldd "$(command -v zstd)" | awk '/=> \// && $1 !~ /^(libc|libm|libpthread|libdl)\./ {print $3}' | xargs -r cp -t .carry/1/
  du -sh .carry/1 .carry/2 .carry/3
}

case "${1:-}" in
  pack) pack ;;
  stash)
    [ -d "${2:-}" ] || { echo "error: stash needs the carried folder (.carry/1, 2 or 3); got '${2:-}'" >&2; exit 2; }
    mkdir -p "$stash"
    cp "$2"/* "$stash"/
    ls "$stash"
    ;;
  unpack)
    parts=("$stash"/payload.part0{0,1,2})
    for part in "${parts[@]}"; do
      [ -f "$part" ] || { echo "error: $part is missing: stash .carry/1, 2 and 3 first, on one warm machine" >&2; exit 2; }
    done
    mkdir -p "$site"
    zstd_program=zstd
    command -v zstd >/dev/null || zstd_program=$stash/zstd
    cat "${parts[@]}" | LD_LIBRARY_PATH=$stash "$zstd_program" -d --long=27 -q | tar -x -C "$site"
    echo "unpacked into $site: run python with PYTHONPATH=$site"
    ;;
  *) usage ;;
esac
