#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the platform with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
.venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[dev]"
# Byte-compile the libraries once: with PYTHONDONTWRITEBYTECODE set, every process would
# otherwise recompile mlflow, matplotlib, shap... on import (about 5 s more per process).
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null 2>&1 || true
