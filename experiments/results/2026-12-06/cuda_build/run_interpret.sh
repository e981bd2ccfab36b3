#!/usr/bin/env bash
# Interpreter runs of experiments.cuda_build from a clean clone (/tmp/rerun9).
cd /tmp/rerun9
export PYTHONPATH=/tmp/rerun9:/tmp/tritonpkg RECENV_NATIVE=0
PY=/work/main/.venv/bin/python
OUT=/tmp/cbint
run() { name=$1; shift; echo "== $name: python -m experiments.cuda_build $*" | tee $OUT/$name.txt; $PY -m experiments.cuda_build --out $OUT/$name.json "$@" 2>&1 | grep -v "^[WE]1206\|UserWarning\|warnings.warn\|^  warn\|RuntimeWarning\|output = op\|return TensorHandle" | tee -a $OUT/$name.txt; echo "exit ${PIPESTATUS[0]}" | tee -a $OUT/$name.txt; }
run interpret-market --interpret 12 --num-envs 16 --config horizon=5
run interpret-market-128 --interpret 4 --num-envs 128 --config horizon=3 --no-face
run interpret-video --env recenv/Video-v0 --interpret 12 --num-envs 16 --config horizon=5
run interpret-music --env recenv/Music-v0 --interpret 12 --num-envs 16 --config horizon=5
run interpret-ecommerce --env recenv/ECommerce-v0 --interpret 12 --num-envs 16 --config horizon=5
run interpret-fromlog --env recenv/FromLog-v0 --log /work/shared/data/ml-latest-small/ratings.csv --interpret 12 --num-envs 16 --config horizon=5
run interpret-market-1m-items --interpret 6 --num-envs 16 --config horizon=3 --config num_items=1000000 --no-face
