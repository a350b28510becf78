"""Partition summaries merge into the statistics of the whole column (`summaries.py`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from tests.support.statistics_reference import assert_matches_full_recomputation

from mlops.features import summaries
from mlops.features.statistics import merged_statistics
from mlops.features.summaries import merge, summaries_by_column, summarize_table, summarize_values


def _partitions(seed: int = 1) -> list[np.ndarray]:
    """Uneven partitions: skewed values far from zero, ties, NaN and infinities."""
    rng = np.random.default_rng(seed)
    parts = []
    for size in (5000, 37, 12000, 1024, 1025, 0, 8000, 3):
        values = 1e6 + rng.lognormal(0.0, 1.0, size)
        values[::7] = np.round(values[::7])  # repeated values
        values[::97] = np.nan
        values[5::501] = np.inf
        parts.append(values)
    return parts


def _merged(parts: list[np.ndarray]) -> summaries.MergedColumn:
    return merge([summarize_values(part) for part in parts])


def test_merged_statistics_equal_numpy_over_all_values() -> None:
    parts = _partitions()
    merged = _merged(parts)
    assert merged.rank_error > 0  # the big partitions were sketched
    assert_matches_full_recomputation(
        merged_statistics(merged), np.concatenate(parts), merged.rank_error
    )


def test_the_bound_holds_for_integer_labels_with_many_ties() -> None:
    rng = np.random.default_rng(4)
    parts = [rng.integers(0, 2, size).astype("float64") for size in (24000, 23000, 900)]
    merged = _merged(parts)
    stats = merged_statistics(merged)
    assert set(stats["quantiles"].values()) <= {0.0, 1.0}
    assert_matches_full_recomputation(stats, np.concatenate(parts), merged.rank_error)


def test_partitions_kept_whole_give_numpy_quantiles_and_histogram() -> None:
    rng = np.random.default_rng(2)
    parts = [rng.normal(0.0, 1.0, size) for size in (1000, 1024, 10)]
    merged = _merged(parts)
    assert merged.rank_error == 0
    assert_matches_full_recomputation(merged_statistics(merged), np.concatenate(parts), 0)


def test_the_error_shrinks_with_the_sketch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = _partitions(seed=3)
    monkeypatch.setattr(summaries, "SKETCH_SIZE", 64)
    coarse = _merged(parts)
    monkeypatch.undo()
    fine = _merged(parts)
    assert coarse.rank_error > 10 * fine.rank_error
    values = np.concatenate(parts)
    assert_matches_full_recomputation(merged_statistics(coarse), values, coarse.rank_error)


def test_stored_summaries_read_back_to_the_same_statistics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the parquet table the snapshot stores, also for sketches written with
    another `SKETCH_SIZE` (the blocks are found from the stored length)."""
    parts = _partitions(seed=5)
    monkeypatch.setattr(summaries, "SKETCH_SIZE", 100)
    tables = [
        summarize_table(pa.table({"x": part, "n": np.arange(len(part))}), f"2024-{i + 1:02d}")
        for i, part in enumerate(parts)
    ]
    direct = merged_statistics(_merged(parts))
    monkeypatch.undo()
    read = summaries_by_column(pa.concat_tables(tables))
    assert sorted(read) == ["n", "x"]
    assert merged_statistics(merge(read["x"])) == direct


def test_a_column_without_finite_values_has_counts_only() -> None:
    merged = merge([summarize_values(np.array([np.nan, np.inf])), summarize_values(np.array([]))])
    stats = merged_statistics(merged)
    assert (stats["count"], stats["nulls"], stats["mean"], stats["quantiles"]) == (2, 1, None, {})
