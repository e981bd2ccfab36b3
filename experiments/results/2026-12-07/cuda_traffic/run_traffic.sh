#!/usr/bin/env bash
# Traffic runs of experiments.cuda_build from a clean clone (/tmp/rerun61) at 28af5ec, 2026-12-07.
cd /tmp/rerun61
export PYTHONPATH=/tmp/rerun61:/tmp/tritonpkg RECENV_NATIVE=0
PY=/work/main/.venv/bin/python
OUT=/tmp/ctres
run() { name=$1; shift; echo "== $name: python -m experiments.cuda_build $*" | tee $OUT/$name.txt; $PY -m experiments.cuda_build --out $OUT/$name.json "$@" 2>&1 | grep -v "^[WE]12\|UserWarning\|warnings.warn\|^  warn" | tee -a $OUT/$name.txt; echo "exit ${PIPESTATUS[0]}" | tee -a $OUT/$name.txt; }
run market-h200 --device h200
run market-h200-16384 --device h200 --num-envs 16384 --no-face
run market-h200-1m-items --device h200 --config num_items=1000000 --no-face
run market-h100 --no-face
run video-h200 --device h200 --env recenv/Video-v0 --no-face
run music-h200 --device h200 --env recenv/Music-v0 --no-face
run ecommerce-h200 --device h200 --env recenv/ECommerce-v0 --no-face
run fromlog-h200 --device h200 --env recenv/FromLog-v0 --log /work/shared/data/ml-latest-small/ratings.csv --no-face
