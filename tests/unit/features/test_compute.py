"""Tests for point-in-time feature and label computation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from mlops.features.compute import (
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    compute_features,
    compute_labels,
)
from mlops.features.demo_data import generate_ohlcv


def make_bars(
    closes: Sequence[float],
    ticker: str = "AAA",
    volumes: Sequence[float] | None = None,
    start: str = "2024-01-01",
) -> pd.DataFrame:
    n = len(closes)
    close = np.asarray(closes, dtype="float64")
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": pd.bdate_range(start, periods=n),
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.asarray(volumes if volumes is not None else [1000] * n, dtype="int64"),
        }
    )


@pytest.fixture(scope="module")
def demo_bars() -> pd.DataFrame:
    bars = generate_ohlcv(n_tickers=3, start=date(2024, 1, 2), end=date(2024, 9, 30))
    return bars


def test_constants() -> None:
    assert FEATURE_COLUMNS == (
        "ret_1d",
        "ret_5d",
        "ret_20d",
        "vol_20d",
        "mom_10d",
        "mom_20d",
        "rsi_14",
        "volume_zscore_20d",
    )
    assert LABEL_COLUMN == "label_next_day_up"


def test_output_schema(demo_bars: pd.DataFrame) -> None:
    features = compute_features(demo_bars)
    assert list(features.columns) == ["ticker", "event_timestamp", *FEATURE_COLUMNS]
    assert len(features) == len(demo_bars)
    assert features["event_timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    for column in FEATURE_COLUMNS:
        assert features[column].dtype == np.dtype("float64")
    first = features.iloc[0]
    assert first["event_timestamp"] == pd.Timestamp("2024-01-02", tz="UTC")
    expected_order = features.sort_values(["ticker", "event_timestamp"], ignore_index=True)
    pdt.assert_frame_equal(features, expected_order)


def test_returns_by_hand() -> None:
    features = compute_features(make_bars([100, 110, 99]))
    np.testing.assert_allclose(features["ret_1d"], [np.nan, 0.1, -0.1])
    assert features["ret_5d"].isna().all()

    closes = [100, 101, 102, 103, 104, 105, 106]
    features = compute_features(make_bars(closes))
    np.testing.assert_allclose(features["ret_5d"], [np.nan] * 5 + [105 / 100 - 1, 106 / 101 - 1])

    closes = [float(50 + i) for i in range(22)]  # 50 .. 71
    features = compute_features(make_bars(closes))
    assert features["ret_20d"].iloc[:20].isna().all()
    assert features["ret_20d"].iloc[20] == pytest.approx(70 / 50 - 1)  # 0.4
    assert features["ret_20d"].iloc[21] == pytest.approx(71 / 51 - 1)


def test_momentum_by_hand() -> None:
    closes = [float(i) for i in range(1, 22)]  # 1 .. 21
    features = compute_features(make_bars(closes))
    mom10 = features["mom_10d"]
    assert mom10.iloc[:9].isna().all()
    assert mom10.iloc[9] == pytest.approx(10 / 5.5 - 1)  # mean(1..10) = 5.5 -> 0.818181..
    assert mom10.iloc[10] == pytest.approx(11 / 6.5 - 1)  # mean(2..11) = 6.5
    mom20 = features["mom_20d"]
    assert mom20.iloc[:19].isna().all()
    assert mom20.iloc[19] == pytest.approx(20 / 10.5 - 1)  # mean(1..20) = 10.5
    assert mom20.iloc[20] == pytest.approx(21 / 11.5 - 1)  # mean(2..21) = 11.5


def test_volatility_by_hand() -> None:
    closes = [100.0, 102, 101, 103, 99, 100, 104, 103, 105, 104, 106]
    closes += [107.0, 105, 108, 110, 109, 111, 108, 112, 113, 115, 114]
    features = compute_features(make_bars(closes))
    vol = features["vol_20d"]
    assert vol.iloc[:20].isna().all()  # 20 closes give only 19 returns
    for t in (20, 21):
        log_returns = [math.log(closes[i] / closes[i - 1]) for i in range(t - 19, t + 1)]
        assert len(log_returns) == 20
        expected = statistics.stdev(log_returns) * math.sqrt(252)
        assert vol.iloc[t] == pytest.approx(expected, rel=1e-12)


def test_rsi_by_hand() -> None:
    # 13 up moves of +1, then -1, then +2.
    closes = [100.0 + i for i in range(14)] + [112.0, 114.0]
    rsi = compute_features(make_bars(closes))["rsi_14"]
    assert rsi.iloc[:14].isna().all()  # needs 14 price changes
    # avg_gain = 13/14, avg_loss = 1/14 -> RS = 13 -> RSI = 100 - 100/14
    assert rsi.iloc[14] == pytest.approx(92.857142857142857, rel=1e-12)
    # avg_gain = 13/14 * 13/14 + 2/14 = 197/196, avg_loss = 13/196 -> RS = 197/13
    assert rsi.iloc[15] == pytest.approx(93.809523809523810, rel=1e-12)


def test_rsi_monotonic_and_flat() -> None:
    rising = compute_features(make_bars([float(i) for i in range(10, 27)]))["rsi_14"]
    assert rising.iloc[:14].isna().all()
    assert rising.iloc[14:].tolist() == [100.0, 100.0, 100.0]
    falling = compute_features(make_bars([float(i) for i in range(40, 23, -1)]))["rsi_14"]
    assert falling.iloc[14:].tolist() == [0.0, 0.0, 0.0]
    flat = compute_features(make_bars([50.0] * 16))["rsi_14"]
    assert flat.iloc[14:].tolist() == [50.0, 50.0]


def test_volume_zscore_by_hand() -> None:
    volumes = [100 * (i + 1) for i in range(20)] + [500]  # 100 .. 2000, then 500
    features = compute_features(make_bars([10.0] * 21, volumes=volumes))
    z = features["volume_zscore_20d"]
    assert z.iloc[:19].isna().all()
    # window 100..2000: mean 1050, stdev 100 * sqrt(35) = 591.6079783...
    assert statistics.stdev(volumes[:20]) == pytest.approx(591.6079783099616)
    assert z.iloc[19] == pytest.approx(950 / 591.6079783099616)  # 1.60579...
    window = volumes[1:21]
    expected = (500 - statistics.mean(window)) / statistics.stdev(window)
    assert z.iloc[20] == pytest.approx(expected)
    constant = compute_features(make_bars([10.0] * 21, volumes=[7] * 21))
    assert constant["volume_zscore_20d"].isna().all()


def test_per_ticker_isolation(demo_bars: pd.DataFrame) -> None:
    tickers = sorted(demo_bars["ticker"].unique())[:2]
    two = demo_bars[demo_bars["ticker"].isin(tickers)]
    interleaved = two.sort_values(["date", "ticker"], ignore_index=True)
    assert interleaved["ticker"].iloc[0] != interleaved["ticker"].iloc[1]
    together = compute_features(interleaved)
    separate = pd.concat(
        [compute_features(two[two["ticker"] == t]) for t in tickers], ignore_index=True
    )
    pdt.assert_frame_equal(together, separate, check_exact=True)
    second_start = together[together["ticker"] == tickers[1]].iloc[0]
    assert np.isnan(second_start["ret_1d"])  # no window crosses into the previous ticker


def test_row_order_does_not_matter(demo_bars: pd.DataFrame) -> None:
    shuffled = demo_bars.sample(frac=1.0, random_state=3)
    pdt.assert_frame_equal(compute_features(shuffled), compute_features(demo_bars))
    pdt.assert_frame_equal(compute_labels(shuffled), compute_labels(demo_bars))


@pytest.mark.parametrize("cut", ["2024-01-31", "2024-02-29", "2024-05-17", "2024-07-03"])
def test_no_look_ahead(demo_bars: pd.DataFrame, cut: str) -> None:
    full = compute_features(demo_bars)
    truncated = compute_features(demo_bars[demo_bars["date"] <= pd.Timestamp(cut)])
    cut_ts = pd.Timestamp(cut, tz="UTC")
    past = full[full["event_timestamp"] <= cut_ts].reset_index(drop=True)
    pdt.assert_frame_equal(truncated, past, check_exact=True)
    at_cut = truncated[truncated["event_timestamp"] == cut_ts]
    assert len(at_cut) == demo_bars["ticker"].nunique()
    if cut >= "2024-02-29":
        assert at_cut[list(FEATURE_COLUMNS)].notna().all().all()


def test_tz_aware_dates_keep_calendar_date() -> None:
    bars = make_bars([100.0, 101.0, 102.0])
    naive = compute_features(bars)
    aware = bars.assign(date=bars["date"].dt.tz_localize("America/New_York"))
    pdt.assert_frame_equal(compute_features(aware), naive)
    assert naive["event_timestamp"].tolist() == [
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-02", tz="UTC"),
        pd.Timestamp("2024-01-03", tz="UTC"),
    ]


def test_rejects_bad_input() -> None:
    bars = make_bars([100.0, 101.0])
    with pytest.raises(ValueError, match="missing"):
        compute_features(bars.drop(columns=["volume"]))
    with pytest.raises(ValueError, match="duplicate"):
        compute_features(pd.concat([bars, bars.iloc[[0]]]))


def test_labels_by_hand() -> None:
    bars = pd.concat(
        [
            make_bars([100.0, 101.0, 101.0, 100.0, 102.0], ticker="BBB"),
            make_bars([50.0, 49.0, 49.5], ticker="AAA"),
        ],
        ignore_index=True,
    )
    labels = compute_labels(bars)
    assert list(labels.columns) == ["ticker", "event_timestamp", LABEL_COLUMN]
    assert labels[LABEL_COLUMN].dtype == np.dtype("int64")
    assert labels["ticker"].tolist() == ["AAA", "AAA", "BBB", "BBB", "BBB", "BBB"]
    # AAA: 50 -> 49 down, 49 -> 49.5 up; BBB: up, tie (0), down, up; last rows dropped.
    assert labels[LABEL_COLUMN].tolist() == [0, 1, 1, 0, 0, 1]
    last_aaa = labels[labels["ticker"] == "AAA"]["event_timestamp"].max()
    assert last_aaa == pd.Timestamp("2024-01-02", tz="UTC")
    assert labels["event_timestamp"].dtype == pd.DatetimeTZDtype("ns", "UTC")


def test_labels_align_with_features(demo_bars: pd.DataFrame) -> None:
    features = compute_features(demo_bars)
    labels = compute_labels(demo_bars)
    assert len(labels) == len(features) - demo_bars["ticker"].nunique()
    merged = features.merge(labels, on=["ticker", "event_timestamp"], how="inner")
    assert len(merged) == len(labels)
    # The label is the sign of the *next* row's 1-day return.
    next_ret = features.groupby("ticker")["ret_1d"].shift(-1)
    expected = (next_ret.dropna() > 0).astype("int64").to_numpy()
    np.testing.assert_array_equal(labels[LABEL_COLUMN].to_numpy(), expected)
