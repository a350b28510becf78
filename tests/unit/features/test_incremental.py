"""Incremental ingest: a history ingested in chunks (in order, out of order, with late and
corrected bars) gives the same offline store as the same history ingested at once, and a
batch rewrites only the month partitions it touches."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from tests.support.settings import make_settings

from mlops.features import ingest, offline, offline_state
from mlops.features.compute import FEATURE_COLUMNS, LABEL_COLUMN, STATE_COLUMNS
from mlops.features.demo_data import generate_ohlcv
from mlops.settings import Settings

HISTORY = generate_ohlcv(n_tickers=3, start=date(2023, 11, 1), end=date(2024, 3, 31), seed=11)
DATES = np.sort(HISTORY["date"].unique())


def _ingest(settings: Settings, batch: pd.DataFrame) -> offline.Snapshot:
    with offline.exclusive_write(settings):
        return ingest.write_offline(settings, ingest.plan_change(settings, batch))


def _store(settings: Settings) -> dict[str, pd.DataFrame]:
    snapshot = offline_state.open_snapshot(settings)
    assert snapshot is not None
    frames = {}
    for name in offline.OFFLINE_FILES:
        time = offline.TIME_COLUMN[name]
        frames[name] = snapshot.read(name).sort_values(["ticker", time], ignore_index=True)
    return frames


def _assert_same_store(actual: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    for name in offline.OFFLINE_FILES:
        a, e = actual[name], expected[name]
        assert list(a.columns) == list(e.columns), name
        assert len(a) == len(e), name
        for column in a.columns:
            if pd.api.types.is_float_dtype(e[column]):
                np.testing.assert_allclose(a[column], e[column], rtol=1e-12, atol=0, err_msg=column)
            else:
                assert a[column].tolist() == e[column].tolist(), (name, column)


@pytest.fixture(scope="module")
def at_once(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    settings = make_settings(tmp_path_factory.mktemp("at-once"))
    _ingest(settings, HISTORY)
    return _store(settings)


def test_the_store_holds_what_compute_gives_for_the_whole_history(
    at_once: dict[str, pd.DataFrame],
) -> None:
    from mlops.features.compute import compute_features, compute_labels

    features = compute_features(HISTORY)
    stored = at_once[offline.FEATURES_FILE]
    pd.testing.assert_frame_equal(stored[["ticker", "event_timestamp", *FEATURE_COLUMNS]], features)
    pd.testing.assert_frame_equal(at_once[offline.LABELS_FILE], compute_labels(HISTORY))
    assert len(at_once[offline.BARS_FILE]) == len(HISTORY)


def _chunks(cuts: list[int], order: list[int]) -> list[pd.DataFrame]:
    """The history split at the given date positions, in the given order of pieces."""
    edges = [0, *sorted(set(cuts)), len(DATES)]
    pieces = [HISTORY[HISTORY["date"].isin(DATES[lo:hi])] for lo, hi in itertools.pairwise(edges)]
    pieces = [p for p in pieces if len(p)]
    return [pieces[i % len(pieces)] for i in order] + pieces  # every piece at least once


@hypothesis_settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(1, len(DATES) - 1), min_size=1, max_size=5),
    order=st.lists(st.integers(0, 10), max_size=3),
    shuffle=st.randoms(use_true_random=False),
)
def test_chunks_in_any_order_give_the_store_of_one_ingest(
    tmp_path_factory: pytest.TempPathFactory,
    at_once: dict[str, pd.DataFrame],
    cuts: list[int],
    order: list[int],
    shuffle: object,
) -> None:
    """Re-ingesting a piece replaces its bars with the same values: the result must not
    depend on how often or in which order the pieces came."""
    settings = make_settings(tmp_path_factory.mktemp("chunks"))
    chunks = _chunks(cuts, order)
    shuffle.shuffle(chunks)  # type: ignore[attr-defined]
    for chunk in chunks:
        _ingest(settings, chunk)
    _assert_same_store(_store(settings), at_once)


@hypothesis_settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    position=st.integers(0, len(DATES) - 1),
    factor=st.floats(0.8, 1.25),
    ticker=st.integers(0, 2),
)
def test_a_corrected_bar_in_the_middle_recomputes_that_ticker_from_its_date(
    tmp_path_factory: pytest.TempPathFactory, position: int, factor: float, ticker: int
) -> None:
    """A wrong bar ingested first, then corrected by a later batch, ends as if the right
    bar had been ingested all along; the other tickers' rows are not rewritten."""
    day, name = DATES[position], sorted(HISTORY["ticker"].unique())[ticker]
    wrong = HISTORY.copy()
    hit = (wrong["date"] == day) & (wrong["ticker"] == name)
    wrong.loc[hit, ["open", "high", "low", "close"]] *= factor
    settings = make_settings(tmp_path_factory.mktemp("corrected"))
    _ingest(settings, wrong)
    _ingest(settings, HISTORY[(HISTORY["date"] == day) & (HISTORY["ticker"] == name)])
    expected = make_settings(tmp_path_factory.mktemp("right"))
    _ingest(expected, HISTORY)
    _assert_same_store(_store(settings), _store(expected))


