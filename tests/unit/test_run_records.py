"""The one lifecycle of run records (`run_records.py`), on ingest and evaluation records in
SQLite and PostgreSQL: statuses only move forward, an ended record is final,
only its owner writes to it, and the reaper keeps a record whose runner beat meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.support.postgres import postgres_databases
from tests.support.settings import make_settings

from mlops import run_records
from mlops.db import Evaluation, IngestRun, engine_for, session_scope, utcnow
from mlops.errors import ConflictError
from mlops.evaluation.records import EVALUATIONS
from mlops.features import ingest
from mlops.run_records import Statuses
from mlops.runs import current_owner
from mlops.settings import Settings

DEAD_OWNER = f"{socket.gethostname()}:999999999:0"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """A metadata store in SQLite, and one in PostgreSQL (each read-modify-write locks the
    row there)."""
    if request.param == "sqlite":
        yield make_settings(tmp_path / "home")
        return
    with postgres_databases(f"mlops_runs_{uuid.uuid4().hex[:8]}") as (url,):
        settings = make_settings(tmp_path / "home", metadata_db_url=url)
        yield settings
        engine_for(url).dispose()  # let the database be dropped


def _set(settings: Settings, run_id: int, **values: object) -> None:
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        assert run is not None
        for key, value in values.items():
            setattr(run, key, value)


def _run(settings: Settings, run_id: int) -> IngestRun:
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        assert run is not None
        return run


def test_statuses_move_forward_and_an_end_is_final() -> None:
    statuses = Statuses(open=("pending", "running"), ends=("succeeded", "failed"))
    assert statuses.allows("pending", "running") and statuses.allows("running", "running")
    assert statuses.allows("pending", "failed") and statuses.allows("running", "succeeded")
    assert not statuses.allows("running", "pending")
    assert not statuses.allows("failed", "running") and not statuses.allows("succeeded", "failed")


def test_a_run_closed_by_the_reaper_keeps_its_outcome(settings: Settings) -> None:
    run_id = ingest.start_run(settings, "bars.csv")
    _set(settings, run_id, owner=DEAD_OWNER)
    assert run_records.reap(settings, ingest.RUNS) == [run_id]
    _set(settings, run_id, owner=current_owner())  # even its owner, come back, cannot undo it
    ingest.finish_run(settings, run_id, "completed", rows=10)
    run = _run(settings, run_id)
    assert run.status == "interrupted" and run.rows is None
    assert "during the load step" in (run.error or "")


def test_only_the_owner_of_an_open_run_changes_it(settings: Settings) -> None:
    run_id = ingest.start_run(settings, "bars.csv")
    ingest.record_step(settings, run_id, "load", 0.5, "completed")
    _set(settings, run_id, owner="other-host.example:1:1")
    with pytest.raises(ConflictError, match="may no longer change it"):
        ingest.record_step(settings, run_id, "validate", 0.5, "completed")
    before = _run(settings, run_id).heartbeat_at
    run_records.beat(settings, ingest.RUNS, run_id)
    assert _run(settings, run_id).heartbeat_at == before  # nor beats for it
    ingest.finish_run(settings, run_id, "failed", error="not mine")
    assert _run(settings, run_id).status == "running"
    assert [s["step"] for s in _run(settings, run_id).steps] == ["load"]


def test_a_finished_run_is_final(settings: Settings) -> None:
    run_id = ingest.start_run(settings, "bars.csv")
    ingest.finish_run(settings, run_id, "completed", rows=3)
    run = _run(settings, run_id)
    assert run.status == "completed" and run.rows == 3 and run.wall_seconds is not None
    with pytest.raises(ConflictError):
        ingest.record_step(settings, run_id, "load", 0.5, "completed")
    ingest.finish_run(settings, run_id, "failed", error="again")
    assert _run(settings, run_id).status == "completed"


def test_the_reaper_keeps_a_run_whose_heartbeat_is_fresh(settings: Settings) -> None:
    stale, beating = ingest.start_run(settings, "a.csv"), ingest.start_run(settings, "b.csv")
    for run_id in (stale, beating):  # another host: only the heartbeat tells
        _set(settings, run_id, owner="other-host.example:1:1")
        _set(settings, run_id, heartbeat_at=utcnow() - timedelta(minutes=5))
    _set(settings, beating, heartbeat_at=utcnow())
    assert run_records.reap(settings, ingest.RUNS) == [stale]
    assert _run(settings, beating).status == "running"


def test_a_run_begins_once_in_the_process_that_runs_it(settings: Settings) -> None:
    """A run requested by a process that is gone, begun by this one (e.g. from the
    Prefect UI), is this process's: the reaper leaves it."""
    evaluation_id = uuid.uuid4().hex
    with session_scope(settings.metadata_url) as session:
        session.add(
            Evaluation(
                id=evaluation_id,
                status="pending",
                suites=["smoke"],
                models=[],
                requested_by="t",
                owner=DEAD_OWNER,
            )
        )
    run_records.begin(settings, EVALUATIONS, evaluation_id, lambda _: None)
    assert run_records.reap(settings, EVALUATIONS) == []
    with pytest.raises(ConflictError, match="cannot start again"):
        run_records.begin(settings, EVALUATIONS, evaluation_id, lambda _: None)


