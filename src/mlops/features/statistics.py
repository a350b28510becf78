"""Feature statistics and sample rows, computed at ingest and stored per view version.

Listing and detail pages read these rows; they never compute statistics on request.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete
from sqlalchemy.orm import Session

from mlops.db import FeatureStatistics, FeatureViewVersion

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
SAMPLE_ROWS = 10


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def feature_statistics(values: pd.Series) -> dict[str, Any]:
    """Count, nulls, min, max, mean, std, quantiles and a histogram of one feature."""
    numeric = pd.to_numeric(values, errors="coerce").astype("float64")
    present = numeric.dropna()
    present = present[np.isfinite(present)]
    stats: dict[str, Any] = {
        "count": len(values),
        "nulls": int(numeric.isna().sum()),
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "quantiles": {},
        "histogram": {"edges": [], "counts": []},
    }
    if present.empty:
        return stats
    counts, edges = np.histogram(present.to_numpy(), bins=HISTOGRAM_BINS)
    stats.update(
        min=_number(present.min()),
        max=_number(present.max()),
        mean=_number(present.mean()),
        std=_number(present.std(ddof=1)) if len(present) > 1 else 0.0,
        quantiles={f"p{int(q * 100):02d}": _number(present.quantile(q)) for q in QUANTILES},
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    )
    return stats


def sample_rows(frame: pd.DataFrame, feature: str, n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """The n most recent (ticker, time, value) rows of one feature."""
    latest = frame.nlargest(n, "event_timestamp")[["ticker", "event_timestamp", feature]]
    return [
        {
            "ticker": str(row.ticker),
            "event_timestamp": pd.Timestamp(row.event_timestamp).isoformat(),
            "value": _number(getattr(row, feature)),
        }
        for row in latest.itertuples(index=False)
    ]


def record_statistics(
    session: Session, active: dict[str, FeatureViewVersion], frames: dict[str, pd.DataFrame]
) -> int:
    """Store statistics of every feature of every active view; returns the count stored.

    `frames` maps a source file name (e.g. 'daily_features.parquet') to its data.
    """
    stored = 0
    computed: dict[tuple[str, str], tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for row in active.values():
        source = row.definition["source"]["file"]
        frame = frames.get(source)
        if frame is None:
            continue
        session.execute(
            delete(FeatureStatistics).where(
                FeatureStatistics.view_name == row.view_name,
                FeatureStatistics.version == row.version,
            )
        )
        for feature in row.definition["features"]:
            name = feature["name"]
            if name not in frame.columns:
                continue
            # Views that share a source column share its statistics: compute them once.
            if (source, name) not in computed:
                computed[source, name] = (feature_statistics(frame[name]), sample_rows(frame, name))
            stats, samples = computed[source, name]
            session.add(
                FeatureStatistics(
                    view_name=row.view_name,
                    version=row.version,
                    feature_name=name,
                    stats=stats,
                    samples=samples,
                )
            )
            stored += 1
    return stored
