#!/usr/bin/env bash
# Result runs of experiments.cuda_build from a clean clone (/tmp/rerun8).
cd /tmp/rerun8
export PYTHONPATH=/tmp/rerun8:/tmp/tritonpkg RECENV_NATIVE=0
PY=/work/main/.venv/bin/python
OUT=/tmp/cbres
run() { name=$1; shift; echo "== $name: python -m experiments.cuda_build $*" | tee $OUT/$name.txt; $PY -m experiments.cuda_build --out $OUT/$name.json "$@" 2>&1 | grep -v "^[WE]1206\|UserWarning\|warnings.warn\|^  warn" | tee -a $OUT/$name.txt; echo "exit ${PIPESTATUS[0]}" | tee -a $OUT/$name.txt; }
run market-h100
run market-wide-index --wide-index --no-face
run market-16384 --num-envs 16384 --no-face
run market-1m-items --config num_items=1000000 --no-face
run market-a100 --device a100
run video --env recenv/Video-v0
run music --env recenv/Music-v0
run ecommerce --env recenv/ECommerce-v0
run fromlog --env recenv/FromLog-v0 --log /work/shared/data/ml-latest-small/ratings.csv
run market-cpu-weyl --cpu-form weyl --no-face
