#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, then the CUDA benchmark, within a few minutes.
#
#   bash experiments/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Sets up .venv if missing (torch from PyPI brings CUDA there), runs the tests that skip on
# CPU-only machines, then experiments.bench_cuda (2^14 .. 2^20 markets, eager and compiled,
# VMAS beside them when the bench extra is installed). Logs and JSON also go to $OUT when the
# caller sets it (the device tool's folder for files that come back).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv && $PY -m pip install -q -e '.[dev,bench]' || exit 1
fi
OUT_DIR=${OUT:-experiments/results}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
# CUDA tests only (their ids mention cuda or they skip without it).
timeout 300 $PY -m pytest -q -x -k cuda tests 2>&1 | tail -15 | tee "$OUT_DIR/gpu_tests.txt"
timeout 300 $PY -m experiments.bench_cuda "$@" 2>&1 | tee "$OUT_DIR/bench_cuda.txt"
cp experiments/results/bench_cuda-*.json "$OUT_DIR"/ 2>/dev/null || true
