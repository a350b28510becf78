"""The offline store's guarantees: a commit replaces the whole state at once and a reader
keeps the snapshot it opened, a failed write changes nothing, leftovers of dead writers
and old snapshots are removed, a store of the previous release is migrated, and ingest
runs of killed processes end `interrupted` instead of `running` forever."""

from __future__ import annotations

import socket
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support.settings import make_settings

from mlops.db import IngestRun, session_scope, utcnow
from mlops.features import ingest, offline, offline_state
from mlops.features.compute import FEATURE_COLUMNS, LABEL_COLUMN
from mlops.features.demo_data import generate_ohlcv
from mlops.reaper import reap_interrupted
from mlops.runs import current_owner
from mlops.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


def _bars(days: int = 60) -> pd.DataFrame:
    return generate_ohlcv(
        n_tickers=3, start=date(2024, 1, 1), end=date(2024, 1, 1) + timedelta(days), seed=3
    )


def _ingest(settings: Settings, bars: pd.DataFrame) -> offline.Snapshot:
    with offline.exclusive_write(settings):
        return ingest.write_offline(settings, ingest.plan_change(settings, bars))


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_empty_store_has_no_snapshot(settings: Settings) -> None:
    assert offline_state.open_snapshot(settings) is None
    assert offline_state.store_is_empty(settings)


def test_a_reader_keeps_its_snapshot_while_a_commit_replaces_current(settings: Settings) -> None:
    first = _ingest(settings, _bars(30))
    held = offline_state.open_snapshot(settings)
    assert held == first
    before = held.read(offline.BARS_FILE)
    second = _ingest(settings, _bars(60))
    assert offline_state.open_snapshot(settings) == second != held
    pd.testing.assert_frame_equal(held.read(offline.BARS_FILE), before)  # never changes
    assert len(second.read(offline.BARS_FILE)) > len(before)
    assert (settings.data_dir / offline.CURRENT).is_symlink()


def test_the_datasets_read_as_one_hive_partitioned_table(settings: Settings) -> None:
    """What Feast's DuckDB store, Spark or Ray see: one table with a `month` column."""
    import duckdb

    snapshot = _ingest(settings, _bars(60))
    path = offline.source_path(settings, offline.FEATURES_FILE)
    with duckdb.connect() as connection:
        months, rows = connection.execute(
            "SELECT count(DISTINCT month), count(*) FROM read_parquet(?, hive_partitioning = true)",
            [path],
        ).fetchone()
    assert months == len(snapshot.partitions(offline.FEATURES_FILE)) == 3
    assert rows == len(snapshot.read(offline.FEATURES_FILE))
    assert offline.dataset_name(path) == offline.FEATURES_FILE


