"""The offline store on disk: three parquet files in the state folder's data directory.

`bars.parquet` is the source of truth; `daily_features.parquet` and `labels.parquet` are
computed from it. An ingest writes each file to a temp file and renames it, bars first, so
a reader sees an old or a new file, never half of one. The three renames are not atomic
as a set: a process killed between them leaves bars newer than features and labels.
`checked_path` finds that on the first read after it (cheap: per-ticker row counts and
last dates, in DuckDB, once per version of the files) and refuses reads with an error
that says how to repair: `mlops features repair` recomputes features and labels from the
bars. Temp files of killed writers are removed on the next open.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import OfflineStoreInconsistentError
from mlops.runs import current_owner, owner_alive
from mlops.settings import Settings

if TYPE_CHECKING:
    from filelock import BaseFileLock

BARS_FILE = "bars.parquet"
FEATURES_FILE = "daily_features.parquet"
LABELS_FILE = "labels.parquet"
OFFLINE_FILES = (BARS_FILE, FEATURES_FILE, LABELS_FILE)
_TEMP_SUFFIX = ".tmp"
_checked: dict[Path, tuple[tuple[int, ...], str | None]] = {}
_checked_lock = threading.Lock()


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
    writer = current_owner().replace(":", "~")
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}@{writer}~", suffix=_TEMP_SUFFIX
    )
    os.close(fd)
    return Path(tmp)


def remove_dead_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files in `folder` whose writer process is gone (same host only)."""
    removed = []
    for temp in folder.glob(f".*@*{_TEMP_SUFFIX}") if folder.is_dir() else []:
        writer = temp.name.rpartition("@")[2].rsplit("~", 1)[0].replace("~", ":")
        if owner_alive(writer) is False:
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def exclusive_write(settings: Settings) -> BaseFileLock:
    """One writer of the offline files at a time (ingest, repair), across processes: a
    second ingest merges onto the first one's bars instead of overwriting them."""
    from filelock import FileLock

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(settings.data_dir / ".write.lock")


def checked_path(settings: Settings, name: str) -> Path:
    """The path of one offline file, after checking the three files agree (see module)."""
    problem = consistency_problem(settings)
    if problem and _being_written(settings):
        raise OfflineStoreInconsistentError(
            f"The offline store is being written by an ingest ({problem}); retry in a moment.",
            {"retry": True},
        )
    if problem:
        raise OfflineStoreInconsistentError(
            f"The offline store is inconsistent: {problem}. An ingest was probably stopped "
            "while writing it. Run `mlops features repair` to recompute features and labels "
            "from the bars (nothing else is read until then).",
            {"repair": "mlops features repair"},
        )
    return settings.data_dir / name


def _being_written(settings: Settings) -> bool:
    """Whether a live writer holds the offline store's write lock right now."""
    from filelock import Timeout

    try:
        with exclusive_write(settings).acquire(timeout=0):
            return False
    except Timeout:
        return True


def consistency_problem(settings: Settings) -> str | None:
    """What disagrees between bars, features and labels, or None (also when empty)."""
    remove_dead_temp_files(settings.data_dir)
    paths = [settings.data_dir / name for name in OFFLINE_FILES]
    if not all(p.exists() for p in paths):
        present = [p.name for p in paths if p.exists()]
        return f"only {', '.join(present)} exist" if present else None
    stats = [p.stat() for p in paths]  # a rename gives a new inode: the key of a version
    stamp = tuple(v for st in stats for v in (st.st_ino, st.st_mtime_ns, st.st_size))
    with _checked_lock:
        cached = _checked.get(settings.data_dir)
        if cached is None or cached[0] != stamp:
            cached = (stamp, _compare(*paths))
            _checked[settings.data_dir] = cached
    return cached[1]


def _compare(bars: Path, features: Path, labels: Path) -> str | None:
    """Per ticker: features have one row per bar up to the last bar; labels one row per
    bar but the last (its next day is not known yet)."""
    import duckdb

    query = """
        WITH b AS (SELECT ticker, count(*) AS n, max(epoch(date)) AS last
                   FROM read_parquet($bars) GROUP BY ticker),
             f AS (SELECT ticker, count(*) AS n, max(epoch(event_timestamp)) AS last
                   FROM read_parquet($features) GROUP BY ticker),
             l AS (SELECT ticker, count(*) AS n FROM read_parquet($labels) GROUP BY ticker)
        SELECT coalesce(b.ticker, f.ticker, l.ticker) AS ticker, b.n, f.n, l.n,
               to_timestamp(b.last)::DATE, to_timestamp(f.last)::DATE
        FROM b FULL JOIN f USING (ticker) FULL JOIN l USING (ticker)
        WHERE b.n IS DISTINCT FROM f.n OR b.last IS DISTINCT FROM f.last
           OR coalesce(l.n, 0) IS DISTINCT FROM greatest(coalesce(b.n, 0) - 1, 0)
        ORDER BY 1
    """
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        rows = connection.execute(
            query, {"bars": str(bars), "features": str(features), "labels": str(labels)}
        ).fetchall()
    if not rows:
        return None
    ticker, bar_rows, feature_rows, label_rows, last_bar, last_feature = rows[0]
    return (
        f"{len(rows)} ticker(s) differ, e.g. {ticker}: {bar_rows or 0} bars to {last_bar}, "
        f"{feature_rows or 0} feature rows to {last_feature}, {label_rows or 0} label rows"
    )
