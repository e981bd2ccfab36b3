#!/usr/bin/env bash
# Builds, on a machine that reaches PyPI, the wheels that a GPU machine without network
# lacks for the GPU check (experiments/gpu_check.sh), into .whl/ (ignored by git):
#
#   bash experiments/gpu_wheels.sh          # here, once; then carry .whl and .gpu_data
#
# The GPU machines lent to this project (device tool, kind nvidia-h200) run their own
# Python 3.12 with a CUDA build of torch, numpy, pytest, tensorboard, tqdm, PyYAML, ninja,
# cloudpickle, six and typing-extensions, and reach no package index. recenv also needs
# gymnasium and pettingzoo; the VMAS peer of bench_cuda needs vmas, the legacy gym and
# pyglet. All of them are pure Python, so `pip wheel` builds py3-none-any wheels that install
# on any Python 3 (gym 0.26.2 is published as a source archive only). Versions: the ones
# this project is tested with (pyproject.toml). Nothing here touches torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl
mkdir -p .whl
"$PY" -m pip wheel --quiet --no-deps --disable-pip-version-check -w .whl \
  gymnasium==1.2.2 farama-notifications==0.0.6 pettingzoo==1.27.0 \
  vmas==1.5.2 gym==0.26.2 gym-notices==0.0.8 pyglet==1.5.27
# Every wheel must be pure Python: a platform wheel built here would not load there.
for w in .whl/*.whl; do
  case "$w" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
    *) echo "not a pure-Python wheel: $w" >&2; exit 1 ;;
  esac
done
ls -1 .whl
du -sh .whl
# The log-built scenario's tests read the MovieLens sample from ../shared, which does not
# travel to the GPU machine: its ratings (and README, which holds the licence) go along in
# .gpu_data/ (ignored by git; carried with .whl; never committed), where gpu_check.sh
# links them to ../shared/data. Without the sample here, those tests skip there too.
SAMPLE=../shared/data/ml-latest-small
rm -rf .gpu_data
if [ -f "$SAMPLE/ratings.csv" ]; then
  mkdir -p .gpu_data/ml-latest-small
  cp "$SAMPLE/ratings.csv" "$SAMPLE/README.txt" .gpu_data/ml-latest-small/
  du -sh .gpu_data
fi
