"""The offline store on disk: three datasets of month partitions, committed as snapshots.

    offline/
      current -> snapshots/000042                 (a relative symlink: the committed state)
      snapshots/000042/bars.parquet/month=2024-01/part.parquet
      snapshots/000042/daily_features.parquet/month=2024-01/part.parquet
      snapshots/000042/labels.parquet/month=2024-01/part.parquet
      snapshots/000042/tickers.parquet            (per ticker: first and last date, bars)
      snapshots/000042/_summaries/years/daily_features.parquet   (per closed year, column)
      snapshots/000042/_summaries/months/daily_features.parquet  (per month of the open year)

Each dataset is hive-partitioned parquet, so DuckDB (Feast's offline store), pyarrow, Spark
and Ray read `current/<dataset>` as one table (with a `month` column from the folder
names). `bars.parquet` is the source of truth; features and labels are computed from it.
The numeric columns of features and labels have summaries (`summaries.py`): one per closed
year and one per month of the newest year (`summary_files.py`). The feature statistics are
merged from them; a daily batch rewrites only the months' file.

A write builds a new snapshot folder: the partitions it changes are new files, every other
partition is a hard link to the previous snapshot's file (no copy). The snapshot becomes
visible when `current` is replaced by a symlink to it (one atomic rename). A reader that
resolves `current` once (`offline_state.open_snapshot`) sees one consistent state of all
three datasets, however long it reads; a crash at any point leaves `current` on the old
snapshot or the new one. Folders of killed writers are removed on the next write, and old
snapshots once no reader can still be starting on them (`SNAPSHOT_GRACE_S`).

This module is the layout and the commit. The rows a change writes are computed in
`offline_changes.py`, and `offline_state.open_snapshot` migrates a store of the previous
release (three single parquet files in `offline/`) on first open.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.features.compute import FEATURE_COLUMNS, LABEL_COLUMN, STATE_COLUMNS
from mlops.features.summaries import summarize_table
from mlops.features.summary_files import open_year, stage_summaries
from mlops.runs import current_owner, owner_alive
from mlops.settings import Settings

if TYPE_CHECKING:
    import duckdb
    from filelock import BaseFileLock

BARS_FILE = "bars.parquet"
FEATURES_FILE = "daily_features.parquet"
LABELS_FILE = "labels.parquet"
OFFLINE_FILES = (BARS_FILE, FEATURES_FILE, LABELS_FILE)
"""The datasets (folders named like Spark's `df.write.parquet("bars.parquet")`)."""
TIME_COLUMN = {BARS_FILE: "date", FEATURES_FILE: "event_timestamp", LABELS_FILE: "event_timestamp"}
SCHEMAS = {
    BARS_FILE: pa.schema(
        [("ticker", pa.string()), ("date", pa.timestamp("ns"))]
        + [(c, pa.float64()) for c in ("open", "high", "low", "close", "volume")]
    ),
    FEATURES_FILE: pa.schema(
        [("ticker", pa.string()), ("event_timestamp", pa.timestamp("ns", tz="UTC"))]
        + [(c, pa.float64()) for c in (*FEATURE_COLUMNS, *STATE_COLUMNS)]
    ),
    LABELS_FILE: pa.schema(
        [
            ("ticker", pa.string()),
            ("event_timestamp", pa.timestamp("ns", tz="UTC")),
            (LABEL_COLUMN, pa.int64()),
        ]
    ),
}
"""The columns of each offline dataset, as every partition stores them."""
PARTITION_KEY = "month"
PART_FILE = "part.parquet"
TICKERS_FILE = "tickers.parquet"
SUMMARIZED = (FEATURES_FILE, LABELS_FILE)
"""The datasets whose partitions get summaries: those feature views read."""
CURRENT = "current"
SNAPSHOTS = "snapshots"
SNAPSHOT_GRACE_S = 600.0
"""How long a replaced snapshot is kept for readers that resolved `current` before."""
WRITE_THREADS = min(4, os.cpu_count() or 1)
"""Partitions a commit builds and writes at once (pyarrow and numpy release the GIL)."""
_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Snapshot:
    """One committed state of the offline store (a folder that never changes)."""

    root: Path
    _listed: dict[str, dict[str, Path]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """dataset -> its partitions, listed once (the folder never changes once committed)."""

    @property
    def id(self) -> str:
        return self.root.name

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / dataset

    def partitions(self, dataset: str) -> dict[str, Path]:
        """Month ('2024-01') -> partition file, oldest first."""
        if dataset not in self._listed:
            folder = self.dataset_dir(dataset)
            prefix = f"{PARTITION_KEY}="
            found = {}
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    found = {
                        e.name[len(prefix) :]: Path(e.path, PART_FILE)
                        for e in entries
                        if e.name.startswith(prefix)
                    }
            self._listed[dataset] = dict(sorted(found.items()))
        return dict(self._listed[dataset])

    def files(self, dataset: str, months: set[str] | None = None) -> list[Path]:
        parts = self.partitions(dataset)
        return [path for month, path in parts.items() if months is None or month in months]

    def has(self, dataset: str) -> bool:
        return bool(self.partitions(dataset))

    def glob(self, dataset: str) -> str:
        """A DuckDB/pyarrow glob of every partition file of `dataset`."""
        return str(self.dataset_dir(dataset) / f"{PARTITION_KEY}=*" / PART_FILE)

    def columns(self, dataset: str) -> list[str]:
        files = self.files(dataset)
        return pq.read_schema(files[-1]).names if files else []

    def read(
        self,
        dataset: str,
        columns: list[str] | None = None,
        months: set[str] | None = None,
        tickers: list[str] | None = None,
    ) -> pd.DataFrame:
        """Rows of `dataset` (of some months, some tickers), without the partition column."""
        return self.read_table(dataset, columns, months, tickers).to_pandas()

    def read_table(
        self,
        dataset: str,
        columns: list[str] | None = None,
        months: set[str] | None = None,
        tickers: list[str] | None = None,
    ) -> pa.Table:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        files = self.files(dataset, months)
        if not files:
            return _empty_table(dataset, columns)
        data = ds.dataset([str(f) for f in files], format="parquet")
        where = None if tickers is None else pc.field("ticker").isin(pa.array(tickers, pa.string()))
        return data.to_table(columns=columns, filter=where)

    def tickers(self) -> pd.DataFrame:
        """Per ticker: `first` and `last` bar date and the number of `bars` (read once per
        snapshot, which never changes; an ingest asks for it several times)."""
        return self._tickers.copy()

    @cached_property
    def _tickers(self) -> pd.DataFrame:
        path = self.root / TICKERS_FILE
        if not path.exists():
            return pd.DataFrame(
                {
                    "ticker": pd.Series(dtype=object),
                    "first": pd.Series(dtype="datetime64[ns]"),
                    "last": pd.Series(dtype="datetime64[ns]"),
                    "bars": pd.Series(dtype="int64"),
                }
            )
        return pd.read_parquet(path)


def _empty_table(dataset: str, columns: list[str] | None) -> pa.Table:
    schema = SCHEMAS[dataset]
    names = [n for n in (columns or schema.names) if n in schema.names]
    return pa.table({n: pa.array([], schema.field(n).type) for n in names})


# --------------------------------------------------------------------------- reading


def utc_connection() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose `TIMESTAMPTZ` values are UTC (the session time zone decides
    how naive times cast and how times come back to Python)."""
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def dataset_name(path: str | Path) -> str:
    """The dataset a Feast source path points at ('.../current/labels.parquet/month=*/...'
    -> 'labels.parquet'); a single-file path is its file name."""
    parts = Path(path).parts
    for name in OFFLINE_FILES:
        if name in parts:
            return name
    return Path(path).name


def source_path(settings: Settings, dataset: str) -> str:
    """What a Feast `FileSource` of `dataset` points at: every partition of the current
    snapshot (DuckDB expands the glob when it reads)."""
    return str(settings.data_dir / CURRENT / dataset / f"{PARTITION_KEY}=*" / PART_FILE)


# --------------------------------------------------------------------------- writing


def month_keys(times: pd.Series | np.ndarray) -> np.ndarray:
    """'YYYY-MM' of each timestamp (naive or UTC), without a Python object per value."""
    codes, labels = month_codes(times)
    return labels[codes]


def month_codes(times: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(for each timestamp the index of its month in `labels`, the sorted 'YYYY-MM' labels):
    small integers to sort and group on, instead of 2M strings.

    The calendar is worked out once per day of the range, not per timestamp (a history
    spans a few thousand days), and the months are counted, not sorted."""
    values = pd.Series(times) if isinstance(times, np.ndarray) else times
    nanoseconds = values.to_numpy(dtype="datetime64[ns]").view("int64")  # UTC if tz-aware
    if not len(nanoseconds):
        return np.empty(0, "int16"), np.empty(0, "<U7")
    days = nanoseconds // _DAY_NS
    first = days.min()
    days -= first
    calendar = np.arange(first, first + days.max() + 1).astype("datetime64[D]")
    month_of_day = calendar.astype("datetime64[M]").view("int64")
    first_month = month_of_day[0]
    month_of_day -= first_month
    months = month_of_day.astype(_code_type(int(month_of_day[-1]) + 1))[days]
    present = np.bincount(months) > 0
    codes = (np.cumsum(present) - 1).astype(months.dtype)[months]
    labels = (np.flatnonzero(present) + first_month).astype("datetime64[M]")
    return codes, np.datetime_as_string(labels, unit="M")


_DAY_NS = 86_400 * 10**9


def _code_type(count: int) -> str:
    """int16 when it holds every code: numpy's stable argsort is then a radix sort."""
    return "int16" if count <= np.iinfo("int16").max else "int64"


Partition: TypeAlias = pa.Table | Callable[[], pa.Table | None] | None
"""A partition's whole new content (None: delete it), or what builds it when written."""
PartitionChanges: TypeAlias = Mapping[str, Mapping[str, Partition]]
"""dataset -> month -> the partition's new content."""


def commit(
    settings: Settings,
    base: Snapshot | None,
    changes: PartitionChanges,
    tickers: pd.DataFrame | None = None,
) -> Snapshot:
    """Write a new snapshot (`base` with `changes`) and make it current, atomically.

    Call it holding `exclusive_write`, with `base` read under the same lock."""
    snapshots = settings.data_dir / SNAPSHOTS
    snapshots.mkdir(parents=True, exist_ok=True)
    remove_dead_temp_files(snapshots)
    staging = Path(
        tempfile.mkdtemp(dir=snapshots, prefix=f".snapshot@{_writer_tag()}~", suffix=_TEMP_SUFFIX)
    )
    try:
        with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="offline-write") as pool:
            for dataset in OFFLINE_FILES:
                _stage_dataset(staging, base, dataset, changes.get(dataset, {}), pool)
        _stage_tickers(staging, base, tickers)
        final = snapshots / _next_id(snapshots)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_current_at(settings.data_dir, final)
    remove_old_snapshots(settings.data_dir)
    return Snapshot(final)


def _stage_dataset(
    staging: Path,
    base: Snapshot | None,
    dataset: str,
    changed: Mapping[str, Partition],
    pool: ThreadPoolExecutor,
) -> None:
    """Write the changed partitions, a few at a time in `pool` (each is built only when
    written, so a full ingest never holds every partition at once), and link the others."""
    old = base.partitions(dataset) if base is not None else {}
    months = sorted(set(old) | set(changed))
    newest = open_year(months)  # a closed year's months are summarized as a whole year
    written = []
    (staging / dataset).mkdir()
    for month in months:
        folder = os.path.join(staging, dataset, f"{PARTITION_KEY}={month}")
        if month in changed:
            summarize = dataset in SUMMARIZED and month[:4] == newest
            task = pool.submit(_write_partition, Path(folder), month, changed[month], summarize)
            written.append(task)
        else:  # strings, not Paths: a long history links hundreds of files
            os.mkdir(folder)
            os.link(old[month], os.path.join(folder, PART_FILE))
    try:
        fresh = [summary for summary in (w.result() for w in written) if summary is not None]
    except BaseException:
        for waiting in written:  # the snapshot is abandoned: write no more of it
            waiting.cancel()
        raise
    if dataset in SUMMARIZED:
        stage_summaries(Snapshot(staging), base, dataset, changed, fresh, pool)


def _write_partition(
    folder: Path, month: str, content: Partition, summarize: bool
) -> pa.Table | None:
    """Build and write one partition; its summary rows if `summarize`.

    Only the columns that repeat (ticker, time, label) are dictionary-encoded: a
    dictionary of every distinct float made a float column slower to write and larger."""
    table = content() if callable(content) else content
    if table is None or not table.num_rows:
        return None
    folder.mkdir(parents=True)
    repeating = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(table, folder / PART_FILE, use_dictionary=repeating)
    return summarize_table(table, month) if summarize else None


def _stage_tickers(staging: Path, base: Snapshot | None, tickers: pd.DataFrame | None) -> None:
    if tickers is not None:
        tickers.to_parquet(staging / TICKERS_FILE, index=False)
    elif base is not None and (base.root / TICKERS_FILE).exists():
        os.link(base.root / TICKERS_FILE, staging / TICKERS_FILE)


def _next_id(snapshots: Path) -> str:
    ids = [int(p.name) for p in snapshots.iterdir() if p.name.isdigit()]
    return f"{max(ids, default=0) + 1:06d}"


def _point_current_at(data_dir: Path, snapshot: Path) -> None:
    """Replace the `current` symlink in one rename (readers see the old or the new one)."""
    link = data_dir / f".{CURRENT}@{_writer_tag()}~link{_TEMP_SUFFIX}"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(snapshot, data_dir), link)
    os.replace(link, data_dir / CURRENT)
    _fsync_dir(data_dir)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_old_snapshots(data_dir: Path, grace_s: float = SNAPSHOT_GRACE_S) -> list[Path]:
    """Delete replaced snapshots older than `grace_s` (the previous one is always kept)."""
    snapshots = data_dir / SNAPSHOTS
    try:
        current = Path(os.readlink(data_dir / CURRENT)).name
    except FileNotFoundError:
        return []
    old = sorted(p for p in snapshots.iterdir() if p.name.isdigit() and p.name < current)
    removed = []
    for snapshot in old[:-1]:
        if time.time() - snapshot.stat().st_mtime > grace_s:
            shutil.rmtree(snapshot, ignore_errors=True)
            removed.append(snapshot)
    return removed


