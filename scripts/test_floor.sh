#!/usr/bin/env bash
# The test suite against the oldest releases pyproject.toml says recenv supports: every
# requirement of the package and of the dev extra pinned to its floor ("numpy>=1.24" ->
# numpy==1.24; scripts/floor_constraints.py), torch as bootstrap.sh installs it (its floor,
# 2.11, is checked by hand: PyPI's Linux builds of it carry CUDA). Not part of `make test`
# (a second environment and a second run of the suite); run it when a floor changes.
# Usage: scripts/test_floor.sh [VENV_DIR [PYTEST_ARGS...]]   (default .venv-floor and the whole
# suite; PYTHON picks the interpreter,
# RECENV_EXTRAS the extras installed and pinned, default dev; RECENV_FLOOR_SKIP the names left
# unpinned, default torch. The integrations' floors: RECENV_EXTRAS=dev,integrations
# RECENV_FLOOR_SKIP=torch,gymnasium,matplotlib: RLlib pins gymnasium itself, above recenv's
# floor, and its numpy>=2 needs a matplotlib above 3.8.0 (which requires numpy<2).)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-floor}"
shift || true
PYTHON="${PYTHON:-python3}"
EXTRAS="${RECENV_EXTRAS:-dev}"
SKIP="${RECENV_FLOOR_SKIP:-torch}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# The constraints are read with the venv's own Python (tomllib from 3.11; tomli before).
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "tomli>=2.0; python_version < '3.11'"
CONSTRAINTS="$VENV/floor-constraints.txt"
"$VENV/bin/python" scripts/floor_constraints.py --extras "$EXTRAS" --skip "$SKIP" > "$CONSTRAINTS"
cat "$CONSTRAINTS"
RECENV_CONSTRAINTS="$CONSTRAINTS" RECENV_EXTRAS="$EXTRAS" bash scripts/bootstrap.sh "$VENV"
"$VENV/bin/python" -m pip check
if [[ ",$EXTRAS," == *",integrations,"* ]]; then
  export RECENV_REQUIRE_INTEGRATIONS=1  # installed: an integration test that cannot import fails
fi
"$VENV/bin/python" -m pytest -n "${WORKERS:-auto}" --dist loadgroup -q "$@"
