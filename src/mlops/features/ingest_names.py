"""The names an ingest shares between its light side (`mlops ingest` describing a source
and following a run of the API) and the pipeline: a bar's columns, the steps a run
records. A module of its own so that the light side does not import pandas."""

from __future__ import annotations

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
