"""Deterministic synthetic daily OHLCV bars for demos, tests and local development.

Prices follow a geometric Brownian motion whose volatility switches between calm, normal
and volatile regimes (a 3-state Markov chain). Every ticker draws its random numbers from
its own generators, sequentially over the trading calendar that starts at ``start``, so
the bars of a given date never depend on ``end``: a later ``end`` only appends rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

__all__ = ["OHLCV_COLUMNS", "generate_ohlcv", "market_holidays", "trading_days"]

OHLCV_COLUMNS: tuple[str, ...] = ("ticker", "date", "open", "high", "low", "close", "volume")

_TRADING_DAYS_PER_YEAR = 252
# Volatility multiplier of each regime: calm, normal, volatile.
_REGIME_VOL = np.array([0.7, 1.0, 2.2])
# Row-stochastic transition matrix of the regime chain (persistent states).
_REGIME_TRANSITIONS = np.array(
    [
        [0.975, 0.022, 0.003],
        [0.030, 0.950, 0.020],
        [0.010, 0.070, 0.920],
    ]
)
_REGIME_CUMULATIVE = np.cumsum(_REGIME_TRANSITIONS, axis=1)
# Independent random streams per ticker (third entry of the seed sequence).
_STREAM_PARAMS, _STREAM_NORMAL, _STREAM_UNIFORM = 0, 1, 2
_N_NORMALS_PER_DAY = 5  # gap, intraday return, high wick, low wick, volume noise
_CONSONANTS = "BCDFGHJKLMNPRSTVWXZ"
_VOWELS = "AEIOUY"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _observed(day: date) -> date:
    """Shift a fixed-date holiday falling on a weekend to the nearest weekday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The ``n``-th given weekday (Mon=0) of a month; ``n=-1`` is the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month = (h + m - 7 * n + 114) // 31
    day = (h + m - 7 * n + 114) % 31 + 1
    return date(year, month, day)


def market_holidays(year: int) -> set[date]:
    """Approximate US equity market holidays of ``year`` (NYSE-like rules).

    New Year, MLK Day, Presidents' Day, Good Friday, Memorial Day, Juneteenth (from 2022),
    Independence Day, Labor Day, Thanksgiving and Christmas; fixed-date holidays on a
    weekend are observed on the adjacent Friday/Monday (New Year on a Saturday is not
    moved back into the previous year).
    """
    holidays = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Presidents' Day
        _easter(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(date(year, 7, 4)),  # Independence Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),  # Christmas
    }
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:
        holidays.add(_observed(new_year))
    if year >= 2022:
        holidays.add(_observed(date(year, 6, 19)))  # Juneteenth
    return holidays


def trading_days(start: date, end: date) -> pd.DatetimeIndex:
    """Trading days in ``[start, end]``: weekdays minus :func:`market_holidays`."""
    if end < start:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    holidays = sorted(h for y in range(start.year, end.year + 1) for h in market_holidays(y))
    days = pd.bdate_range(start, end, freq="C", holidays=holidays)
    return pd.DatetimeIndex(days.as_unit("ns"), freq=None)


def _default_end() -> date:
    """Last trading day strictly before today."""
    day = date.today() - timedelta(days=1)
    while day.weekday() >= 5 or day in market_holidays(day.year):
        day -= timedelta(days=1)
    return day


def _ticker_symbols(n: int, seed: int) -> list[str]:
    """``n`` unique, deterministic, pronounceable-looking 3-4 letter symbols.

    Symbol ``i`` does not depend on ``n`` (asking for more symbols only appends).
    """
    rng = np.random.default_rng([seed, 0x7157])
    symbols: list[str] = []
    seen: set[str] = set()
    while len(symbols) < n:
        length = 3 if rng.random() < 0.45 else 4
        pattern = [_CONSONANTS, _VOWELS, _CONSONANTS, _LETTERS][:length]
        if rng.random() < 0.3:  # e.g. "AMZ"-like symbols starting with a vowel
            pattern[0], pattern[1] = _VOWELS, _CONSONANTS
        symbol = "".join(alphabet[rng.integers(len(alphabet))] for alphabet in pattern)
        if symbol not in seen:
            seen.add(symbol)
            symbols.append(symbol)
    return symbols


