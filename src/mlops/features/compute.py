"""Point-in-time feature and label computation from daily OHLCV bars, full or incremental.

All windows are computed per ticker over that ticker's trading rows (a "row" is a bar, so
holidays and missing days do not count). Features at a bar only use that bar and earlier
bars of the same ticker (no look-ahead); the label uses the next bar and is therefore a
training target only, never a serving feature.

Incremental: to compute the bars of a ticker from some date on, a caller passes the
`LOOKBACK` stored bars before that date as `context`, with Wilder's RSI averages of the last
of them (`STATE_COLUMNS`, stored with the features). Every value is then bit-for-bit what a
computation over the whole history gives, because each one depends only on its own window:
window sums add the window's values oldest first (not a running sum over the history), and
the RSI recurrence continues from the stored averages with the same operations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.features.ingest_names import REQUIRED_COLUMNS

__all__ = [
    "FEATURE_COLUMNS",
    "LABEL_COLUMN",
    "LOOKBACK",
    "STATE_COLUMNS",
    "compute_features",
    "compute_frames",
    "compute_labels",
]

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
STATE_COLUMNS: tuple[str, ...] = ("rsi_avg_gain", "rsi_avg_loss")
"""Wilder's smoothed gain and loss at each bar: the state the next bar's RSI continues."""
LOOKBACK = 20
"""Bars before the first computed bar that every window needs (ret_20d, vol_20d)."""

_TRADING_DAYS_PER_YEAR = 252
_RSI_PERIOD = 14
_ALPHA = 1.0 / _RSI_PERIOD


def event_timestamps(dates: pd.Series) -> pd.Series:
    """The calendar date of each bar at 00:00 UTC.

    Naive datetimes are taken as they are; tz-aware ones use their local calendar date
    (a bar stamped 2024-01-02 00:00 America/New_York becomes 2024-01-02 00:00 UTC).
    """
    return pd.Series(_days(dates), index=dates.index).dt.tz_localize("UTC")


def _days(dates: pd.Series) -> np.ndarray:
    """Each bar's calendar date at 00:00 as naive datetime64[ns] (no Python object per
    value: a tz-aware column's `to_numpy()` would make one Timestamp per row)."""
    if not pd.api.types.is_datetime64_any_dtype(dates):
        dates = pd.to_datetime(dates)
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_localize(None)
    return dates.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype("datetime64[ns]")


