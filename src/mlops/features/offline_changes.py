"""What an ingest, a repair or a migration changes in the offline store: the rows computed
from bars that replace stored rows, committed as a new snapshot (`offline.commit`).

`ingest.py` plans a change from a batch and the stored rows around it (`plan_change`);
`full_rebuild` recomputes everything from a set of bars, which is also how a store of the
previous release (three single parquet files in `offline/`) is migrated: its bars become
the first snapshot, features and labels are recomputed from them, and the old files are
removed only once that snapshot is committed (`migrate_legacy_store`, run on first open by
`offline_state.open_snapshot`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops.features.compute import _days, _texts, compute_frames
from mlops.features.offline import (
    BARS_FILE,
    CURRENT,
    FEATURES_FILE,
    LABELS_FILE,
    SCHEMAS,
    TIME_COLUMN,
    Partition,
    Snapshot,
    commit,
    exclusive_write,
    legacy_files,
    month_codes,
    remove_dead_temp_files,
)
from mlops.settings import Settings

BAR_COLUMNS = ("ticker", "date", "open", "high", "low", "close", "volume")
_migrate_lock = threading.Lock()


@dataclass
class OfflineChange:
    """What an ingest computed: the rows it replaces and the rows that replace them.

    For each ticker in `starts`, every stored bar and feature row from its start date on is
    replaced by `bars` / `features`; labels from `label_starts` on by `labels`."""

    base: Snapshot | None
    starts: pd.Series
    label_starts: pd.Series
    bars: pd.DataFrame
    features: pd.DataFrame
    labels: pd.DataFrame
    tickers: pd.DataFrame
    computed_on: str | None = None
    """Where the features were computed when not in this process: its Ray cluster."""

    def release(self) -> None:
        """Drop the rows once they are written (`starts` stays: the tickers touched)."""
        self.bars = self.features = self.labels = self.tickers = pd.DataFrame()


def as_bars(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch in the stored bars' columns: one row per (ticker, calendar day)."""
    frame = pd.DataFrame(
        {
            "ticker": _texts(batch["ticker"]),
            "date": _days(batch["date"]),
            **{c: batch[c].to_numpy(dtype="float64") for c in BAR_COLUMNS[2:]},
        },
        copy=False,
    )
    return frame


