"""The offline store's guarantees after a killed write: leftovers of dead writers are
removed, files that disagree are found and refused with a way to repair, and ingest runs
of killed processes end `interrupted` instead of `running` forever."""

from __future__ import annotations

import socket
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import make_settings

from mlops.db import IngestRun, session_scope, utcnow
from mlops.errors import OfflineStoreInconsistentError
from mlops.features import ingest, offline
from mlops.features.demo_data import generate_ohlcv
from mlops.runs import current_owner
from mlops.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


def _bars(days: int = 60) -> pd.DataFrame:
    return generate_ohlcv(
        n_tickers=3, start=date(2024, 1, 1), end=date(2024, 1, 1) + timedelta(days), seed=3
    )


def _write(settings: Settings, bars: pd.DataFrame, features_of: pd.DataFrame | None = None) -> None:
    """Bars, and features and labels computed from `features_of` (default: the same bars)."""
    frames = ingest.compute_offline_frames(bars if features_of is None else features_of)
    offline.write_parquet_atomic(bars, settings.data_dir / offline.BARS_FILE)
    offline.write_parquet_atomic(frames.features, settings.data_dir / offline.FEATURES_FILE)
    offline.write_parquet_atomic(frames.labels, settings.data_dir / offline.LABELS_FILE)


def test_files_written_together_agree(settings: Settings) -> None:
    assert offline.consistency_problem(settings) is None  # empty store
    _write(settings, _bars())
    assert offline.consistency_problem(settings) is None
    assert offline.checked_path(settings, offline.BARS_FILE).exists()


@pytest.mark.parametrize("torn", ["new-day", "new-ticker", "features-missing"])
def test_bars_newer_than_features_and_labels_are_refused_with_the_repair(
    settings: Settings, torn: str
) -> None:
    """What a kill between the renames leaves: bars written, features and labels not."""
    old = _bars()
    if torn == "new-day":
        new = _bars(days=75)
    elif torn == "new-ticker":
        extra = old[old["ticker"] == old["ticker"].iloc[0]].assign(ticker="ZZNEW")
        new = pd.concat([old, extra], ignore_index=True)
    else:
        new = old
    _write(settings, new, features_of=old)
    if torn == "features-missing":
        (settings.data_dir / offline.FEATURES_FILE).unlink()
    with pytest.raises(OfflineStoreInconsistentError) as caught:
        offline.checked_path(settings, offline.FEATURES_FILE)
    assert caught.value.http_status == 503
    assert "mlops features repair" in caught.value.message
    if torn == "new-ticker":
        assert "ZZNEW" in caught.value.message


def test_the_check_reads_the_files_once_per_version(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(settings, _bars())
    calls = []
    real = offline._compare
    monkeypatch.setattr(offline, "_compare", lambda *p: calls.append(p) or real(*p))
    for _ in range(3):
        offline.checked_path(settings, offline.BARS_FILE)
    assert len(calls) == 1
    _write(settings, _bars(days=75))
    offline.checked_path(settings, offline.BARS_FILE)
    assert len(calls) == 2


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
    runs = {run.id: run for run in ingest.latest_runs(settings)}
    assert runs[run_id].status == "interrupted" and runs[run_id].finished_at is not None
    assert "during the compute step" in (runs[run_id].error or "")
    assert runs[stale].status == "interrupted" and "Nothing was written" in (
        runs[stale].error or ""
    )
    assert runs[alive].status == "running"


def test_a_read_during_a_live_write_says_to_retry_not_to_repair(settings: Settings) -> None:
    old = _bars()
    _write(settings, _bars(days=75), features_of=old)  # as between an ingest's renames
    writing = offline.exclusive_write(settings)  # the ingest still runs
    with writing, pytest.raises(OfflineStoreInconsistentError, match="being written"):
        offline.checked_path(settings, offline.BARS_FILE)
    with pytest.raises(OfflineStoreInconsistentError, match="mlops features repair"):
        offline.checked_path(settings, offline.BARS_FILE)