def test_a_daily_batch_rewrites_only_the_partitions_it_touches(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    before = _ingest(settings, HISTORY[HISTORY["date"] < DATES[-1]])
    after = _ingest(settings, HISTORY[HISTORY["date"] == DATES[-1]])
    assert after.id != before.id
    last_month = str(DATES[-1])[:7]
    for name in offline.OFFLINE_FILES:
        old, new = before.partitions(name), after.partitions(name)
        assert set(new) == set(old)
        rewritten = {m for m in new if new[m].stat().st_ino != old[m].stat().st_ino}
        assert rewritten == {last_month}, name  # every other month is a hard link
    assert before.read(offline.BARS_FILE).shape[0] + 3 == after.read(offline.BARS_FILE).shape[0]


def test_the_first_bars_of_a_new_ticker_and_a_day_after_a_gap(tmp_path: Path) -> None:
    """A ticker that appears late, and one that stops trading for two months, still get
    exactly the values of one ingest (the lookback reaches back across empty months)."""
    settings = make_settings(tmp_path / "home")
    names = sorted(HISTORY["ticker"].unique())
    late = HISTORY[(HISTORY["ticker"] != names[0]) | (HISTORY["date"] >= DATES[60])]
    gap = (late["ticker"] == names[1]) & late["date"].between(DATES[20], DATES[70])
    history = late[~gap]
    _ingest(settings, history[history["date"] < DATES[80]])
    for day in DATES[80:]:
        _ingest(settings, history[history["date"] == day])
    expected = make_settings(tmp_path / "expected")
    _ingest(expected, history)
    _assert_same_store(_store(settings), _store(expected))


def test_the_rsi_state_is_stored_with_the_features(at_once: dict[str, pd.DataFrame]) -> None:
    stored = at_once[offline.FEATURES_FILE]
    assert list(stored.columns[-2:]) == list(STATE_COLUMNS)
    gains = stored["rsi_avg_gain"] / stored["rsi_avg_loss"]
    rsi = 100 - 100 / (1 + gains)
    full = stored["rsi_14"].notna() & (stored["rsi_avg_loss"] > 0)
    np.testing.assert_allclose(stored.loc[full, "rsi_14"], rsi[full], rtol=1e-12)
    assert set(at_once[offline.LABELS_FILE][LABEL_COLUMN].unique()) <= {0, 1}


def test_the_neighbours_of_a_batch_are_the_stored_bars_around_it(tmp_path: Path) -> None:
    """What the ingest gate compares a batch with: per ticker, the stored bar before its
    first date and the stored bar after its last date."""
    settings = make_settings(tmp_path / "home")
    name = sorted(HISTORY["ticker"].unique())[1]
    assert ingest.neighbour_bars(settings, HISTORY).empty  # nothing stored yet
    _ingest(settings, HISTORY[HISTORY["date"] != DATES[50]])
    middle = HISTORY[(HISTORY["date"].isin(DATES[50:52])) & (HISTORY["ticker"] == name)]
    neighbours = ingest.neighbour_bars(settings, middle)
    assert neighbours["ticker"].tolist() == [name, name]
    assert neighbours["date"].tolist() == [pd.Timestamp(DATES[49]), pd.Timestamp(DATES[52])]
    stored = HISTORY[(HISTORY["ticker"] == name) & HISTORY["date"].isin([DATES[49], DATES[52]])]
    assert neighbours["close"].tolist() == stored.sort_values("date")["close"].tolist()
    next_day = HISTORY[HISTORY["date"] == DATES[-1]]
    _ingest(settings, HISTORY[HISTORY["date"] < DATES[-1]])
    daily = ingest.neighbour_bars(settings, next_day)
    assert daily["date"].tolist() == [pd.Timestamp(DATES[-2])] * 3  # only the previous bar