def sorted_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` sorted by ticker and date, keeping the last of rows with the same (ticker,
    date): a later batch row replaces a stored one. Sorted on integer codes in numpy (a
    pandas sort on 2M ticker strings took seconds)."""
    codes, _ = pd.factorize(frame["ticker"], sort=True)
    day = frame["date"].to_numpy(dtype="datetime64[ns]").view("int64")
    order = np.lexsort((day, codes))  # stable: equal keys keep their input order
    codes, day = codes[order], day[order]
    last = np.r_[(codes[1:] != codes[:-1]) | (day[1:] != day[:-1]), True]
    if last.all() and (order[1:] > order[:-1]).all():
        return frame  # already sorted and unique: no copy
    return frame.take(order[last]).reset_index(drop=True)


def starts_of(batch: pd.DataFrame) -> pd.Series:
    """ticker -> the batch's first date of that ticker (where recomputation starts)."""
    return batch.groupby("ticker", sort=True)["date"].min()


def updated_tickers(
    snapshot: Snapshot | None, merged: pd.DataFrame, stored_from: pd.DataFrame
) -> pd.DataFrame:
    """The ticker index after the change: first and last date and bar count per ticker."""
    old = snapshot.tickers().set_index("ticker") if snapshot is not None else None
    grouped = merged.groupby("ticker")["date"]
    new = pd.DataFrame({"first": grouped.min(), "last": grouped.max(), "bars": grouped.size()})
    if old is None or old.empty:
        return new.rename_axis("ticker").reset_index()
    replaced = stored_from.groupby("ticker").size().reindex(new.index, fill_value=0)
    before = old.reindex(new.index)
    new["bars"] = new["bars"] + (before["bars"].fillna(0).astype("int64") - replaced)
    new["first"] = before["first"].where(before["first"] < new["first"], new["first"])
    new["last"] = before["last"].where(before["last"] > new["last"], new["last"])
    combined = pd.concat([old.drop(index=new.index, errors="ignore"), new]).sort_index()
    combined["bars"] = combined["bars"].astype("int64")
    return combined.rename_axis("ticker").reset_index()


def _partition_changes(
    base: Snapshot | None, dataset: str, rows: pd.DataFrame, cuts: pd.Series
) -> dict[str, Partition]:
    """What builds the new content of each month partition `rows` fall in: the stored
    rows minus those of a ticker in `cuts` at or after its cut, plus `rows` (built when
    the commit writes it, a few months at a time).

    `rows` become one arrow table (its numbers are not copied) that each month takes its
    rows from."""
    time = TIME_COLUMN[dataset]
    schema = SCHEMAS[dataset]
    table = pa.Table.from_pandas(rows, schema, preserve_index=False)
    codes, months = month_codes(rows[time])
    order = np.argsort(codes, kind="stable")  # stable: each month keeps the rows' order
    bounds = np.searchsorted(codes[order], np.arange(len(months) + 1))
    stored = base.partitions(dataset) if base is not None else {}
    cut_tickers = pa.array(cuts.index, pa.string())
    cut_times = pa.array(cuts if dataset == BARS_FILE else cuts.dt.tz_localize("UTC"))

    def build(month: str, index: np.ndarray) -> pa.Table:
        part = table.take(index)
        if base is None or month not in stored:
            return part
        old = base.read_table(dataset, schema.names, {month})
        cut = pc.take(cut_times, pc.index_in(old.column("ticker"), value_set=cut_tickers))
        old = old.filter(pc.or_kleene(pc.is_null(cut), pc.less(old.column(time), cut)))
        merged = pa.concat_tables([old.cast(table.schema), part])
        return merged.sort_by([("ticker", "ascending"), (time, "ascending")])

    return {
        str(month): partial(build, str(month), order[lo:hi])
        for month, lo, hi in zip(months, bounds[:-1], bounds[1:], strict=True)
    }


class _ChangesByDataset(Mapping[str, Mapping[str, Partition]]):
    """dataset -> what builds its partitions, made when the commit stages that dataset:
    one dataset's arrow table and month index are held at a time, not all three."""

    def __init__(self, change: OfflineChange) -> None:
        self._change = change

    def __getitem__(self, dataset: str) -> Mapping[str, Partition]:
        change = self._change
        rows, cuts = {
            BARS_FILE: (change.bars, change.starts),
            FEATURES_FILE: (change.features, change.starts),
            LABELS_FILE: (change.labels, change.label_starts),
        }[dataset]
        return _partition_changes(change.base, dataset, rows, cuts)

    def __iter__(self) -> Iterator[str]:
        return iter((BARS_FILE, FEATURES_FILE, LABELS_FILE))

    def __len__(self) -> int:
        return 3


def write_offline(settings: Settings, change: OfflineChange) -> Snapshot:
    """Commit the change as a new snapshot: only the month partitions it touches are
    rewritten, all others are linked from the previous snapshot."""
    return commit(settings, change.base, _ChangesByDataset(change), change.tickers)


def computed_frames(
    settings: Settings, bars: pd.DataFrame, context: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """`compute_frames` of bars sorted by ticker and date, and where it ran: as Ray tasks
    (the cluster's name) with `compute_engine: ray` for at least `ray_compute_min_bars`
    bars, else in this process (None). A day's batch is not worth the trip: connecting to
    the cluster alone costs more than computing a day of 1,150 tickers here (0.06 s)."""
    if settings.compute_engine == "ray" and len(bars) >= settings.ray_compute_min_bars:
        from mlops.features.compute_ray import compute_frames_on_ray
        from mlops.ray_cluster import head_address

        where = f"Ray cluster at {head_address(settings) or 'a Ray instance of this process'}"
        return (*compute_frames_on_ray(settings, bars, context), where)
    return (*compute_frames(bars, context), None)


def full_rebuild(settings: Settings, bars: pd.DataFrame) -> Snapshot:
    """A new snapshot holding `bars` and the features and labels recomputed from them
    (a migrated store, `mlops features repair`). Call it holding `exclusive_write`."""
    merged = sorted_bars(as_bars(bars))
    features, labels, where = computed_frames(settings, merged, None)
    starts = starts_of(merged)
    change = OfflineChange(
        base=None,
        starts=starts,
        label_starts=starts,
        bars=merged,
        features=features,
        labels=labels,
        tickers=updated_tickers(None, merged, merged.iloc[:0]),
        computed_on=where,
    )
    return write_offline(settings, change)


def migrate_legacy_store(settings: Settings) -> Snapshot | None:
    """Turn a previous release's single files into the first snapshot (see module)."""
    with _migrate_lock, exclusive_write(settings):
        legacy = legacy_files(settings.data_dir)
        if not legacy:
            return None
        current = settings.data_dir / CURRENT
        bars_file = settings.data_dir / BARS_FILE
        snapshot = None
        if not current.exists() and bars_file.is_file():
            bars = pd.read_parquet(bars_file)
            snapshot = full_rebuild(settings, bars)
        for path in legacy:  # only once the snapshot is current
            path.unlink(missing_ok=True)
        remove_dead_temp_files(settings.data_dir)
        return snapshot
