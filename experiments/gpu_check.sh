#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, then the CUDA benchmark, within one device call.
#
#   bash experiments/gpu_wheels.sh           # first, on a machine that reaches PyPI: .whl/
#   bash experiments/gpu_check.sh [bench_cuda options]   # on the GPU machine, repo root
#
# With the device tool: run(command="bash experiments/gpu_check.sh", carry=[".whl"],
# timeout_s=600); the logs and JSON come back through $OUT.
#
# The Python: .venv's if there is one (a machine set up with `make`), else the machine's
# own python3, which on the GPU machines lent here holds a CUDA build of torch and reaches no
# package index; the pure-Python packages it lacks (gymnasium, pettingzoo; vmas, gym and
# pyglet for the peer) come from the wheels in .whl/, installed into a scratch folder, and
# recenv itself is imported from this checkout. Then the tests that need CUDA (the files
# that ask torch.cuda.is_available(), filtered by -k cuda) and experiments.bench_cuda
# (2^20 .. 2^14 markets, eager and compiled, VMAS beside them when it imports). Each phase
# has its own time limit (570 s in all), and every line is written as it is printed, so a
# phase stopped at its limit still leaves what it measured in $OUT (bench_cuda also keeps
# a .partial.json after each size).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-experiments/results}
mkdir -p "$OUT_DIR"

if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=${PYTHON:-python3}
  if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    SITE=${TMPDIR:-/tmp}/recenv-gpu-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
      --upgrade --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" - << 'EOF'
import sys

import torch

print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}")
print(f"cuda available: {torch.cuda.is_available()}")
missing = []
for name in ("gymnasium", "pettingzoo", "recenv", "vmas"):
    try:
        module = __import__(name)
        print(f"{name} {getattr(module, '__version__', '?')} from {module.__file__}")
    except ImportError as e:
        missing.append(name)
        print(f"{name}: not importable ({e})")
if {"gymnasium", "pettingzoo", "recenv"} & set(missing):
    sys.exit("recenv cannot run here: build the wheels with experiments/gpu_wheels.sh and carry .whl")
EOF
} 2>&1 | tee "$OUT_DIR/gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# The files with tests that need CUDA; their CUDA tests are picked by -k.
mapfile -t CUDA_TESTS < <(grep -rl "cuda.is_available" tests)
cuda_tests() {  # cuda_tests SECONDS EXPRESSION LOG
  timeout "$1" "$PY" -m pytest -q -x -p no:cacheprovider -k "$2" "${CUDA_TESTS[@]}" 2>&1 \
    | tee "$OUT_DIR/$3" | tail -15
}
# In the order that keeps the most if the device session ends first (one device call may
# run 600 s): the eager CUDA tests, the figures (largest count first: the target is "at
# the best count"), then the compiled CUDA tests (each compiles Triton kernels).
cuda_tests 150 "cuda and not True" gpu_tests.txt
if [ $# -eq 0 ]; then
  set -- --sizes 1048576,262144,65536,16384
fi
timeout 300 "$PY" -m experiments.bench_cuda "$@" 2>&1 | tee "$OUT_DIR/bench_cuda.txt"
cp experiments/results/bench_cuda-*.json "$OUT_DIR"/ 2>/dev/null || true
cuda_tests 120 "cuda and True" gpu_tests_compiled.txt
