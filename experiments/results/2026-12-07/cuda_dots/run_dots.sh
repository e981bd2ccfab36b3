#!/usr/bin/env bash
# The compiled CUDA step's traffic before (f524228, clean clone /tmp/rerun70) and after
# (4e14e4a, /tmp/rerun71) the utilities' dot products became products and sums
# (recenv.core.choice.dot, 149d1f9), 2026-12-07, session 57; and the interpreter at the head.
set -u
export RECENV_NATIVE=0
PY=/work/main/.venv/bin/python
OUT=/tmp/cdres
run() {  # run TREE NAME ARGS...
  tree=$1; name=$2; shift 2
  echo "== $name ($(git -C $tree rev-parse --short HEAD)): python -m experiments.cuda_build $*" | tee $OUT/$name.txt
  (cd $tree && PYTHONPATH=$tree:/tmp/tritonpkg $PY -m experiments.cuda_build --out $OUT/$name.json "$@" 2>&1) \
    | grep -v "^[WE]12\|UserWarning\|warnings.warn\|^  warn" | tee -a $OUT/$name.txt
  echo "exit ${PIPESTATUS[0]}" | tee -a $OUT/$name.txt
}
LOG=/work/shared/data/ml-latest-small/ratings.csv
run /tmp/rerun70 base-market-h200 --device h200
run /tmp/rerun71 market-h200 --device h200
run /tmp/rerun70 base-video-h200 --device h200 --env recenv/Video-v0 --no-face
run /tmp/rerun71 video-h200 --device h200 --env recenv/Video-v0 --no-face
run /tmp/rerun71 market-h200-16384 --device h200 --num-envs 16384 --no-face
run /tmp/rerun71 market-h200-1m-items --device h200 --config num_items=1000000 --no-face
run /tmp/rerun71 music-h200 --device h200 --env recenv/Music-v0 --no-face
run /tmp/rerun71 ecommerce-h200 --device h200 --env recenv/ECommerce-v0 --no-face
run /tmp/rerun71 fromlog-h200 --device h200 --env recenv/FromLog-v0 --log $LOG --no-face
run /tmp/rerun71 interpret-market --interpret 12 --num-envs 16 --config horizon=5
run /tmp/rerun71 interpret-video --interpret 6 --num-envs 16 --config horizon=5 --env recenv/Video-v0