def test_the_same_bars_write_the_same_bytes(tmp_path: Path) -> None:
    """Partitions are written several at a time: the files must not depend on which
    finishes first (the crash tests compare stores byte for byte)."""
    import hashlib

    def files(home: str) -> dict[str, str]:
        snapshot = _ingest(make_settings(tmp_path / home), _bars(120))
        return {
            str(p.relative_to(snapshot.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(snapshot.root.rglob("*.parquet"))
            if p.is_file()
        }

    first = files("one")
    assert len(first) > 10
    assert files("two") == first


def test_month_codes_follow_the_calendar_in_utc() -> None:
    rng = np.random.default_rng(5)
    times = rng.integers(-(10**18), 2 * 10**18, size=20_000).astype("datetime64[ns]")
    for values in (
        times,
        pd.Series(times).dt.tz_localize("UTC").dt.tz_convert("America/New_York"),
    ):
        codes, labels = offline.month_codes(values)
        utc = pd.Series(values).to_numpy(dtype="datetime64[ns]").astype("datetime64[M]")
        expected, inverse = np.unique(utc, return_inverse=True)
        assert list(labels) == list(np.datetime_as_string(expected, unit="M"))
        assert (codes == inverse).all()


def test_a_failed_commit_leaves_current_as_it_was(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ingest(settings, _bars(30))
    before = _tree(settings.data_dir / offline.CURRENT)
    change = ingest.plan_change(settings, _bars(60))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(offline.pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        ingest.write_offline(settings, change)
    assert _tree(settings.data_dir / offline.CURRENT) == before
    assert not list((settings.data_dir / offline.SNAPSHOTS).glob(".*"))  # staging removed


def test_replaced_snapshots_are_removed_after_the_grace_period(settings: Settings) -> None:
    for days in (20, 30, 40, 50):
        _ingest(settings, _bars(days))
    snapshots = settings.data_dir / offline.SNAPSHOTS
    assert len(list(snapshots.iterdir())) == 4  # all within the grace period
    removed = offline.remove_old_snapshots(settings.data_dir, grace_s=0)
    assert [p.name for p in removed] == ["000001", "000002"]  # the previous one is kept
    assert sorted(p.name for p in snapshots.iterdir()) == ["000003", "000004"]
    assert len(offline_state.open_snapshot(settings).read(offline.BARS_FILE)) == len(_bars(50))


def test_a_store_of_the_previous_release_is_migrated_on_first_open(tmp_path: Path) -> None:
    """A state folder written by release 0.1 (three single parquet files): its bars are
    kept as they were, features and labels recomputed, datasets and versions still work."""
    import tarfile

    home = tmp_path / "home"
    home.mkdir()
    with tarfile.open(Path(__file__).parents[2] / "data" / "legacy-store-0.1.tar.gz") as archive:
        archive.extractall(home, filter="data")
    legacy = {name: pd.read_parquet(home / "offline" / name) for name in offline.OFFLINE_FILES}
    settings = make_settings(home)
    snapshot = offline_state.open_snapshot(settings)
    assert snapshot is not None
    assert not any((home / "offline" / name).is_file() for name in offline.OFFLINE_FILES)
    bars = snapshot.read(offline.BARS_FILE).sort_values(["ticker", "date"], ignore_index=True)
    old_bars = legacy[offline.BARS_FILE].sort_values(["ticker", "date"], ignore_index=True)
    assert bars["ticker"].tolist() == old_bars["ticker"].tolist()
    assert (bars["date"].to_numpy() == old_bars["date"].to_numpy()).all()
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[column], old_bars[column].astype("float64"))
    features = snapshot.read(offline.FEATURES_FILE)
    old = legacy[offline.FEATURES_FILE]
    assert len(features) == len(old)
    merged = old.merge(features, on=["ticker", "event_timestamp"], suffixes=("_old", ""))
    for column in FEATURE_COLUMNS:  # the same formulas, summed in another order
        np.testing.assert_allclose(merged[column], merged[f"{column}_old"], rtol=1e-9, atol=1e-12)
    labels = snapshot.read(offline.LABELS_FILE)
    assert len(labels) == len(legacy[offline.LABELS_FILE])
    assert labels[LABEL_COLUMN].sum() == legacy[offline.LABELS_FILE][LABEL_COLUMN].sum()
    assert offline_state.open_snapshot(settings) == snapshot  # migrated once

    from mlops.features.datasets import DatasetRequest, create_dataset, get_dataset
    from mlops.features.store import open_store
    from mlops.features.versions import list_versions

    view = open_store(settings).get_feature_view("price_returns")  # registry re-pointed
    assert view.batch_source.path == offline.source_path(settings, offline.FEATURES_FILE)
    kept, _ = get_dataset(settings, "legacy-ds")
    rebuilt = create_dataset(settings, DatasetRequest(name="after-migration"), "tester")
    assert (rebuilt.rows, rebuilt.tickers) == (kept.rows, kept.tickers)
    with session_scope(settings.metadata_url) as session:
        assert [v.version for v in list_versions(session, "price_returns")] == [1]


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(settings: Settings) -> None:
    folder = settings.data_dir
    host = socket.gethostname()
    dead = folder / f".{offline.BARS_FILE}@{host}~999999999~0~x1.tmp"
    reused_pid = (
        folder
        / f".{offline.BARS_FILE}@{current_owner().rsplit(':', 1)[0].replace(':', '~')}~1~x2.tmp"
    )
    live = folder / f".{offline.BARS_FILE}@{current_owner().replace(':', '~')}~x3.tmp"
    elsewhere = folder / f".{offline.BARS_FILE}@other-host.example~1~1~x4.tmp"
    for path in (dead, reused_pid, live, elsewhere):
        path.write_bytes(b"half a parquet file")
    removed = offline.remove_dead_temp_files(folder)
    assert sorted(removed) == sorted([dead, reused_pid])
    assert live.exists() and elsewhere.exists()


def test_a_killed_ingest_run_is_closed_as_interrupted_naming_its_step(settings: Settings) -> None:
    run_id = ingest.start_run(settings, "bars.csv")
    ingest.record_step(settings, run_id, "load", 0.1, "completed")
    ingest.record_step(settings, run_id, "validate", 0.1, "completed")
    alive = ingest.start_run(settings, "other.csv")
    stale = ingest.start_run(settings, "stale.csv")
    with session_scope(settings.metadata_url) as session:
        session.get(IngestRun, run_id).owner = f"{socket.gethostname()}:999999999:0"
        session.get(IngestRun, stale).owner = "other-host.example:1:1"
        session.get(IngestRun, stale).heartbeat_at = utcnow() - timedelta(minutes=10)
    assert {r.id: r.status for r in ingest.latest_runs(settings)}[run_id] == "running"  # a read
    assert reap_interrupted(settings) == 2
    runs = {run.id: run for run in ingest.latest_runs(settings)}
    assert runs[run_id].status == "interrupted" and runs[run_id].finished_at is not None
    assert "during the compute step" in (runs[run_id].error or "")
    assert runs[stale].status == "interrupted" and "Nothing was written" in (
        runs[stale].error or ""
    )
    assert runs[alive].status == "running"
