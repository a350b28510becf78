"""Feature statistics computed at ingest."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.support.settings import make_settings
from tests.support.statistics_reference import assert_matches_full_recomputation

from mlops.features import ingest, offline, offline_changes, summaries
from mlops.features.compute import FEATURE_COLUMNS, LABEL_COLUMN
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import FEATURES_FILE, LABELS_FILE
from mlops.features.statistics import feature_statistics, sample_rows, snapshot_statistics
from mlops.features.summaries import merge, summaries_by_column
from mlops.settings import Settings


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


# --------------------------------------------------------------------------- snapshots

DATASETS = {FEATURES_FILE: list(FEATURE_COLUMNS), LABELS_FILE: [LABEL_COLUMN]}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Small sketches, so that partitions of this small store are summarized in blocks.
    monkeypatch.setattr(summaries, "SKETCH_SIZE", 16)
    return make_settings(tmp_path / "home")


def _bars(n_tickers: int = 6, end: date = date(2024, 9, 30)) -> pd.DataFrame:
    return generate_ohlcv(n_tickers=n_tickers, start=date(2024, 1, 2), end=end, seed=11)


def _write(settings: Settings, batch: pd.DataFrame) -> offline.Snapshot:
    with offline.exclusive_write(settings):
        return ingest.write_offline(settings, ingest.plan_change(settings, batch))


def _assert_summaries_stored(snapshot: offline.Snapshot) -> None:
    """The snapshot holds a summary of every partition (nothing is left to a fallback)."""
    for dataset in DATASETS:
        stored = pq.read_table(snapshot.summary_path(dataset))
        assert sorted(set(stored.column("month").to_pylist())) == list(snapshot.partitions(dataset))


def _assert_equal_to_full_recomputation(snapshot: offline.Snapshot) -> None:
    for dataset, columns in DATASETS.items():
        stored = snapshot_statistics(snapshot, dataset, columns)
        summaries_of = summaries_by_column(offline.partition_summaries(snapshot, dataset))
        full = snapshot.read(dataset)
        for column in columns:
            rank_error = merge(summaries_of[column]).rank_error
            if dataset == FEATURES_FILE:
                assert rank_error > 0, "the partitions should be summarized in blocks"
            assert_matches_full_recomputation(stored[column].stats, full[column], rank_error)
            assert stored[column].samples == sample_rows(full, column)


def test_statistics_after_a_full_rebuild_equal_a_full_recomputation(settings: Settings) -> None:
    with offline.exclusive_write(settings):
        snapshot = offline_changes.full_rebuild(settings, _bars())
    _assert_summaries_stored(snapshot)
    _assert_equal_to_full_recomputation(snapshot)


def test_statistics_stay_equal_through_daily_batches_a_correction_and_a_new_ticker(
    settings: Settings,
) -> None:
    bars = _bars(end=date(2024, 10, 8))
    history, later = bars[bars["date"] < "2024-10-01"], bars[bars["date"] >= "2024-10-01"]
    with offline.exclusive_write(settings):
        offline_changes.full_rebuild(settings, history)
    for _, day in list(later.groupby("date"))[:2]:
        _assert_equal_to_full_recomputation(_write(settings, day))
    ticker = history["ticker"].iloc[0]
    may = history[
        (history["ticker"] == ticker) & history["date"].between("2024-05-06", "2024-05-10")
    ]
    correction = may.assign(close=may["close"] * 1.5, high=may["high"] * 1.5)
    _assert_equal_to_full_recomputation(_write(settings, correction))
    newcomer = _bars(n_tickers=1, end=date(2024, 10, 8)).assign(ticker="ZZNEW")
    snapshot = _write(settings, newcomer)
    _assert_summaries_stored(snapshot)
    _assert_equal_to_full_recomputation(snapshot)


def test_a_daily_batch_summarizes_only_the_partitions_it_writes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = _bars(end=date(2024, 10, 2))
    with offline.exclusive_write(settings):
        before = offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-10-02"])
    summarized: list[str] = []
    real = offline.summarize_table
    monkeypatch.setattr(
        offline,
        "summarize_table",
        lambda table, month: summarized.append(month) or real(table, month),
    )
    after = _write(settings, bars[bars["date"] == "2024-10-02"])
    assert summarized == ["2024-10", "2024-10"]  # the features' and the labels' partition
    for dataset in DATASETS:
        old = offline.partition_summaries(before, dataset).filter(pc.field("month") < "2024-10")
        new = offline.partition_summaries(after, dataset).filter(pc.field("month") < "2024-10")
        assert new.equals(old)


def test_a_snapshot_without_summaries_falls_back_and_the_next_commit_stores_them(
    settings: Settings,
) -> None:
    """A snapshot written by a release before summaries (none in `_summaries`)."""
    bars = _bars(end=date(2024, 10, 2))
    with offline.exclusive_write(settings):
        old = offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-10-02"])
    shutil.rmtree(old.root / offline.SUMMARIES)
    _assert_equal_to_full_recomputation(old)
    new = _write(settings, bars[bars["date"] == "2024-10-02"])
    _assert_summaries_stored(new)
    _assert_equal_to_full_recomputation(new)
