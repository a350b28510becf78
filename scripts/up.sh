#!/usr/bin/env bash
# Set everything up and run the main job: `mlops up` on the embedded local profile
# (Prefect server + UI, MLflow server + UI, scheduled flows, the API; the demo data
# is ingested on first start). Extra arguments go to `mlops up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mlops up "$@"
