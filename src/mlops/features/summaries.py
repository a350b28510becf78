"""Mergeable summaries of the numeric columns of one partition, and their merge.

A summary of one column of one period (a month partition, or a closed year of twelve:
`summary_files.py`; "partition" below means either) holds what the statistics of the
whole column can be merged from without reading its rows again:

- `rows`, `nulls` (NaN), `finite` (the values that are neither NaN nor infinite): counts,
  merged by adding them (exact).
- `min`, `max` of the finite values: merged by min and max (exact).
- `total` (their sum) and `m2` (the sum of squared deviations from the partition's own
  mean): merged with the multi-way form of Chan et al.'s parallel formula,
  ``M2 = sum(M2_i) + sum(n_i * (mean_i - mean) ** 2)``, whose terms are all positive (no
  cancellation). Mean and standard deviation therefore match a two-pass computation over
  all rows to within a few units of rounding (the tests check 1e-12 relative).
- A quantile sketch of at most `SKETCH_SIZE` points: the partition's sorted finite values
  cut into `SKETCH_SIZE` consecutive blocks of nearly equal size, each kept as its middle
  value weighted by the block's size (every value is kept, with weight 1, when there are
  no more of them than that).

Error bound of the sketch. For any threshold v, the number of values <= v (or < v) that
the weighted points of one partition imply differs from the true number by at most half a
block, ``ceil(n_i / SKETCH_SIZE) / 2`` (only the blocks on either side of v can be counted
wrongly, and each is kept by its middle value); a partition kept whole is exact. Merging
adds the counts of the partitions, so over all of them the error is at most
``E = sum_i ceil(ceil(n_i / SKETCH_SIZE) / 2)`` ranks (`MergedColumn.rank_error`), about
``n / (2 * SKETCH_SIZE)``: 0.05% of the rows. Hence:

- a quantile (linear interpolation at position ``q * (n - 1)``, like numpy's default) is a
  value whose rank among the finite values is within ``E + 1`` of that position;
- a histogram bin's count (edges from the exact min and max, like ``numpy.histogram``) is
  within ``2 * E`` of the exact count, and the counts sum to the exact number of values;
- both equal numpy's results when every partition was kept whole.

Merging reads a few kilobytes per partition and column, whatever the number of rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SKETCH_SIZE = 1024
"""Points kept per partition and column (the error bound above is in units of it)."""
SUMMARY_SCHEMA = pa.schema(
    [
        ("period", pa.string()),
        ("column", pa.string()),
        ("rows", pa.int64()),
        ("nulls", pa.int64()),
        ("finite", pa.int64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("total", pa.float64()),
        ("m2", pa.float64()),
        ("sketch", pa.list_(pa.float64())),
    ]
)
"""One row per period ('2024-01' or '2024') and column, as stored with the snapshot (the
sketch's weights follow from `finite` and the sketch's length: `block_sizes`)."""


@dataclass(frozen=True)
class ColumnSummary:
    """What the statistics of a column are merged from (see the module docstring)."""

    rows: int
    nulls: int
    finite: int
    min: float
    max: float
    total: float
    m2: float
    sketch_values: np.ndarray
    sketch_weights: np.ndarray

    @property
    def mean(self) -> float:
        return self.total / self.finite if self.finite else math.nan

    @property
    def rank_error(self) -> int:
        """Half a block: the most its sketch's count of values <= v can be off (module)."""
        points = len(self.sketch_values)
        return 0 if points == self.finite else math.ceil(math.ceil(self.finite / points) / 2)


def summarize_values(values: np.ndarray) -> ColumnSummary:
    """The summary of one column's values (any numeric dtype; NaN counts as null)."""
    numeric = np.asarray(values, dtype="float64")
    finite = np.sort(numeric[np.isfinite(numeric)])
    n = len(finite)
    total = float(finite.sum()) if n else 0.0
    m2 = float(np.square(finite - total / n).sum()) if n else 0.0
    return ColumnSummary(
        rows=len(numeric),
        nulls=int(np.isnan(numeric).sum()),
        finite=n,
        min=float(finite[0]) if n else math.nan,
        max=float(finite[-1]) if n else math.nan,
        total=total,
        m2=m2,
        sketch_values=_block_middles(finite),
        sketch_weights=block_sizes(n, min(n, SKETCH_SIZE)),
    )


def _block_bounds(n: int, points: int) -> np.ndarray:
    return np.arange(points + 1, dtype="int64") * n // points


def block_sizes(n: int, points: int) -> np.ndarray:
    """How many of a partition's `n` sorted values each of the `points` of its sketch
    stands for (from the stored length, so sketches of another `SKETCH_SIZE` still read)."""
    if n == points:
        return np.ones(n, dtype="int64")
    return np.diff(_block_bounds(n, points))


