#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format check, types, and
# pytest with coverage. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check src flows feature_repo tests
.venv/bin/ruff format --check src flows feature_repo tests
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
.venv/bin/pytest --cov=mlops --cov-report=term --cov-report=xml "$@"
