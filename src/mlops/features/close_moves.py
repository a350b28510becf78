"""The close-to-close move of every bar of a batch, with the stored bars around it as context.

An unadjusted split shows as a jump between two consecutive closes of a ticker (2x or /2
and beyond). The validation gate checks, for every bar of a batch, the move from the bar
before it and, at the end of a ticker's batch, the move to the stored bar after it. The
stored bars adjacent to the batch (``neighbours``: the last one before a ticker's first
batch date, the first one after its last) take part, so a one-day batch is compared with
the previous stored close and a correction in the middle of history with both sides. They
are context only: a move is always attributed to the batch row it involves.

Everything is numpy on row positions: no sorted copy of the batch, no Python per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["CloseMoves", "close_moves"]


@dataclass(frozen=True)
class CloseMoves:
    """Per batch row (by position): the largest move to an adjacent bar of its ticker.

    ``factor`` is ``max(close / other, other / close)``, NaN when the row has no adjacent
    bar with a positive close (a ticker's first bar, a missing ticker or date, a
    non-positive close). ``other_close`` and ``other_date`` describe the bar at the other
    end of that move, ``other_is_next`` whether it comes after the row.
    """

    factor: np.ndarray
    other_close: np.ndarray
    other_date: np.ndarray
    other_is_next: np.ndarray


@dataclass(frozen=True)
class _Bars:
    """Batch rows followed by neighbour rows, as arrays; ``batch_rows`` of them are the batch."""

    codes: np.ndarray
    when: np.ndarray
    price: np.ndarray
    batch_rows: int


def close_moves(
    tickers: pd.Series,
    dates: pd.Series,
    close: pd.Series,
    neighbours: pd.DataFrame | None = None,
) -> CloseMoves:
    """The move of every batch row; ``neighbours`` (ticker, date, close) are stored bars."""
    bars = _bars(tickers, dates, close, neighbours)
    order = _ticker_date_order(bars)
    earlier, later = order[:-1], order[1:]
    factor = _pair_factors(bars, earlier, later)
    moves = CloseMoves(
        factor=np.full(bars.batch_rows, np.nan),
        other_close=np.full(bars.batch_rows, np.nan),
        other_date=np.full(bars.batch_rows, np.datetime64("NaT"), dtype="datetime64[ns]"),
        other_is_next=np.zeros(bars.batch_rows, dtype=bool),
    )
    # A pair ending on a batch row is that row's move from its previous bar (each row has
    # at most one); a pair from a batch row to a neighbour is its move to the next stored bar.
    from_previous = (later < bars.batch_rows) & ~np.isnan(factor)
    _assign(moves, bars, later[from_previous], earlier[from_previous], factor[from_previous])
    to_next = (later >= bars.batch_rows) & (earlier < bars.batch_rows) & ~np.isnan(factor)
    rows, others, factors = earlier[to_next], later[to_next], factor[to_next]
    larger = ~(moves.factor[rows] >= factors)
    _assign(moves, bars, rows[larger], others[larger], factors[larger], is_next=True)
    return moves


def _bars(
    tickers: pd.Series, dates: pd.Series, close: pd.Series, neighbours: pd.DataFrame | None
) -> _Bars:
    codes, uniques = pd.factorize(tickers)
    when = _datetimes(dates)
    price = pd.to_numeric(close, errors="coerce").to_numpy(dtype="float64")
    batch_rows = len(codes)
    if neighbours is None or neighbours.empty:
        return _Bars(codes.astype(np.int64, copy=False), when, price, batch_rows)
    # Neighbours of tickers the batch does not hold get code -1 and are left out.
    neighbour_codes = pd.Index(uniques).get_indexer(neighbours["ticker"])
    return _Bars(
        codes=np.concatenate([codes, neighbour_codes]).astype(np.int64),
        when=np.concatenate([when, _datetimes(neighbours["date"])]),
        price=np.concatenate(
            [price, pd.to_numeric(neighbours["close"], errors="coerce").to_numpy(dtype="float64")]
        ),
        batch_rows=batch_rows,
    )


def _datetimes(dates: pd.Series) -> np.ndarray:
    return pd.to_datetime(dates, errors="coerce").to_numpy(dtype="datetime64[ns]")


def _ticker_date_order(bars: _Bars) -> np.ndarray:
    """Positions of the rows with a ticker and a date, sorted by ticker, then date.

    Files usually come sorted that way already; checking it costs far less than a sort.
    """
    rows = np.flatnonzero((bars.codes >= 0) & ~np.isnat(bars.when))
    codes, when = bars.codes[rows], bars.when[rows]
    same_ticker = codes[1:] == codes[:-1]
    if np.all((codes[1:] > codes[:-1]) | (same_ticker & (when[1:] >= when[:-1]))):
        return rows
    return rows[np.lexsort((when, codes))]


def _pair_factors(bars: _Bars, earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """The move factor of each pair of consecutive rows; NaN across tickers or non-positive
    closes."""
    first, ratio = bars.price[earlier], bars.price[later]
    first[~(first > 0)] = np.nan
    ratio[~(ratio > 0)] = np.nan
    np.divide(ratio, first, out=ratio)
    del first
    ratio[bars.codes[earlier] != bars.codes[later]] = np.nan
    return np.maximum(ratio, np.reciprocal(ratio), out=ratio)


def _assign(
    moves: CloseMoves,
    bars: _Bars,
    rows: np.ndarray,
    others: np.ndarray,
    factors: np.ndarray,
    *,
    is_next: bool = False,
) -> None:
    moves.factor[rows] = factors
    moves.other_close[rows] = bars.price[others]
    moves.other_date[rows] = bars.when[others]
    moves.other_is_next[rows] = is_next
