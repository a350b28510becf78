"""Feature statistics and sample rows, computed at ingest and stored per view version.

Listing and detail pages read these rows; they never compute statistics on request.

The statistics of a column are merged from the summaries stored beside each partition of
the snapshot (`summaries.py`): count, nulls, min and max exactly, mean and std to within
rounding, quantiles and the histogram from the merged sketches within the bound the
module documents. The samples are read from the newest partitions only. So the cost of
storing statistics grows with the number of partitions, not with the number of rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import delete
from sqlalchemy.orm import Session

from mlops.db import FeatureStatistics, FeatureViewVersion
from mlops.features.offline import TIME_COLUMN, Snapshot
from mlops.features.summaries import MergedColumn, merge, summaries_by_column, summarize_values
from mlops.features.summary_files import partition_summaries

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
SAMPLE_ROWS = 10


@dataclass(frozen=True)
class ColumnStatistics:
    """What is stored for one feature: its statistics and its newest values."""

    stats: dict[str, Any]
    samples: list[dict[str, Any]]


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def merged_statistics(merged: MergedColumn) -> dict[str, Any]:
    """The stored statistics (count, nulls, min, max, mean, std, quantiles, histogram)."""
    stats: dict[str, Any] = {
        "count": merged.rows,
        "nulls": merged.nulls,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "quantiles": {},
        "histogram": {"edges": [], "counts": []},
    }
    if not merged.finite:
        return stats
    counts, edges = merged.histogram(HISTOGRAM_BINS)
    stats.update(
        min=_number(merged.min),
        max=_number(merged.max),
        mean=_number(merged.mean),
        std=_number(merged.std),
        quantiles={f"p{int(q * 100):02d}": _number(merged.quantile(q)) for q in QUANTILES},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return stats


def feature_statistics(values: pd.Series) -> dict[str, Any]:
    """The statistics of one series of values (a single summary, merged)."""
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    return merged_statistics(merge([summarize_values(numeric.to_numpy())]))


def sample_rows(frame: pd.DataFrame, feature: str, n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The n most recent (ticker, time, value) rows of one feature."""
    return _samples(frame.nlargest(n, "event_timestamp"), feature)


def _samples(latest: pd.DataFrame, feature: str) -> list[dict[str, Any]]:
    latest = latest[["ticker", "event_timestamp", feature]]
    return [
        {
            "ticker": str(row.ticker),
            "event_timestamp": pd.Timestamp(row.event_timestamp).isoformat(),
            "value": _number(getattr(row, feature)),
        }
        for row in latest.itertuples(index=False)
    ]


def newest_rows(snapshot: Snapshot, dataset: str, columns: list[str], n: int) -> pd.DataFrame:
    """The `n` newest rows of `dataset`, read from as few of its newest partitions as hold
    them (a partition holds one month, so none further back can hold a newer row)."""
    time = TIME_COLUMN[dataset]
    months = list(snapshot.partitions(dataset))
    frames: list[pd.DataFrame] = []
    while months and sum(len(f) for f in frames) < n:
        frames.insert(0, snapshot.read(dataset, ["ticker", time, *columns], {months.pop()}))
    newest = pd.concat(frames, ignore_index=True)
    return newest.nlargest(n, time)


def snapshot_statistics(
    snapshot: Snapshot, dataset: str, columns: list[str]
) -> dict[str, ColumnStatistics]:
    """Statistics and samples of the `columns` of one dataset that the snapshot has (it
    must have a partition of `dataset`)."""
    stored = set(snapshot.columns(dataset))
    present = [c for c in columns if c in stored]
    rows = partition_summaries(snapshot, dataset)
    rows = rows.filter(pc.is_in(rows.column("column"), pa.array(present, pa.string())))
    summaries = summaries_by_column(rows)
    newest = newest_rows(snapshot, dataset, present, SAMPLE_ROWS)
    return {
        column: ColumnStatistics(
            merged_statistics(merge(summaries.get(column, []))), _samples(newest, column)
        )
        for column in present
    }


def record_statistics(
    session: Session,
    active: dict[str, FeatureViewVersion],
    computed: Mapping[str, Mapping[str, ColumnStatistics]],
) -> int:
    """Store statistics of every feature of every active view; returns the count stored.

    `computed` maps a source dataset (e.g. 'daily_features.parquet') to the statistics of
    its columns; views that share a source column share its statistics."""
    stored = 0
    for row in active.values():
        columns = computed.get(row.definition["source"]["file"])
        if columns is None:
            continue
        session.execute(
            delete(FeatureStatistics).where(
                FeatureStatistics.view_name == row.view_name,
                FeatureStatistics.version == row.version,
            )
        )
        for feature in row.definition["features"]:
            name = feature["name"]
            if name not in columns:
                continue
            session.add(
                FeatureStatistics(
                    view_name=row.view_name,
                    version=row.version,
                    feature_name=name,
                    stats=columns[name].stats,
                    samples=columns[name].samples,
                )
            )
            stored += 1
    return stored
