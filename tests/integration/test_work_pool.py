"""The work pool's bookkeeping against a real Prefect server (the session's): a record
handed over to its flow run is kept while Prefect shows the run waiting and closed once it
ended without beginning it; a worker's process that died gets its flow run marked Crashed;
a submission Prefect refuses ends the record and removes the upload; the cluster profile
refuses settings that would not reach its servers. (The whole profile with real servers
and workers: tests/e2e/test_cluster.py.)"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from tests.support.settings import make_settings

from mlops.errors import (
    ConfigError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
    StoreUnavailableError,
)
from mlops.features import ingest
from mlops.pool_runs import failure_of, flow_run_state
from mlops.run_records import hand_over, reap
from mlops.settings import Settings


@flow(name="pool-test")
def _placeholder() -> None:
    """A flow the tests create runs of, as a work pool deployment would."""


def _flow_run(state: Any = None) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(_placeholder, state=state)
    return str(run.id)


def _set_state(flow_run_id: str, state: Any) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(flow_run_id), state, force=True)


def _cluster_settings(home: Path, **overrides: Any) -> Settings:
    """Cluster-profile settings on this test's stores (SQLite stands in for PostgreSQL:
    this is about the bookkeeping, not the stores)."""
    local = make_settings(home)
    values: dict[str, Any] = {
        "profile": "cluster",
        "metadata_db_url": local.metadata_url,
        "feast_registry_url": local.metadata_url,
        "redis_url": "127.0.0.1:6379",
        "mlflow_tracking_uri": "http://127.0.0.1:5000",
        "mlflow_database_url": local.tracking_uri,
        "api_token": "pool-token",
    }
    return make_settings(home, **{**values, **overrides})


def _status(settings: Settings, run_id: int) -> ingest.IngestRunInfo:
    return ingest.run_info(settings, run_id)


def test_a_record_waiting_for_its_flow_run_is_kept_until_prefect_shows_it_ended(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.states import Cancelled, Scheduled

    settings = make_settings(tmp_path / "home")
    run_id = ingest.start_run(settings, "bars.csv", pending=True)
    flow_run_id = _flow_run(Scheduled())
    hand_over(settings, ingest.RUNS, run_id, flow_run_id)

    assert reap(settings, ingest.RUNS) == [], "waiting for a worker is no outage"
    assert _status(settings, run_id).status == "pending"

    _set_state(flow_run_id, Cancelled(message="cancelled in the Prefect UI"))
    assert reap(settings, ingest.RUNS) == [run_id]
    record = _status(settings, run_id)
    assert record.status == "interrupted"
    assert f"its flow run {flow_run_id} on the work pool" in (record.error or "")


def test_a_run_begun_elsewhere_keeps_its_record_from_the_hand_over(
    prefect_server: None, tmp_path: Path
) -> None:
    """A fast worker may begin the record before the submitter hands it over: the worker
    keeps it."""
    settings = make_settings(tmp_path / "home")
    run_id = ingest.start_run(settings, "bars.csv", pending=True)
    ingest.begin_run(settings, run_id, "worker-flow-run")  # this process, as the worker
    hand_over(settings, ingest.RUNS, run_id, _flow_run())
    from mlops.db import session_scope
    from mlops.runs import current_owner

    with session_scope(settings.metadata_url) as session:
        row = session.get(ingest.IngestRun, run_id)
        assert row is not None and row.owner == current_owner()


def test_a_dead_worker_process_gets_its_flow_run_marked_crashed(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.states import Running

    from mlops.db import session_scope

    settings = _cluster_settings(tmp_path / "home")
    flow_run_id = _flow_run(Running())
    run_id = ingest.start_run(settings, "bars.csv", pending=True)
    with session_scope(settings.metadata_url) as session:  # begun by a process now gone
        row = session.get(ingest.IngestRun, run_id)
        assert row is not None
        row.status, row.flow_run_id = "running", flow_run_id
        row.owner = f"{socket.gethostname()}:999999999:0"

    assert reap(settings, ingest.RUNS) == [run_id]
    assert _status(settings, run_id).status == "interrupted"
    state = flow_run_state(settings, flow_run_id)
    assert state is not None and state[0] == "CRASHED"
    assert "stopped during the load step" in state[1]


def test_a_refused_submission_ends_the_record_and_removes_the_upload(
    prefect_server: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mlops.orchestration import start_ingest

    settings = _cluster_settings(tmp_path / "home")
    upload = settings.home / "uploads" / "abc"
    upload.mkdir(parents=True)
    (upload / "bars.csv").write_text("ticker,date\n")
    run_id = ingest.start_run(settings, "bars.csv", pending=True)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with (
        temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{closed}/api"}),
        pytest.raises(ServiceError, match="work pool 'mlops'"),
    ):
        start_ingest(settings, run_id, "demo", "ana", "refused", upload_dir=upload)
    record = _status(settings, run_id)
    assert record.status == "failed" and "Could not submit the ingest flow" in (record.error or "")
    assert not upload.exists()


def test_a_failed_flow_run_raises_the_error_it_failed_with() -> None:
    error = failure_of(
        "FAILED", "Flow run encountered an exception: InvalidInputError: Unknown hyperparameter"
    )
    assert isinstance(error, InvalidInputError) and error.message == "Unknown hyperparameter"
    assert isinstance(failure_of("FAILED", "NotFoundError: no such dataset"), NotFoundError)
    outage = failure_of(
        "FAILED", "Flow run encountered an exception: StoreUnavailableError: mlflow is down"
    )
    assert outage.code == StoreUnavailableError.code and outage.exit_code == 12
    crashed = failure_of("CRASHED", "Execution was interrupted by an unexpected exception")
    assert isinstance(crashed, ServiceError) and "ended crashed" in crashed.message


def test_the_cluster_profile_needs_its_servers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MLOPS_MLFLOW_DATABASE_URL"):
        Settings(
            home=tmp_path,
            profile="cluster",
            metadata_db_url="postgresql://db/mlops",
            feast_registry_url="postgresql://db/mlops",
            redis_url="127.0.0.1:6379",
            mlflow_tracking_uri="http://mlflow:5000",
        )
    with pytest.raises(ConfigError, match="through its tracking server"):
        _cluster_settings(tmp_path / "home", mlflow_tracking_uri="postgresql://db/mlflow")
    settings = _cluster_settings(tmp_path / "home")
    assert settings.uses_work_pool and settings.shared
    assert settings.tracking_database_url != settings.tracking_uri


def test_the_ingest_flow_removes_only_an_upload_folder(tmp_path: Path) -> None:
    """`upload_dir` is a flow parameter anyone starting a run may set: only a folder of
    the API's uploads is removed."""
    from flows.ingest import _remove_upload

    settings = make_settings(tmp_path / "home")
    upload = settings.home / "uploads" / "abc"
    upload.mkdir(parents=True)
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    _remove_upload(settings, elsewhere)
    _remove_upload(settings, settings.home / "uploads")
    assert elsewhere.exists() and (settings.home / "uploads").exists()
    _remove_upload(settings, upload)
    assert not upload.exists()


def test_the_redis_address_reads_feast_connection_strings(tmp_path: Path) -> None:
    settings = _cluster_settings(tmp_path / "home", redis_url="cache:6380,password=s3cret")
    assert settings.redis_address == ("cache", 6380, "s3cret")
    env = settings.prefect_server_environment()
    assert env["PREFECT_REDIS_MESSAGING_PASSWORD"] == "s3cret"
    assert env["PREFECT_SERVER_DOCKET_URL"] == "redis://:s3cret@cache:6380/0"
