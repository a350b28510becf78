#!/usr/bin/env bash
# Set everything up and run the whole test suite: lint, format check, types, and
# pytest with coverage. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null; then
  echo "== installing Debian's chromium for the browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
echo "== ruff"; .venv/bin/ruff check src flows feature_repo tests
.venv/bin/ruff format --check src flows feature_repo tests
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
# Two workers (the test machine has 2 cores); a file's tests stay on one worker, so its
# module fixtures are built once. Pass `-n 0` to run in one process.
.venv/bin/pytest -n 2 --dist loadfile --durations=30 --cov=mlops --cov-report=term --cov-report=xml "$@"
