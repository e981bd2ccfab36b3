#!/usr/bin/env bash
# The 10^6-item runs of experiments.cuda_build from a clean clone (/tmp/rerun62) at a9c7ec5,
# after the CUDA step stopped gathering a large catalog's rows apart (0093b9c), 2026-12-07.
cd /tmp/rerun62
export PYTHONPATH=/tmp/rerun62:/tmp/tritonpkg RECENV_NATIVE=0
PY=/work/main/.venv/bin/python
OUT=/tmp/ctres
run() { name=$1; shift; echo "== $name: python -m experiments.cuda_build $*" | tee $OUT/$name.txt; $PY -m experiments.cuda_build --out $OUT/$name.json "$@" 2>&1 | grep -v "^[WE]12\|UserWarning\|warnings.warn\|^  warn" | tee -a $OUT/$name.txt; echo "exit ${PIPESTATUS[0]}" | tee -a $OUT/$name.txt; }
run market-h200-1m-items --device h200 --config num_items=1000000 --no-face
run market-h200-1m-items-cpu-gathers --device h200 --config num_items=1000000 --no-face --cpu-form separate_gathers
run interpret-market-1m-items --interpret 6 --num-envs 16 --config horizon=5 --config num_items=1000000