def _block_middles(ordered: np.ndarray) -> np.ndarray:
    """The middle value of each of `SKETCH_SIZE` blocks of the sorted values (all of them
    when there are no more). A block of even size has two middles: the lower one is taken
    in every other block and the upper one in the others, so that the sketch's ranks are
    not all biased the same way."""
    if len(ordered) <= SKETCH_SIZE:
        return ordered
    bounds = _block_bounds(len(ordered), SKETCH_SIZE)
    upper = np.arange(SKETCH_SIZE) % 2
    return ordered[(bounds[:-1] + bounds[1:] - 1 + upper) // 2]


def summarize_table(table: pa.Table, period: str) -> pa.Table:
    """The summary rows (`SUMMARY_SCHEMA`) of every numeric column of the rows of one
    `period`: a month partition ('2024-01') or a whole year ('2024')."""
    rows = []
    for field in table.schema:
        if not is_numeric(field.type):
            continue
        column = table.column(field.name).to_numpy(zero_copy_only=False)
        rows.append({"period": period, "column": field.name, **_as_row(summarize_values(column))})
    return pa.Table.from_pylist(rows, SUMMARY_SCHEMA)


def is_numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _as_row(summary: ColumnSummary) -> dict[str, object]:
    empty = summary.finite == 0
    return {
        "rows": summary.rows,
        "nulls": summary.nulls,
        "finite": summary.finite,
        "min": None if empty else summary.min,
        "max": None if empty else summary.max,
        "total": summary.total,
        "m2": summary.m2,
        "sketch": summary.sketch_values,
    }


def summaries_by_column(table: pa.Table) -> dict[str, list[ColumnSummary]]:
    """Column -> its summaries, from the concatenated summary rows of many partitions."""
    table = table.combine_chunks()
    scalars = {
        name: table.column(name).to_numpy(zero_copy_only=False)
        for name in ("rows", "nulls", "finite", "min", "max", "total", "m2")
    }
    values = _lists(table.column("sketch"))
    found: dict[str, list[ColumnSummary]] = {}
    for i, column in enumerate(table.column("column").to_pylist()):
        found.setdefault(column, []).append(
            ColumnSummary(
                rows=int(scalars["rows"][i]),
                nulls=int(scalars["nulls"][i]),
                finite=int(scalars["finite"][i]),
                min=float(scalars["min"][i]),
                max=float(scalars["max"][i]),
                total=float(scalars["total"][i]),
                m2=float(scalars["m2"][i]),
                sketch_values=values[i],
                sketch_weights=block_sizes(int(scalars["finite"][i]), len(values[i])),
            )
        )
    return found


def _lists(column: pa.ChunkedArray) -> list[np.ndarray]:
    """The values of each list of a list column, as numpy arrays (no Python per value)."""
    lists = column.combine_chunks()
    flat = lists.flatten().to_numpy(zero_copy_only=False).astype("float64")
    offsets = lists.offsets.to_numpy()
    return np.split(flat, offsets[1:-1] - offsets[0]) if len(lists) else []


@dataclass(frozen=True)
class MergedColumn:
    """A whole column's statistics, merged from its partitions' summaries."""

    rows: int
    nulls: int
    finite: int
    min: float
    max: float
    mean: float
    m2: float
    sketch_values: np.ndarray
    """Sorted points of the merged sketch ..."""
    sketch_weights: np.ndarray
    """... and how many values each stands for."""
    rank_error: int
    """The sum of the partitions' `ColumnSummary.rank_error` (the module's bound E)."""

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value."""
        return math.sqrt(self.m2 / (self.finite - 1)) if self.finite > 1 else 0.0

    def quantile(self, q: float) -> float:
        """Linear interpolation at position q * (finite - 1) of the sketch's values."""
        position = q * (self.finite - 1)
        low = math.floor(position)
        cumulative = np.cumsum(self.sketch_weights)
        at = np.searchsorted(cumulative, [low, min(low + 1, self.finite - 1)], side="right")
        below, above = self.sketch_values[at]
        return float(below + (above - below) * (position - low))

    def histogram(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of `bins` equal bins between the exact min and max."""
        counts, edges = np.histogram(
            self.sketch_values, bins=bins, range=(self.min, self.max), weights=self.sketch_weights
        )
        return counts.astype("int64"), edges


def merge(summaries: Sequence[ColumnSummary]) -> MergedColumn:
    """One column's statistics from the summaries of its partitions (see the module)."""
    present = [s for s in summaries if s.finite]
    finite = sum(s.finite for s in present)
    mean = math.fsum(s.total for s in present) / finite if finite else math.nan
    m2 = math.fsum(s.m2 + s.finite * (s.mean - mean) ** 2 for s in present)
    values = np.concatenate([s.sketch_values for s in present] or [np.empty(0)])
    weights = np.concatenate([s.sketch_weights for s in present] or [np.empty(0, "int64")])
    order = np.argsort(values, kind="stable")  # timsort: fast on the partitions' sorted runs
    return MergedColumn(
        rows=sum(s.rows for s in summaries),
        nulls=sum(s.nulls for s in summaries),
        finite=finite,
        min=min((s.min for s in present), default=math.nan),
        max=max((s.max for s in present), default=math.nan),
        mean=mean,
        m2=m2,
        sketch_values=values[order],
        sketch_weights=weights[order],
        rank_error=sum(s.rank_error for s in summaries),
    )
