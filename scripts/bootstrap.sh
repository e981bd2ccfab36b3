#!/usr/bin/env bash
# Create (or update) the project's virtual environment: torch first (a CPU build on machines
# without an NVIDIA GPU, so set-up never downloads CUDA), then recenv with its dev extra.
# Usage: scripts/bootstrap.sh [VENV_DIR]   (default .venv)
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${PIP[@]}" install "torch>=2.11"  # as pyproject.toml's floor
  else
    # No GPU: a local CPU wheel if pip's find-links has one, else PyTorch's CPU wheel index.
    # The project's other requirements then resolve torch's own dependencies from PyPI.
    "${PIP[@]}" install --no-deps --no-index torch 2>/dev/null \
      || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

EXTRAS="${RECENV_EXTRAS:-dev}"
# RECENV_CONSTRAINTS: a pip constraints file for the rest (scripts/test_floor.sh passes the
# floors of pyproject.toml's requirements).
CONSTRAINTS=()
if [ -n "${RECENV_CONSTRAINTS:-}" ]; then
  CONSTRAINTS=(-c "$RECENV_CONSTRAINTS")
fi
"${PIP[@]}" install "${CONSTRAINTS[@]}" -e ".[${EXTRAS}]"

"$VENV/bin/python" -c "import torch, recenv; print('recenv', recenv.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())"
