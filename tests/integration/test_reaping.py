"""The runs of dead processes (a deployment, an evaluation run, an ingest run) are closed by
the reaper: when the API starts and on its schedule, without any request. Reads never
close them: the API's and the console's GETs leave every record as it is stored."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.registered_models import copy_version
from tests.support.waiting import wait_for

from mlops.app import create_app
from mlops.db import Deployment, Evaluation, IngestRun, session_scope
from mlops.features import ingest
from mlops.lifecycle import deployments
from mlops.reaper import reap_interrupted
from mlops.settings import Settings

DEAD_OWNER = f"{socket.gethostname()}:999999999:0"
"""A process of this host that is gone, as after a kill -9."""
CLOSED = {"deployment": "failed", "evaluation": "failed", "ingest": "interrupted"}
STILL_RUNNING = {"deployment": "running", "evaluation": "running", "ingest": "running"}


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


def _dead_runs(settings: Settings) -> dict[str, Any]:
    """A deployment in its validate stage, an evaluation run and an ingest run after its
    load step, each running for a process that is gone."""
    name = copy_version(settings, "1")
    deployment = deployments.request_deployment(settings, name, "1", "production", "t")
    deployments.begin(settings, deployment.id, None)
    deployments.start_stage(settings, deployment.id, "validate")
    run_id = ingest.start_run(settings, "dead.csv")
    ingest.record_step(settings, run_id, "load", 0.1, "completed")
    evaluation = Evaluation(
        id=uuid.uuid4().hex,
        status="running",
        suites=["smoke"],
        models=[{"name": name, "version": "1"}],
        requested_by="t",
        owner=DEAD_OWNER,
    )
    with session_scope(settings.metadata_url) as session:
        session.add(evaluation)
        session.get(Deployment, deployment.id).owner = DEAD_OWNER
        session.get(IngestRun, run_id).owner = DEAD_OWNER
    return {"deployment": deployment.id, "evaluation": evaluation.id, "ingest": run_id}


def _stored(settings: Settings, runs: dict[str, Any]) -> dict[str, str]:
    """The status of each run as the metadata store holds it."""
    tables = {"deployment": Deployment, "evaluation": Evaluation, "ingest": IngestRun}
    with session_scope(settings.metadata_url) as session:
        return {kind: session.get(tables[kind], runs[kind]).status for kind in tables}


def _started(client: TestClient) -> None:
    wait_for(lambda: client.app.state.reaper.passes, 60, "the API's start-up reaping")


def test_reads_leave_the_runs_of_dead_processes_as_stored(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        _started(client)
        runs = _dead_runs(settings)
        reads = [
            f"/api/v1/ml/deployments/{runs['deployment']}",
            "/api/v1/ml/deployments",
            f"/api/v1/evaluation/results/{runs['evaluation']}",
            "/api/v1/evaluation/results",
            "/",
            "/deployments",
            f"/deployments/{runs['deployment']}",
            "/evaluation",
        ]
        for path in reads:
            assert client.get(path).status_code == 200, path
        assert _stored(settings, runs) == STILL_RUNNING
        record = client.get(f"/api/v1/ml/deployments/{runs['deployment']}").json()
        assert record["status"] == "running" and record["finished_at"] is None
        assert reap_interrupted(settings) >= 3
        assert _stored(settings, runs) == CLOSED
        record = client.get(f"/api/v1/ml/deployments/{runs['deployment']}").json()
        assert record["status"] == "failed" and "Interrupted" in record["error"]


def test_the_api_closes_them_when_it_starts(settings: Settings) -> None:
    runs = _dead_runs(settings)
    with TestClient(create_app(settings)) as client:
        _started(client)
        assert _stored(settings, runs) == CLOSED
        evaluation = client.get(f"/api/v1/evaluation/results/{runs['evaluation']}").json()
        assert evaluation["status"] == "failed" and "Interrupted" in evaluation["error"]
    run = next(r for r in ingest.latest_runs(settings) if r.id == runs["ingest"])
    assert "stopped during the validate step" in (run.error or "")


def test_the_api_closes_them_on_its_schedule_without_a_request(settings: Settings) -> None:
    often = settings.model_copy(update={"reap_every_s": 0.2})
    with TestClient(create_app(often)) as client:
        _started(client)
        runs = _dead_runs(settings)
        wait_for(lambda: _stored(settings, runs) == CLOSED, 60, "the scheduled reaping")
        # closed by a pass after the start-up one (counted once its alias check is done)
        wait_for(lambda: client.app.state.reaper.passes >= 2, 60, "a second pass")
