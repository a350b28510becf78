"""Point-in-time feature and label computation from daily OHLCV bars.

All rolling windows are computed per ticker over that ticker's trading rows (a "row" is a
bar, so holidays and missing days do not count), with vectorized pandas group operations.
Features at a bar only use that bar and earlier bars of the same ticker (no look-ahead);
the label uses the next bar and is therefore a training target only, never a serving
feature.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FEATURE_COLUMNS", "LABEL_COLUMN", "compute_features", "compute_labels"]

FEATURE_COLUMNS: tuple[str, ...] = (
    "ret_1d",
    "ret_5d",
    "ret_20d",
    "vol_20d",
    "mom_10d",
    "mom_20d",
    "rsi_14",
    "volume_zscore_20d",
)
LABEL_COLUMN = "label_next_day_up"

_REQUIRED_COLUMNS = ("ticker", "date", "open", "high", "low", "close", "volume")
_TRADING_DAYS_PER_YEAR = 252
_RSI_PERIOD = 14


def _event_timestamps(dates: pd.Series) -> pd.Series:
    """The calendar date of each bar at 00:00 UTC.

    Naive datetimes are taken as they are; tz-aware ones use their local calendar date
    (a bar stamped 2024-01-02 00:00 America/New_York becomes 2024-01-02 00:00 UTC).
    """
    if not pd.api.types.is_datetime64_any_dtype(dates):
        dates = pd.to_datetime(dates)
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_localize(None)
    return dates.dt.normalize().dt.tz_localize("UTC").dt.as_unit("ns")


def _prepare(bars: pd.DataFrame) -> pd.DataFrame:
    """Validate ``bars`` and return ticker/event_timestamp/close/volume sorted per ticker."""
    missing = [c for c in _REQUIRED_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars is missing columns: {missing}")
    frame = pd.DataFrame(
        {
            "ticker": bars["ticker"].astype(str).to_numpy(dtype=object),
            "event_timestamp": _event_timestamps(bars["date"]).to_numpy(),
            "close": bars["close"].to_numpy(dtype="float64"),
            "volume": bars["volume"].to_numpy(dtype="float64"),
        }
    )
    frame = frame.sort_values(["ticker", "event_timestamp"], kind="mergesort", ignore_index=True)
    duplicated = frame.duplicated(["ticker", "event_timestamp"])
    if duplicated.any():
        example = frame.loc[duplicated, ["ticker", "event_timestamp"]].iloc[0].tolist()
        raise ValueError(f"bars has duplicate (ticker, date) rows, e.g. {example}")
    return frame


def _per_ticker(result: pd.Series) -> pd.Series:
    """Drop the ticker level a grouped rolling/ewm result carries, realigning on the rows."""
    return result.droplevel(0).sort_index()


def _rolling_mean(values: pd.Series, tickers: pd.Series, window: int) -> pd.Series:
    """Per-ticker mean of the last ``window`` rows (incl. the current one); NaN until full."""
    grouped = values.groupby(tickers, sort=False)
    return _per_ticker(grouped.rolling(window, min_periods=window).mean())


def _rolling_std(values: pd.Series, tickers: pd.Series, window: int) -> pd.Series:
    """Per-ticker sample std (ddof=1) of the last ``window`` rows; NaN until full."""
    grouped = values.groupby(tickers, sort=False)
    return _per_ticker(grouped.rolling(window, min_periods=window).std(ddof=1))


def _wilder_mean(values: pd.Series, tickers: pd.Series) -> pd.Series:
    """Per-ticker Wilder smoothing: ewm(alpha=1/14, adjust=False, min_periods=14)."""
    grouped = values.groupby(tickers, sort=False)
    ewm = grouped.ewm(alpha=1.0 / _RSI_PERIOD, adjust=False, min_periods=_RSI_PERIOD)
    return _per_ticker(ewm.mean())


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """Compute point-in-time features per ticker from daily bars.

    ``bars`` has columns ``ticker, date, open, high, low, close, volume`` in any row order,
    with ``date`` naive or tz-aware; (ticker, date) must be unique. Windows count trading
    rows of the same ticker; ``c`` is close, ``v`` is volume, ``t`` the current row:

    - ``ret_k`` = c_t / c_{t-k} - 1 for k = 1, 5, 20.
    - ``vol_20d`` = sample std (ddof=1) of the last 20 log returns ln(c_i / c_{i-1}),
      i = t-19..t, times sqrt(252); needs 21 closes.
    - ``mom_k`` = c_t / mean(c_{t-k+1..t}) - 1 for k = 10, 20.
    - ``rsi_14`` = Wilder RSI: with d_i = c_i - c_{i-1}, gains max(d, 0) and losses
      max(-d, 0) are each smoothed with ``ewm(alpha=1/14, adjust=False, min_periods=14)``
      and RSI = 100 - 100 / (1 + avg_gain / avg_loss); 100 when avg_loss == 0 < avg_gain,
      50 when both are 0 (flat prices).
    - ``volume_zscore_20d`` = (v_t - mean(v_{t-19..t})) / std(v_{t-19..t}, ddof=1); NaN
      when the 20 volumes are all equal.

    Returns:
        Columns ``ticker``, ``event_timestamp`` (tz-aware UTC, the bar's date at 00:00 UTC)
        and :data:`FEATURE_COLUMNS` (float64, NaN until the window is full), one row per
        input bar, sorted by ticker and event_timestamp.
    """
    frame = _prepare(bars)
    tickers = frame["ticker"]
    close = frame["close"]
    volume = frame["volume"]
    by_ticker = close.groupby(tickers, sort=False)

    out = frame[["ticker", "event_timestamp"]].copy()
    for k in (1, 5, 20):
        out[f"ret_{k}d"] = close / by_ticker.shift(k) - 1.0

    log_return = np.log(close / by_ticker.shift(1))
    out["vol_20d"] = _rolling_std(log_return, tickers, 20) * np.sqrt(_TRADING_DAYS_PER_YEAR)

    for k in (10, 20):
        out[f"mom_{k}d"] = close / _rolling_mean(close, tickers, k) - 1.0

    diff = by_ticker.diff()
    avg_gain = _wilder_mean(diff.clip(lower=0.0), tickers)
    avg_loss = _wilder_mean((-diff).clip(lower=0.0), tickers)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    rsi = rsi.mask((avg_loss == 0) & (avg_gain > 0), 100.0)
    rsi = rsi.mask((avg_loss == 0) & (avg_gain == 0), 50.0)
    out["rsi_14"] = rsi

    volume_mean = _rolling_mean(volume, tickers, 20)
    volume_std = _rolling_std(volume, tickers, 20)
    out["volume_zscore_20d"] = ((volume - volume_mean) / volume_std).where(volume_std > 0)

    out = out.astype({column: "float64" for column in FEATURE_COLUMNS})
    return out[["ticker", "event_timestamp", *FEATURE_COLUMNS]]


def compute_labels(bars: pd.DataFrame) -> pd.DataFrame:
    """Compute the next-day direction training label per ticker.

    ``label_next_day_up`` = 1 if c_{t+1} > c_t else 0 (a tie is 0), where t+1 is the next
    trading row of the same ticker. This looks one bar into the future by definition: it
    is a training target only and must never be served as a feature. The last row of each
    ticker has no next bar and is dropped.

    Returns:
        Columns ``ticker``, ``event_timestamp`` (tz-aware UTC, the bar's date at 00:00 UTC)
        and ``label_next_day_up`` (int64), sorted by ticker and event_timestamp.
    """
    frame = _prepare(bars)
    next_close = frame["close"].groupby(frame["ticker"], sort=False).shift(-1)
    has_next = next_close.notna()
    out = frame.loc[has_next, ["ticker", "event_timestamp"]].reset_index(drop=True)
    out[LABEL_COLUMN] = (next_close[has_next] > frame.loc[has_next, "close"]).to_numpy(
        dtype="int64"
    )
    return out