def _simulate_ticker(
    seed: int, index: int, n_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Open, high, low, close and volume arrays of one ticker over ``n_days`` days."""
    params = np.random.default_rng([seed, index, _STREAM_PARAMS])
    drift = params.normal(0.07, 0.10)  # annual
    base_vol = params.uniform(0.15, 0.50)  # annual
    price0 = float(np.exp(params.uniform(np.log(8.0), np.log(400.0))))
    base_volume = float(np.exp(params.uniform(np.log(2e5), np.log(2e7))))

    # Fixed number of draws per day from dedicated streams: prefix-stable in n_days.
    z = np.random.default_rng([seed, index, _STREAM_NORMAL]).standard_normal(
        (n_days, _N_NORMALS_PER_DAY)
    )
    u = np.random.default_rng([seed, index, _STREAM_UNIFORM]).random(n_days)

    states = np.empty(n_days, dtype=np.int64)
    state = 1
    cumulative = _REGIME_CUMULATIVE.tolist()
    for day, draw in enumerate(u.tolist()):
        row = cumulative[state]
        state = 0 if draw < row[0] else (1 if draw < row[1] else 2)
        states[day] = state

    sigma = base_vol * _REGIME_VOL[states] / np.sqrt(_TRADING_DAYS_PER_YEAR)
    mu = drift / _TRADING_DAYS_PER_YEAR - 0.5 * sigma**2
    gap = 0.3 * sigma * z[:, 0]
    intraday = mu + 0.95 * sigma * z[:, 1]
    log_close = np.log(price0) + np.cumsum(gap + intraday)
    log_open = log_close - intraday

    close = np.maximum(np.round(np.exp(log_close), 2), 0.01)
    open_ = np.maximum(np.round(np.exp(log_open), 2), 0.01)
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = np.maximum(np.round(top * np.exp(0.5 * sigma * np.abs(z[:, 2])), 2), top)
    low = np.minimum(np.round(bottom * np.exp(-0.5 * sigma * np.abs(z[:, 3])), 2), bottom)
    low = np.maximum(low, 0.01)

    base_sigma = base_vol / np.sqrt(_TRADING_DAYS_PER_YEAR)
    move = np.minimum(np.abs(gap + intraday) / base_sigma, 6.0)  # move in "normal" sigmas
    log_volume = np.log(base_volume) + 0.35 * z[:, 4] + 0.25 * move + 0.2 * (states == 2)
    volume = np.rint(np.exp(log_volume)).astype(np.int64)
    return open_, high, low, close, volume


def generate_ohlcv(
    n_tickers: int = 20,
    start: date = date(2020, 1, 2),
    end: date | None = None,
    seed: int = 7,
) -> pd.DataFrame:
    """Generate deterministic synthetic daily OHLCV bars.

    Args:
        n_tickers: number of tickers (made-up, unique, 3-4 uppercase letters).
        start: first calendar day of the trading calendar (inclusive).
        end: last calendar day (inclusive); ``None`` means the last trading day strictly
            before ``date.today()``.
        seed: random seed; same arguments give identical frames.

    Returns:
        Columns ``ticker`` (str), ``date`` (naive ``datetime64[ns]`` at midnight), ``open``,
        ``high``, ``low``, ``close`` (float64, rounded to cents) and ``volume`` (int64), one
        row per ticker and trading day (weekdays minus market holidays), sorted by ticker
        and date. Values on a date depend only on ``seed``, ``start`` and the ticker, never
        on ``end`` or ``n_tickers``.
    """
    if n_tickers < 1:
        raise ValueError(f"n_tickers must be >= 1, got {n_tickers}")
    if end is None:
        end = _default_end()
    days = trading_days(start, end)
    n_days = len(days)

    symbols = _ticker_symbols(n_tickers, seed)
    frames = []
    for index in sorted(range(n_tickers), key=lambda i: symbols[i]):
        open_, high, low, close, volume = _simulate_ticker(seed, index, n_days)
        frames.append(
            pd.DataFrame(
                {
                    "ticker": np.full(n_days, symbols[index], dtype=object),
                    "date": days,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    bars = pd.concat(frames, ignore_index=True)
    return bars.astype(
        {
            "open": "float64",
            "high": "float64",
            "low": "float64",
            "close": "float64",
            "volume": "int64",
            "date": "datetime64[ns]",
        }
    )
