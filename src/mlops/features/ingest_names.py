"""The names an ingest shares between its light side (`mlops ingest` describing a source
and following a run of the API) and the pipeline: a bar's columns, the steps a run
records. A module of its own so that the light side does not import pandas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.errors import DataValidationError, MlopsError, error_from

REQUIRED_COLUMNS: tuple[str, ...] = ("ticker", "date", "open", "high", "low", "close", "volume")
"""A daily bar as the platform names its columns (a vendor's are mapped onto these)."""

INGEST_STEPS = (
    "load",
    "validate",
    "compute",
    "write_offline",
    "apply",
    "materialize",
    "statistics",
)
"""The steps the `ingest` flow records, in order (progress bars count them)."""

OPEN_STATUSES = ("pending", "running")
"""The statuses of an ingest run that has not ended (its record may still change)."""


def run_outcome(run: Mapping[str, Any]) -> dict[str, Any]:
    """What an ended ingest run did (an `IngestSummary` as a dict), from its record as the
    API shows it; or its error raised as a run in this process would have raised it."""
    status, error = run["status"], run.get("error") or ""
    if status == "completed":
        return {**run["summary"], "run_id": run["id"]}
    if status == "rejected":
        raise DataValidationError(error, {"report_path": run.get("report_path")})
    message = error or f"The ingest run {run['id']} ended {status}."
    raise error_from(run.get("error_code") or MlopsError.code, message)
