"""Feature statistics computed at ingest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.features.statistics import feature_statistics, sample_rows


def test_statistics_match_numpy() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 4.0, np.nan, 10.0])
    stats = feature_statistics(values)
    assert stats["count"] == 6 and stats["nulls"] == 1
    assert (stats["min"], stats["max"]) == (1.0, 10.0)
    assert stats["mean"] == pytest.approx(4.0)
    assert stats["std"] == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert stats["quantiles"]["p50"] == pytest.approx(3.0)
    assert sum(stats["histogram"]["counts"]) == 5
    assert len(stats["histogram"]["edges"]) == len(stats["histogram"]["counts"]) + 1


def test_statistics_of_an_all_null_feature() -> None:
    stats = feature_statistics(pd.Series([np.nan, np.nan]))
    assert stats["nulls"] == 2 and stats["mean"] is None and stats["histogram"]["counts"] == []


def test_infinite_values_do_not_break_statistics() -> None:
    stats = feature_statistics(pd.Series([1.0, np.inf, 3.0]))
    assert stats["max"] == 3.0 and stats["mean"] == pytest.approx(2.0)


def test_samples_are_the_latest_rows() -> None:
    frame = pd.DataFrame(
        {
            "ticker": ["A", "B", "A"],
            "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02"], utc=True),
            "x": [1.0, np.nan, 2.0],
        }
    )
    rows = sample_rows(frame, "x", n=2)
    assert [(r["ticker"], r["value"]) for r in rows] == [("B", None), ("A", 2.0)]
