#!/usr/bin/env bash
# One prepared GPU session: the CUDA benchmark, tests and profile, within one device call.
#
#   bash experiments/gpu_wheels.sh           # first, on a machine that reaches PyPI: .whl/
#   bash experiments/gpu_check.sh [bench_cuda options]   # on the GPU machine, repo root
#
# With the device tool: run(command="bash experiments/gpu_check.sh", carry=[".whl",
# ".gpu_data"], timeout_s=600); the logs and JSON come back through $OUT.
#
# The Python: .venv's if there is one (a machine set up with `make`), else the machine's
# own python3, which on the GPU machines lent here holds a CUDA build of torch and reaches no
# package index; the pure-Python packages it lacks (gymnasium, pettingzoo; vmas, gym and
# pyglet for the peer) come from the wheels in .whl/, installed into a scratch folder, and
# recenv itself is imported from this checkout. Then experiments.bench_cuda (2^20 .. 2^14
# markets, eager and compiled, VMAS beside them when it imports), the tests that need CUDA
# (the files that ask torch.cuda.is_available(), filtered by -k cuda) and
# experiments.profile_cuda (where an eager and a compiled step's time goes). Each phase has
# its own time limit, all within GPU_CHECK_SECONDS (540 s), and every line is written as it
# is printed, so a phase stopped at its limit still leaves what it measured in $OUT
# (bench_cuda also keeps a .partial.json after each size).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# The native CPU kernels (recenv.core.native) would be built on first use, ~a minute of a
# short device session, for the CPU sides of the checks alone (the CPU reference trajectory,
# the traffic count); the torch forms they stand in for agree with them bit for bit.
export RECENV_NATIVE=${RECENV_NATIVE:-0}
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

# The MovieLens sample for the log-built scenario's tests (gpu_wheels.sh puts it in
# .gpu_data/), where the tests look for it, unless a ../shared is already there.
if [ -f .gpu_data/ml-latest-small/ratings.csv ] && [ ! -e ../shared/data/ml-latest-small ]; then
  mkdir -p ../shared/data && ln -s "$PWD/.gpu_data/ml-latest-small" ../shared/data/
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
# Every phase ends by $DEADLINE seconds after the start (one device call may run 600 s, and
# a session's device time is short): a phase gets its own limit or what is left, whichever
# is less, and one with under 20 s left is skipped.
DEADLINE=${GPU_CHECK_SECONDS:-540}
left() {  # left LIMIT: the seconds a phase may run
  local rest=$((DEADLINE - SECONDS))
  echo $((rest < $1 ? rest : $1))
}
# At most 8 files come back from a device call: the two profiles share one log.
phase() {  # phase LIMIT LOG COMMAND...: run COMMAND, output to the terminal and $OUT_DIR/LOG
  local limit
  limit=$(left "$1")
  if [ "$limit" -lt 20 ]; then
    echo "skipped (time): ${*:3}" | tee -a "$OUT_DIR/gpu.txt"
    return
  fi
  echo "== ${*:3} (limit ${limit}s)"
  timeout "$limit" "${@:3}" 2>&1 | tee -a "$OUT_DIR/$2" | tail -40
}
# In the order that keeps the most if the device session ends first: the figures (compiled
# at every count first: the GPU target's figure, never measured, where the eager step was
# on the first GPU lent; then eager with VMAS beside; largest count first), the eager CUDA tests,
# where an eager step's time goes, then the compiled CUDA tests (each compiles kernels) and
# the compiled step's profile (its kernels cached by the bench's compile at that count).
# At the largest and smallest counts an eager row more, with ATen's cumsum in the draws by
# weight (the first GPU run's form), measures what indexing.row_cumsum changed there.
if [ $# -eq 0 ]; then
  set -- --sizes 1048576,262144,65536,16384 --aten-cumsum-sizes 1048576,16384 --compiled-first
fi
# Only this run's JSON goes to $OUT_DIR (the results folder holds committed ones).
before=$(ls experiments/results/bench_cuda-*.json 2> /dev/null)
phase 260 bench_cuda.txt "$PY" -m experiments.bench_cuda "$@"
if [ "$OUT_DIR" != experiments/results ]; then
  for f in experiments/results/bench_cuda-*.json; do
    [ -f "$f" ] && ! grep -qxF "$f" <<< "$before" && cp "$f" "$OUT_DIR"/
  done
fi
PYTEST=("$PY" -m pytest -q -x -p no:cacheprovider)
phase 120 gpu_tests.txt "${PYTEST[@]}" -k "cuda and not True" "${CUDA_TESTS[@]}"
phase 45 profile_cuda.txt "$PY" -m experiments.profile_cuda --num-envs 262144 \
  --out "$OUT_DIR/profile_cuda.json"
phase 100 gpu_tests_compiled.txt "${PYTEST[@]}" -k "cuda and True" "${CUDA_TESTS[@]}"
phase 60 profile_cuda.txt "$PY" -m experiments.profile_cuda --num-envs 262144 \
  --compile --out "$OUT_DIR/profile_cuda_compiled.json"
echo "gpu_check: ${SECONDS}s" | tee -a "$OUT_DIR/gpu.txt"
