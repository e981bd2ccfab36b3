#!/usr/bin/env bash
# Session 66: the compiled CUDA step under the GPU machines' torch 2.11.0+cu130 and triton
# 3.6.0 (PyPI's CUDA build, on this CPU-only VM), for a faked H100; a clean clone.
set -uo pipefail
PY=/tmp/t211/bin/python
R=/tmp/s66/r211
export RECENV_NATIVE=0 TORCH_EXTENSIONS_DIR=/tmp/s66/t211ext2 TORCHINDUCTOR_CACHE_DIR=/tmp/s66/t211ind2
cd /tmp/s66/c211
$PY -m experiments.cuda_build --out $R/market-h100-torch211.json > $R/market-h100-torch211.txt 2>&1; echo "exit $?" >> $R/market-h100-torch211.txt
$PY -m experiments.cuda_build --wide-index --no-face --out $R/market-h100-wide-torch211.json > $R/market-h100-wide-torch211.txt 2>&1; echo "exit $?" >> $R/market-h100-wide-torch211.txt
$PY -m experiments.cuda_build --device h200 --num-envs 16384 --no-face --out $R/market-h200-16384-torch211.json > $R/market-h200-16384-torch211.txt 2>&1; echo "exit $?" >> $R/market-h200-16384-torch211.txt
$PY -m experiments.cuda_build --interpret 12 --num-envs 16 --config horizon=5 --out $R/interpret-market-torch211.json > $R/interpret-market-torch211.txt 2>&1; echo "exit $?" >> $R/interpret-market-torch211.txt
$PY -m experiments.cuda_build --env recenv/Video-v0 --interpret 6 --num-envs 16 --config horizon=4 --out $R/interpret-video-torch211.json > $R/interpret-video-torch211.txt 2>&1; echo "exit $?" >> $R/interpret-video-torch211.txt