def _writer_tag() -> str:
    return current_owner().replace(":", "~")


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a parquet file so readers see the old file or the new one, never a half.

    The temp file's name carries its writer (`.<name>@<host>~<pid>~<start>~<random>.tmp`),
    so the next open can tell a killed writer's leftover from a live writer's file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def temp_path(path: Path) -> Path:
    """A new empty temp file beside `path`, named after its writer (see above)."""
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}@{_writer_tag()}~", suffix=_TEMP_SUFFIX
    )
    os.close(fd)
    return Path(tmp)


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files and folders in `folder` whose writer process is gone (same
    host only)."""
    removed = []
    for temp in folder.glob(f".*@*{_TEMP_SUFFIX}") if folder.is_dir() else []:
        writer = temp.name.rpartition("@")[2].rsplit("~", 1)[0].replace("~", ":")
        if owner_alive(writer) is False:
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp, ignore_errors=True)
            else:
                temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def exclusive_write(settings: Settings) -> BaseFileLock:
    """One writer of the offline store at a time (ingest, repair, migration), across
    processes: a second ingest merges onto the first one's snapshot."""
    from filelock import FileLock

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(settings.data_dir / ".write.lock")


# --------------------------------------------------------------------------- migration


def legacy_files(data_dir: Path) -> list[Path]:
    """The single parquet files of a previous release's store that are still there."""
    return [data_dir / name for name in OFFLINE_FILES if (data_dir / name).is_file()]
