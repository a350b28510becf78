"""Tests for the synthetic OHLCV generator."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from mlops.features.demo_data import generate_ohlcv, market_holidays, trading_days

END = date(2026, 10, 30)
COLUMNS = ["ticker", "date", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_ohlcv(end=END)


def test_columns_and_dtypes(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == COLUMNS
    assert bars["date"].dtype == np.dtype("datetime64[ns]")
    for column in ("open", "high", "low", "close"):
        assert bars[column].dtype == np.dtype("float64")
    assert bars["volume"].dtype == np.dtype("int64")
    assert all(isinstance(t, str) for t in bars["ticker"])
    assert (bars["date"] == bars["date"].dt.normalize()).all()


def test_default_size_and_span(bars: pd.DataFrame) -> None:
    assert bars["ticker"].nunique() >= 20
    span = bars["date"].max() - bars["date"].min()
    assert span >= pd.Timedelta(days=5 * 365)
    assert bars["date"].min() == pd.Timestamp("2020-01-02")
    assert bars["date"].max() == pd.Timestamp("2026-10-30")
    assert 25_000 <= len(bars) <= 40_000


def test_tickers_look_like_symbols(bars: pd.DataFrame) -> None:
    tickers = bars["ticker"].unique()
    assert len(tickers) == 20
    assert all(t.isalpha() and t.isupper() and t.isascii() and 3 <= len(t) <= 4 for t in tickers)


def test_deterministic_for_same_seed(bars: pd.DataFrame) -> None:
    pdt.assert_frame_equal(generate_ohlcv(end=END), bars)


def test_other_seed_gives_other_data(bars: pd.DataFrame) -> None:
    other = generate_ohlcv(end=END, seed=8)
    assert set(other["ticker"]) != set(bars["ticker"])
    assert not np.allclose(other["close"].to_numpy(), bars["close"].to_numpy())


def test_prefix_stable_across_end_dates(bars: pd.DataFrame) -> None:
    cut = date(2023, 6, 30)
    short = generate_ohlcv(end=cut)
    assert short["date"].max() == pd.Timestamp(cut)
    expected = bars[bars["date"] <= pd.Timestamp(cut)].reset_index(drop=True)
    pdt.assert_frame_equal(short, expected, check_exact=True)


def test_fewer_tickers_is_a_subset(bars: pd.DataFrame) -> None:
    few = generate_ohlcv(n_tickers=5, end=END)
    assert few["ticker"].nunique() == 5
    expected = bars[bars["ticker"].isin(set(few["ticker"]))].reset_index(drop=True)
    pdt.assert_frame_equal(few, expected, check_exact=True)


def test_sorted_and_unique(bars: pd.DataFrame) -> None:
    assert not bars.duplicated(["ticker", "date"]).any()
    resorted = bars.sort_values(["ticker", "date"], ignore_index=True)
    pdt.assert_frame_equal(resorted, bars)
    # Every ticker trades on the same calendar.
    per_ticker = bars.groupby("ticker")["date"].count()
    assert per_ticker.nunique() == 1


def test_ohlc_invariants(bars: pd.DataFrame) -> None:
    o, h, low, c = (bars[col].to_numpy() for col in ("open", "high", "low", "close"))
    assert (low > 0).all()
    assert (low <= np.minimum(o, c)).all()
    assert (np.maximum(o, c) <= h).all()
    assert (h > low).mean() > 0.95  # real intraday ranges, not degenerate bars
    for values in (o, h, low, c):
        cents = values * 100
        np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)


def test_volumes(bars: pd.DataFrame) -> None:
    assert bars["volume"].dtype == np.dtype("int64")
    assert (bars["volume"] >= 0).all()
    assert bars["volume"].nunique() > len(bars) // 2


def test_realistic_dynamics(bars: pd.DataFrame) -> None:
    by_ticker = bars.groupby("ticker")
    log_ret = np.log(bars["close"] / by_ticker["close"].shift(1))
    annual_vol = log_ret.groupby(bars["ticker"]).std() * np.sqrt(252)
    assert annual_vol.between(0.08, 1.2).all()
    # Opens gap away from the previous close.
    gap = bars["open"] / by_ticker["close"].shift(1) - 1
    assert (gap.dropna().abs() > 0).mean() > 0.8
    # Volume is higher on large-move days.
    abs_move = log_ret.abs()
    log_volume = np.log(bars["volume"].astype(float))
    tickers = bars["ticker"].unique()
    volume_move_corr = [
        abs_move[bars["ticker"] == t].corr(log_volume[bars["ticker"] == t]) for t in tickers
    ]
    assert np.mean(volume_move_corr) > 0.3
    # Volatility clusters: |return| is autocorrelated (regimes).
    clustered = [abs_move[bars["ticker"] == t].autocorr(lag=1) for t in bars["ticker"].unique()]
    assert np.mean(clustered) > 0.02


def test_trading_calendar(bars: pd.DataFrame) -> None:
    dates = pd.DatetimeIndex(bars["date"].unique())
    assert (dates.dayofweek < 5).all()
    assert not ((dates.month == 12) & (dates.day == 25)).any()
    assert not ((dates.month == 7) & (dates.day == 4)).any()
    assert not ((dates.month == 1) & (dates.day == 1)).any()
    for holiday in ("2024-11-28", "2023-11-23", "2024-03-29", "2022-06-20", "2021-12-24"):
        assert pd.Timestamp(holiday) not in dates
    weekdays = pd.bdate_range("2020-01-02", END)
    assert len(weekdays) - len(dates) >= 9 * 6  # ~9-10 holidays a year are skipped
    # A Saturday New Year is not observed on the previous Friday (NYSE rule).
    assert pd.Timestamp("2021-12-31") in dates


def test_market_holidays_2024_and_2022() -> None:
    assert market_holidays(2024) == {
        date(2024, 1, 1),
        date(2024, 1, 15),
        date(2024, 2, 19),
        date(2024, 3, 29),
        date(2024, 5, 27),
        date(2024, 6, 19),
        date(2024, 7, 4),
        date(2024, 9, 2),
        date(2024, 11, 28),
        date(2024, 12, 25),
    }
    holidays_2022 = market_holidays(2022)
    assert date(2022, 6, 20) in holidays_2022  # Juneteenth on a Sunday
    assert date(2022, 12, 26) in holidays_2022  # Christmas on a Sunday
    assert date(2021, 12, 31) not in market_holidays(2021)
    assert not any(d.month == 6 and d.day in (18, 19, 20) for d in market_holidays(2021))


def test_trading_days_empty_range() -> None:
    assert len(trading_days(date(2024, 1, 5), date(2024, 1, 4))) == 0


def test_default_end_is_before_today() -> None:
    one = generate_ohlcv(n_tickers=1, start=date.today() - timedelta(days=30))
    last = one["date"].max().date()
    assert last < date.today()
    assert date.today() - last <= timedelta(days=5)


def test_rejects_no_tickers() -> None:
    with pytest.raises(ValueError):
        generate_ohlcv(n_tickers=0, end=END)