def _prepare(bars: pd.DataFrame, context: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """ticker/day/close/volume (+ context flag and state) as arrays sorted per ticker."""
    missing = [c for c in REQUIRED_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars is missing columns: {missing}")
    parts = [_arrays(bars, context=False)]
    if context is not None and len(context):
        parts.insert(0, _arrays(context, context=True))
    columns = parts[0] if len(parts) == 1 else _concatenated(parts)
    codes, _ = pd.factorize(columns["ticker"], sort=True)
    day = columns["day"].view("int64")
    if not _is_sorted(codes, day):
        order = np.lexsort((day, codes))
        columns = {k: v[order] for k, v in columns.items()}
        codes, day = codes[order], day[order]
    duplicated = np.r_[False, (codes[1:] == codes[:-1]) & (day[1:] == day[:-1])]
    if duplicated.any():
        at = int(np.flatnonzero(duplicated)[0])
        example = [columns["ticker"][at], pd.Timestamp(columns["day"][at], tz="UTC")]
        raise ValueError(f"bars has duplicate (ticker, date) rows, e.g. {example}")
    columns["code"] = codes
    return columns


def _concatenated(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[-1]}


def _is_sorted(codes: np.ndarray, day: np.ndarray) -> bool:
    """Whether rows already come by ticker, then date (an ingest passes them so)."""
    if len(codes) < 2:
        return True
    step = np.diff(codes)
    return bool((step >= 0).all() and (np.diff(day)[step == 0] >= 0).all())


def _arrays(frame: pd.DataFrame, context: bool) -> dict[str, np.ndarray]:
    n = len(frame)
    state = {
        c: frame[c].to_numpy(dtype="float64") if context else np.full(n, np.nan)
        for c in STATE_COLUMNS
    }
    return {
        "ticker": _texts(frame["ticker"]),
        "day": _days(frame["date"]),
        "close": frame["close"].to_numpy(dtype="float64"),
        "volume": frame["volume"].to_numpy(dtype="float64"),
        "context": np.full(n, context),
        **state,
    }


def _texts(values: pd.Series) -> np.ndarray:
    """The tickers as an object array of str (converted only if they are not already)."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values.to_numpy(dtype=object)
    return values.astype(str).to_numpy(dtype=object)


def _utc(days: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(days).tz_localize("UTC")


def _positions(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start index of each ticker's run, position of each row within its ticker)."""
    n = len(codes)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if n else np.array([], int)
    lengths = np.diff(np.r_[starts, n])
    position = np.arange(n) - np.repeat(starts, lengths)
    return starts, position


def _shifted(values: np.ndarray, k: int) -> np.ndarray:
    """values[i - k] at i (NaN for i < k); callers mask rows whose window crosses tickers."""
    out = np.full_like(values, np.nan)
    if k < len(values):
        out[k:] = values[: len(values) - k]
    return out


def _relative(values: np.ndarray, base: np.ndarray) -> np.ndarray:
    """values / base - 1, computed in the array of `base` (which it overwrites)."""
    np.divide(values, base, out=base)
    base -= 1.0
    return base


def _window_sum(values: np.ndarray, k: int) -> np.ndarray:
    """Sum of values[i-k+1..i], added oldest first (depends on the window only).

    Added in place into one array: rows before the window is full are NaN from the first
    shift, so each later lag only needs adding where it exists."""
    total = _shifted(values, k - 1)
    n = len(values)
    for lag in range(min(k - 2, n - 1), -1, -1):  # a lag past the end adds nothing
        total[lag:] += values[: n - lag]
    return total


def _window_mean_std(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1, two-pass) of values[i-k+1..i]."""
    mean = _window_sum(values, k)
    mean /= k
    n = len(values)
    squares = _shifted(values, k - 1)
    squares -= mean
    np.square(squares, out=squares)
    deviation = np.empty_like(squares)
    for lag in range(min(k - 2, n - 1), -1, -1):
        np.subtract(values[: n - lag], mean[lag:], out=deviation[lag:])
        np.square(deviation[lag:], out=deviation[lag:])
        squares[lag:] += deviation[lag:]
    del deviation
    squares /= k - 1
    return mean, np.sqrt(squares, out=squares)


def _wilder(
    values: np.ndarray, starts: np.ndarray, position: np.ndarray, state: np.ndarray
) -> np.ndarray:
    """Wilder's smoothing per ticker, as ``ewm(alpha=1/14, adjust=False)`` defines it: the
    first diff (position 1) starts the average, then a_t = alpha * x_t + (1 - alpha) * a_{t-1}.

    ``state`` holds stored averages for context rows (NaN elsewhere): a ticker whose last
    context row has one continues from it, with the same operations as a full run. The
    recurrence steps all tickers at once, one row offset at a time."""
    out = np.full(len(values), np.nan)
    ends = np.r_[starts[1:], len(values)]
    first = starts + 1  # position 1: the first diff starts the average
    stored = np.flatnonzero(~np.isnan(state))
    if stored.size:
        owner = np.searchsorted(starts, stored, side="right") - 1
        np.maximum.at(first, owner, stored)  # the last context row with a stored average
    from_state = np.isin(first, stored)
    begun = first < ends
    out[first[from_state]] = state[first[from_state]]
    fresh = begun & ~from_state
    out[first[fresh]] = values[first[fresh]]
    rows, limit = first[begun], ends[begun]
    for _ in range(int((limit - rows).max(initial=0)) - 1):
        rows = rows + 1
        alive = rows < limit
        rows, limit = rows[alive], limit[alive]
        out[rows] = _ALPHA * values[rows] + (1.0 - _ALPHA) * out[rows - 1]
    return out


def compute_frames(
    bars: pd.DataFrame, context: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features (with the RSI state columns) and labels of ``bars``.

    ``bars``: columns ``ticker, date, open, high, low, close, volume``, any row order,
    (ticker, date) unique. ``context``: per ticker, the stored bars just before its first
    row of ``bars`` (all of them if fewer than ``LOOKBACK``), with ``ticker, date, close,
    volume`` and ``STATE_COLUMNS``. Feature rows are returned for ``bars`` only; label rows
    for ``bars`` and the last context bar of each ticker (its next bar is now known), except
    each ticker's last bar.
    """
    frame = _prepare(bars, context)
    close, volume = frame["close"], frame["volume"]
    starts, position = _positions(frame["code"])

    def masked(values: np.ndarray, needs: int) -> np.ndarray:
        """NaN where the row has fewer than `needs` earlier bars of its ticker (in place)."""
        values[position < needs] = np.nan
        return values

    # Each column is computed in place in its own array: the same operations in the same
    # order as the expressions they stand for (in the comments), without a temporary
    # array per operation (a full ingest's 2M rows make each one 16 MB).
    columns: dict[str, np.ndarray] = {}
    for k in (1, 5, 20):  # close / close[t-k] - 1
        columns[f"ret_{k}d"] = masked(_relative(close, _shifted(close, k)), k)
    log_return = _shifted(close, 1)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(close / close[t-1])
        np.divide(close, log_return, out=log_return)
        log_return = masked(np.log(log_return, out=log_return), 1)
    _, log_std = _window_mean_std(log_return, 20)
    del log_return
    log_std *= np.sqrt(_TRADING_DAYS_PER_YEAR)
    columns["vol_20d"] = masked(log_std, 20)
    for k in (10, 20):  # close / (window_sum / k) - 1
        mean = _window_sum(close, k)
        mean /= k
        columns[f"mom_{k}d"] = masked(_relative(close, mean), k - 1)

    diff = _shifted(close, 1)
    diff = masked(np.subtract(close, diff, out=diff), 1)
    avg_gain = _wilder(np.maximum(diff, 0.0), starts, position, frame["rsi_avg_gain"])
    loss = np.negative(diff, out=diff)
    avg_loss = _wilder(np.maximum(loss, 0.0, out=loss), starts, position, frame["rsi_avg_loss"])
    del diff, loss
    with np.errstate(divide="ignore", invalid="ignore"):  # 100 - 100 / (1 + gain / loss)
        rsi = np.divide(avg_gain, avg_loss)
        rsi += 1.0
        np.divide(100.0, rsi, out=rsi)
        np.subtract(100.0, rsi, out=rsi)
    rsi[(avg_loss == 0) & (avg_gain > 0)] = 100.0
    rsi[(avg_loss == 0) & (avg_gain == 0)] = 50.0
    columns["rsi_14"] = masked(rsi, _RSI_PERIOD)

    zscore, volume_std = _window_mean_std(volume, 20)
    with np.errstate(divide="ignore", invalid="ignore"):  # (volume - mean) / std if std > 0
        np.subtract(volume, zscore, out=zscore)
        zscore /= volume_std
    zscore[~(volume_std > 0)] = np.nan
    del volume_std
    columns["volume_zscore_20d"] = masked(zscore, 19)

    computed = ~frame["context"]
    columns |= {"rsi_avg_gain": avg_gain, "rsi_avg_loss": avg_loss}
    del avg_gain, avg_loss, rsi, zscore
    for used in STATE_COLUMNS:  # the stored averages the recurrence started from
        del frame[used]

    def rows(values: np.ndarray) -> np.ndarray:
        return values if computed.all() else values[computed]  # no copy for a full run

    features = pd.DataFrame(
        {
            "ticker": rows(frame["ticker"]),
            "event_timestamp": _utc(rows(frame["day"])),
            **{name: rows(columns.pop(name)) for name in (*FEATURE_COLUMNS, *STATE_COLUMNS)},
        },
        copy=False,  # one array per column: no block consolidation (a copy of them all)
    )
    return features, _labels(frame, computed)


def _labels(frame: dict[str, np.ndarray], computed: np.ndarray) -> pd.DataFrame:
    """Next-bar direction for each row with a next bar of its ticker (see compute_labels)."""
    codes, close = frame["code"], frame["close"]
    has_next = np.r_[codes[1:] == codes[:-1], False]
    wanted = has_next & (computed | np.r_[computed[1:], False])  # new rows, last context row
    up = np.r_[close[1:] > close[:-1], False]  # compared before taking the rows: 1 byte each
    return pd.DataFrame(
        {
            "ticker": frame["ticker"][wanted],
            "event_timestamp": _utc(frame["day"][wanted]),
            LABEL_COLUMN: up[wanted].astype("int64"),
        },
        copy=False,
    )


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
    features, _ = compute_frames(bars)
    return features[["ticker", "event_timestamp", *FEATURE_COLUMNS]]


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
    _, labels = compute_frames(bars)
    return labels