def _evaluation(settings: Settings, **values: object) -> str:
    evaluation_id = uuid.uuid4().hex
    with session_scope(settings.metadata_url) as session:
        session.add(
            Evaluation(id=evaluation_id, suites=["smoke"], models=[], requested_by="t", **values)
        )
    return evaluation_id


def test_an_evaluation_of_another_host_is_closed_once_its_heartbeat_is_stale(
    settings: Settings,
) -> None:
    """A worker elsewhere that stopped: no pid to ask, only the heartbeat tells."""
    elsewhere = {"status": "running", "owner": "worker-7.example:1:1"}
    stale = _evaluation(settings, heartbeat_at=utcnow() - timedelta(minutes=5), **elsewhere)
    fresh = _evaluation(settings, heartbeat_at=utcnow(), **elsewhere)
    assert run_records.reap(settings, EVALUATIONS) == [stale]
    with session_scope(settings.metadata_url) as session:
        closed, kept = session.get(Evaluation, stale), session.get(Evaluation, fresh)
        assert closed is not None and kept is not None
        assert closed.status == "failed" and "worker-7.example" in (closed.error or "")
        assert kept.status == "running"


def test_an_evaluation_drawing_its_plots_keeps_beating(settings: Settings) -> None:
    """Its results are final, its plots are not yet: the heartbeat says it is still worked
    on, so the reaper leaves the plots to come."""
    before = utcnow() - timedelta(minutes=5)
    drawing = _evaluation(
        settings, status="succeeded", plots="pending", owner=current_owner(), heartbeat_at=before
    )
    run_records.beat(settings, EVALUATIONS, drawing)
    assert run_records.reap(settings, EVALUATIONS) == []
    with session_scope(settings.metadata_url) as session:
        row = session.get(Evaluation, drawing)
        assert row is not None and row.plots == "pending" and row.heartbeat_at is not None
        assert row.heartbeat_at.replace(tzinfo=None) > before.replace(tzinfo=None)


def test_nested_keep_alive_blocks_of_one_record_share_one_heartbeat(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    @contextlib.contextmanager
    def counting(beat: object) -> Iterator[None]:
        started.append("beat")
        yield

    monkeypatch.setattr(run_records, "heartbeat", counting)
    run_id = ingest.start_run(settings, "a.csv")
    with run_records.keep_alive(settings, ingest.RUNS, run_id):
        with run_records.keep_alive(settings, ingest.RUNS, run_id):
            pass
        assert started == ["beat"]
        with run_records.keep_alive(settings, EVALUATIONS, run_id):  # another record
            assert started == ["beat", "beat"]
    with run_records.keep_alive(settings, ingest.RUNS, run_id):  # the outer one ended
        assert started == ["beat", "beat", "beat"]


def test_changes_from_two_threads_at_once_are_all_kept(settings: Settings) -> None:
    """Each change reads the record and writes it back in one transaction that holds the
    row (SQLite: the write lock, taken before the read), so none overwrites another."""
    run_id = ingest.start_run(settings, "a.csv")
    steps_each = 15

    def add_steps(prefix: str) -> None:
        for i in range(steps_each):
            ingest.record_step(settings, run_id, f"{prefix}{i}", 0.0, "completed")

    threads = [threading.Thread(target=add_steps, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    steps = [s["step"] for s in _run(settings, run_id).steps]
    assert sorted(steps) == sorted(f"{p}{i}" for p in "ab" for i in range(steps_each))
