"""Where a snapshot keeps the summaries of its partitions, and how a commit updates them.

    snapshots/000042/_summaries/years/daily_features.parquet    one row per closed year
    snapshots/000042/_summaries/months/daily_features.parquet   one per month of the open year

A year is closed once the dataset has a partition of a later year; the open year is the
newest. A closed year is summarized as a whole (from the rows of its twelve partitions, so
its sketch has the same error bound as a month's: half a block of its own size, see
`summaries.py`), the months of the open year one by one. The statistics merge about
``years + 12`` summaries per column, not one per month of the whole history, and a daily
batch rewrites only the small months file: the years file is linked from the previous
snapshot. A year is summarized again when a partition of it changes (a late or corrected
bar) and once when it closes (the first batch of a new year reads the twelve partitions of
the year before).

A snapshot of an earlier release has one file of month rows (`_summaries/<dataset>`) or
none; its rows are read as month rows and those missing are computed from the partitions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops.features.summaries import SUMMARY_SCHEMA, is_numeric, summarize_table

SUMMARIES = "_summaries"
YEARS = "years"
MONTHS = "months"


class Snapshot(Protocol):
    """What this module needs of `offline.Snapshot` (which imports this module)."""

    @property
    def root(self) -> Path: ...

    def partitions(self, dataset: str) -> dict[str, Path]: ...


def summary_file(snapshot: Snapshot, dataset: str, kind: str) -> Path:
    """The `kind` (YEARS or MONTHS) summaries of `dataset` in `snapshot`."""
    return snapshot.root / SUMMARIES / kind / dataset


def _legacy_file(snapshot: Snapshot, dataset: str) -> Path:
    """The month rows of every partition, as an earlier release stored them."""
    return snapshot.root / SUMMARIES / dataset


def open_year(months: Iterable[str]) -> str:
    """The newest year of partitions named '2024-01' ('' for none)."""
    return max((m[:4] for m in months), default="")


def partition_summaries(snapshot: Snapshot, dataset: str) -> pa.Table:
    """Summary rows that cover every partition of `dataset` once: a closed year's row, or
    the rows of its months where the snapshot has no row of the year (an earlier release's
    snapshot); the months it has no row of are computed from their partitions."""
    parts = snapshot.partitions(dataset)
    years = _read(summary_file(snapshot, dataset, YEARS))
    covered = set(years.column("period").to_pylist())
    months = _month_rows(snapshot, dataset)
    months = months.filter(pc.invert(pc.is_in(_year_of(months), _strings(covered))))
    have = set(months.column("period").to_pylist())
    missing = [
        summarize_table(pq.read_table(part), month)
        for month, part in parts.items()
        if month[:4] not in covered and month not in have
    ]
    return pa.concat_tables([years, months, *missing])


def stage_summaries(
    new: Snapshot,
    base: Snapshot | None,
    dataset: str,
    changed: Iterable[str],
    fresh: list[pa.Table],
    pool: ThreadPoolExecutor,
) -> None:
    """Write the new snapshot's summaries of `dataset`, whose partitions are staged.

    `changed` are the months the commit wrote or deleted, `fresh` the summary rows of the
    ones it wrote (of the open year; those of a closed year may be left out). Unchanged
    closed years keep the base's row (the file is linked when all do); a changed or newly
    closed year is summarized from its partitions, a few years at a time in `pool`."""
    parts = new.partitions(dataset)
    newest = open_year(parts)
    closed = sorted({m[:4] for m in parts if m[:4] < newest})
    touched = {m[:4] for m in changed}
    old_years = _read(summary_file(base, dataset, YEARS)) if base else SUMMARY_SCHEMA.empty_table()
    old_closed = set(old_years.column("period").to_pylist())
    kept = [y for y in closed if y in old_closed and y not in touched]
    target = summary_file(new, dataset, YEARS)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = summary_file(base, dataset, YEARS) if base is not None else None
    if source is not None and source.exists() and kept == closed and old_closed == set(closed):
        os.link(source, target)  # no closed year changed: the file is the base's
    else:
        redone = [pool.submit(_summarize_year, parts, year) for year in closed if year not in kept]
        rows = [old_years.filter(pc.is_in(old_years.column("period"), _strings(kept)))]
        _write(target, pa.concat_tables([*rows, *(r.result() for r in redone)]))
    _stage_months(new, base, dataset, parts, newest, set(changed), fresh)


def _stage_months(
    new: Snapshot,
    base: Snapshot | None,
    dataset: str,
    parts: Mapping[str, Path],
    newest: str,
    changed: set[str],
    fresh: list[pa.Table],
) -> None:
    """The open year's month rows: fresh for the months written, the base's for the others
    (computed from the partition where the base has none)."""
    months = [m for m in parts if m[:4] == newest]
    rows = pa.concat_tables([*fresh, SUMMARY_SCHEMA.empty_table()])
    if base is not None:
        old = _month_rows(base, dataset)
        unchanged = old.filter(pc.invert(pc.is_in(old.column("period"), _strings(changed))))
        rows = pa.concat_tables([rows, unchanged])
    rows = rows.filter(pc.is_in(rows.column("period"), _strings(months)))
    have = set(rows.column("period").to_pylist())
    missing = [summarize_table(pq.read_table(parts[m]), m) for m in months if m not in have]
    _write(summary_file(new, dataset, MONTHS), pa.concat_tables([rows, *missing]))


def _month_rows(snapshot: Snapshot, dataset: str) -> pa.Table:
    """The month rows a snapshot stores: of the open year, or of every month in a snapshot
    of an earlier release."""
    return pa.concat_tables(
        [_read(summary_file(snapshot, dataset, MONTHS)), _read(_legacy_file(snapshot, dataset))]
    )


def _summarize_year(parts: Mapping[str, Path], year: str) -> pa.Table:
    """The summary rows of a whole year, from the numeric columns of its partitions."""
    files = [path for month, path in parts.items() if month[:4] == year]
    schema = pq.read_schema(files[0])
    numeric = [f.name for f in schema if is_numeric(f.type)]
    table = pa.concat_tables([pq.read_table(f, columns=numeric) for f in files])
    return summarize_table(table, year)


def _read(path: Path) -> pa.Table:
    """Stored summary rows (none when the file is absent); an earlier release's file names
    the period `month`."""
    if not path.exists():
        return SUMMARY_SCHEMA.empty_table()
    table = pq.read_table(path)
    if "month" in table.column_names:
        table = table.rename_columns(["period" if n == "month" else n for n in table.column_names])
    return table.select(SUMMARY_SCHEMA.names).cast(SUMMARY_SCHEMA)


def _write(path: Path, rows: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows.sort_by([("period", "ascending"), ("column", "ascending")]), path)


def _year_of(rows: pa.Table) -> pa.Array:
    return pc.utf8_slice_codeunits(rows.column("period"), 0, 4)


def _strings(values: Iterable[str]) -> pa.Array:
    return pa.array(sorted(values), pa.string())
