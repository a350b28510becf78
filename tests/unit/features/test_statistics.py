"""Feature statistics computed at ingest."""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.support.settings import make_settings
from tests.support.statistics_reference import assert_matches_full_recomputation

from mlops.features import ingest, offline, offline_changes, summaries, summary_files
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


def _bars(
    n_tickers: int = 6, end: date = date(2024, 9, 30), start: date = date(2022, 9, 1)
) -> pd.DataFrame:
    """Bars over two closed years (2022, 2023) and the open one (2024)."""
    return generate_ohlcv(n_tickers=n_tickers, start=start, end=end, seed=11)


def _write(settings: Settings, batch: pd.DataFrame) -> offline.Snapshot:
    with offline.exclusive_write(settings):
        return ingest.write_offline(settings, ingest.plan_change(settings, batch))


def _periods(snapshot: offline.Snapshot, dataset: str, kind: str) -> list[str]:
    stored = pq.read_table(summary_files.summary_file(snapshot, dataset, kind))
    return sorted(set(stored.column("period").to_pylist()))


def _assert_summaries_stored(snapshot: offline.Snapshot) -> None:
    """The snapshot holds a summary of every closed year and of every month of the open
    year (nothing is left to a fallback)."""
    for dataset in DATASETS:
        months = list(snapshot.partitions(dataset))
        newest = months[-1][:4]
        closed = sorted({m[:4] for m in months if m[:4] < newest})
        assert _periods(snapshot, dataset, summary_files.YEARS) == closed
        assert _periods(snapshot, dataset, summary_files.MONTHS) == [
            m for m in months if m.startswith(newest)
        ]


def _assert_equal_to_full_recomputation(snapshot: offline.Snapshot) -> None:
    for dataset, columns in DATASETS.items():
        stored = snapshot_statistics(snapshot, dataset, columns)
        rows = summary_files.partition_summaries(snapshot, dataset)
        summaries_of = summaries_by_column(rows)
        full = snapshot.read(dataset)
        for column in columns:
            assert sum(s.rows for s in summaries_of[column]) == len(full)  # each row once
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


def test_statistics_stay_equal_through_daily_batches_corrections_and_a_new_ticker(
    settings: Settings,
) -> None:
    bars = _bars(end=date(2024, 10, 8))
    history, later = bars[bars["date"] < "2024-10-01"], bars[bars["date"] >= "2024-10-01"]
    with offline.exclusive_write(settings):
        offline_changes.full_rebuild(settings, history)
    for _, day in list(later.groupby("date"))[:2]:
        _assert_equal_to_full_recomputation(_write(settings, day))
    ticker = history["ticker"].iloc[0]
    for start, end in (("2024-05-06", "2024-05-10"), ("2023-03-06", "2023-03-10")):
        week = history[(history["ticker"] == ticker) & history["date"].between(start, end)]
        correction = week.assign(close=week["close"] * 1.5, high=week["high"] * 1.5)
        _assert_equal_to_full_recomputation(_write(settings, correction))
    newcomer = _bars(n_tickers=1, end=date(2024, 10, 8)).assign(ticker="ZZNEW")
    snapshot = _write(settings, newcomer)
    _assert_summaries_stored(snapshot)
    _assert_equal_to_full_recomputation(snapshot)


@pytest.fixture
def summarized(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The periods summarized from rows (partitions or years) from now on."""
    periods: list[str] = []
    real = summaries.summarize_table

    def counted(table: pa.Table, period: str) -> pa.Table:
        periods.append(period)
        return real(table, period)

    for module in (offline, summary_files):
        monkeypatch.setattr(module, "summarize_table", counted)
    return periods


def test_a_daily_batch_summarizes_only_the_partitions_it_writes(
    settings: Settings, summarized: list[str]
) -> None:
    bars = _bars(end=date(2024, 10, 2))
    with offline.exclusive_write(settings):
        before = offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-10-02"])
    summarized.clear()
    after = _write(settings, bars[bars["date"] == "2024-10-02"])
    assert summarized == ["2024-10", "2024-10"]  # the features' and the labels' partition
    for dataset in DATASETS:
        years = [
            summary_files.summary_file(s, dataset, summary_files.YEARS) for s in (before, after)
        ]
        assert os.path.samefile(*years)  # the closed years' file is linked, not rewritten
        old, new = (
            summary_files.partition_summaries(s, dataset).filter(pc.field("period") < "2024-10")
            for s in (before, after)
        )
        assert new.equals(old)


def test_the_first_batch_of_a_year_closes_the_year_before(
    settings: Settings, summarized: list[str]
) -> None:
    bars = _bars(end=date(2024, 1, 5), start=date(2023, 6, 1))
    with offline.exclusive_write(settings):
        offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-01-01"])
    summarized.clear()
    snapshot = _write(settings, bars[bars["date"] == bars["date"].max()])
    # the features close 2023 and start 2024-01; a label needs the next bar, so the labels
    # have no row of the new day yet: they rewrite December, of their still open 2023
    assert sorted(summarized) == ["2023", "2023-12", "2024-01"]
    _assert_summaries_stored(snapshot)
    _assert_equal_to_full_recomputation(snapshot)


def test_a_correction_in_a_closed_year_summarizes_that_year_again(
    settings: Settings, summarized: list[str]
) -> None:
    bars = _bars()
    with offline.exclusive_write(settings):
        offline_changes.full_rebuild(settings, bars)
    summarized.clear()
    late = bars[(bars["ticker"] == bars["ticker"].iloc[0]) & (bars["date"] == "2023-12-29")]
    snapshot = _write(settings, late.assign(close=late["close"] * 1.1))
    # the bar's month and the features after it, up to the open year's months
    assert {p for p in summarized if len(p) == 4} == {"2023"}
    _assert_summaries_stored(snapshot)
    _assert_equal_to_full_recomputation(snapshot)


def test_a_snapshot_without_summaries_falls_back_and_the_next_commit_stores_them(
    settings: Settings,
) -> None:
    """A snapshot written by a release before summaries (none in `_summaries`)."""
    bars = _bars(end=date(2024, 10, 2))
    with offline.exclusive_write(settings):
        old = offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-10-02"])
    shutil.rmtree(old.root / summary_files.SUMMARIES)
    _assert_equal_to_full_recomputation(old)
    new = _write(settings, bars[bars["date"] == "2024-10-02"])
    _assert_summaries_stored(new)
    _assert_equal_to_full_recomputation(new)


def test_a_snapshot_with_a_summary_per_month_is_read_and_the_next_commit_folds_its_years(
    settings: Settings,
) -> None:
    """The previous release kept one file of month rows per dataset, the period column
    named `month`."""
    bars = _bars(end=date(2024, 10, 2))
    with offline.exclusive_write(settings):
        old = offline_changes.full_rebuild(settings, bars[bars["date"] < "2024-10-02"])
    shutil.rmtree(old.root / summary_files.SUMMARIES)
    (old.root / summary_files.SUMMARIES).mkdir()
    for dataset in DATASETS:
        rows = [
            summaries.summarize_table(pq.read_table(p), m)
            for m, p in old.partitions(dataset).items()
        ]
        legacy = pa.concat_tables(rows).rename_columns(
            ["month", *summaries.SUMMARY_SCHEMA.names[1:]]
        )
        pq.write_table(legacy, old.root / summary_files.SUMMARIES / dataset)
    _assert_equal_to_full_recomputation(old)
    new = _write(settings, bars[bars["date"] == "2024-10-02"])
    _assert_summaries_stored(new)
    _assert_equal_to_full_recomputation(new)
