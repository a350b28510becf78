"""The stored statistics checked against a full recomputation with numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlops.features.catalog import feature_detail
from mlops.features.offline_state import open_snapshot
from mlops.features.statistics import HISTOGRAM_BINS, QUANTILES, sample_rows
from mlops.features.summaries import merge, summaries_by_column
from mlops.features.summary_files import partition_summaries
from mlops.settings import Settings


def assert_matches_full_recomputation(stats: dict[str, Any], values: Any, rank_error: int) -> None:
    """count, nulls, min, max exactly; mean and std to 1e-12 relative; quantiles and
    histogram within `rank_error` (the sketch's bound E, see `summaries.py`)."""
    column = np.asarray(values, dtype="float64")
    finite = np.sort(column[np.isfinite(column)])
    assert stats["count"] == len(column)
    assert stats["nulls"] == int(np.isnan(column).sum())
    assert (stats["min"], stats["max"]) == (finite.min(), finite.max())
    assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(finite.std(ddof=1), rel=1e-12)
    for q in QUANTILES:
        estimate = stats["quantiles"][f"p{int(q * 100):02d}"]
        position = q * (len(finite) - 1)
        below = np.searchsorted(finite, estimate, side="left")  # values < estimate
        at_most = np.searchsorted(finite, estimate, side="right")  # values <= estimate
        assert below <= position + rank_error + 1, (q, estimate)
        assert at_most >= position - rank_error - 1, (q, estimate)
        if rank_error == 0:
            assert estimate == pytest.approx(np.quantile(finite, q), rel=1e-12, abs=1e-15)
    counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
    assert stats["histogram"]["edges"] == [float(e) for e in edges]
    assert sum(stats["histogram"]["counts"]) == len(finite)
    off = np.abs(np.array(stats["histogram"]["counts"]) - counts)
    assert off.max() <= 2 * rank_error, off


def assert_stored_statistics_match(settings: Settings, feature: str) -> None:
    """The stored statistics and samples of `feature` ('view:name' or 'name') equal a full
    recomputation over the current snapshot."""
    detail = feature_detail(settings, feature)
    snapshot = open_snapshot(settings)
    assert snapshot is not None and detail.statistics is not None
    dataset = detail.source["file"]
    partitions = summaries_by_column(partition_summaries(snapshot, dataset))[detail.name]
    full = snapshot.read(dataset)
    rank_error = merge(partitions).rank_error
    assert_matches_full_recomputation(detail.statistics, full[detail.name], rank_error)
    assert detail.samples == sample_rows(full, detail.name)
