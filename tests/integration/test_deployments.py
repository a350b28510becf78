"""Staged deployment through the `deploy` flow on a real MLflow registry: gates, aliases,
records, rollback, concurrency, interruption, bad input, and online predictions.

Each test deploys a registered model of its own (a copy of a `lifecycle-model` version), so
aliases never meet across tests."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from flows.evaluate import run_recorded
from tests.support.ingest import read_offline
from tests.support.registered_models import add_version, copy_version, logged_model

from mlops.app import create_app
from mlops.db import Deployment, session_scope
from mlops.errors import ConflictError
from mlops.lifecycle import deployments, mlflow_backend, promotion, registry
from mlops.orchestration import run_deployment
from mlops.reaper import reap_interrupted
from mlops.settings import Settings

API = "/api/v1/ml"


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.token}"}


def _deploy(
    client: TestClient,
    auth: dict[str, str],
    name: str,
    version: str = "1",
    target: str = "production",
) -> dict[str, Any]:
    response = client.post(
        f"{API}/models/{name}/deploy",
        params={"wait": True},
        json={"version": version, "target_stage": target, "reason": "test"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _stages(record: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in record["stages"]}


def _aliases(settings: Settings, name: str) -> dict[str, str]:
    model = mlflow_backend.client(settings).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def test_deploy_to_production_runs_every_gate_and_moves_aliases(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    record = _deploy(client, auth, name)
    assert record["status"] == "succeeded", record["error"]
    assert _stages(record) == {"validate": "passed", "staging": "passed", "production": "passed"}
    gates = {g["name"]: g for g in record["stages"][0]["gates"]}
    assert {
        "gates_config",
        "model_loads",
        "signature",
        "smoke_prediction",
        "inference_features",
        "holdout",
        "threshold:accuracy",
        "threshold:roc_auc",
        "threshold:log_loss",
        "champion:roc_auc",
    } == set(gates)
    accuracy = gates["threshold:accuracy"]
    assert accuracy["operator"] == ">=" and accuracy["threshold"] == 0.45
    assert 0.0 <= accuracy["value"] <= 1.0
    assert all(s["seconds"] is not None and s["started_at"] for s in record["stages"])
    assert record["flow_run_id"] and record["requested_by"] == "admin"
    assert _aliases(settings, name) == {"production": "1"}  # staging moved on to production
    model = registry.get_model(settings, name)
    assert model.production_version == "1" and model.versions[0].stage == "Production"


def test_second_version_is_compared_with_production_then_rolled_back(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    _deploy(client, auth, name)
    second = add_version(settings, name, "2")
    record = _deploy(client, auth, name, second)
    assert record["status"] == "succeeded", record["error"]
    champion = next(g for g in record["stages"][0]["gates"] if g["name"] == "champion:roc_auc")
    assert champion["details"]["champion_version"] == "1"
    assert champion["operator"] == "<=" and champion["threshold"] == 0.03
    assert record["previous_production"] == "1"
    stages = {v.version: v.stage for v in registry.get_model(settings, name).versions}
    assert stages == {"1": "Archived", second: "Production"}

    rolled = client.post(f"{API}/models/{name}/rollback", params={"wait": True}, headers=auth)
    assert rolled.status_code == 200, rolled.text
    body = rolled.json()
    assert body["kind"] == "rollback" and body["status"] == "succeeded" and body["version"] == "1"
    assert _stages(body) == {"validate": "passed", "staging": "skipped", "production": "passed"}
    assert _aliases(settings, name) == {"production": "1"}
    stages = {v.version: v.stage for v in registry.get_model(settings, name).versions}
    assert stages == {"1": "Production", second: "Archived"}

    history = client.get(f"{API}/deployments", params={"model": name}).json()
    assert [(d["kind"], d["version"]) for d in history] == [
        ("rollback", "1"),
        ("deploy", second),
        ("deploy", "1"),
    ]
    assert (
        client.get(f"{API}/models", params={"stage": "Archived", "search": name}).json()["items"][
            0
        ]["versions"][0]["version"]
        == second
    )


def test_the_ledger_answers_which_version_was_in_production_when(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    before = datetime.now(UTC)
    first = _deploy(client, auth, name)
    after_first = datetime.now(UTC)
    second_version = add_version(settings, name, "2")
    second = _deploy(client, auth, name, second_version)
    after_second = datetime.now(UTC)
    rolled = client.post(f"{API}/models/{name}/rollback", params={"wait": True}, headers=auth)
    assert rolled.json()["status"] == "succeeded"

    def at(moment: datetime) -> dict[str, Any]:
        answer = client.get(f"{API}/models/{name}/history", params={"at": moment.isoformat()})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert at(before)["production_at"] is None
    assert at(after_first)["production_at"] == "1"
    assert at(after_second)["production_at"] == second_version
    now = at(datetime.now(UTC))
    assert now["production_at"] == "1" and now["staging_at"] is None
    moves = [
        (c["alias"], c["from_version"], c["to_version"], c["deployment_id"])
        for c in reversed(now["changes"])
    ]
    assert moves == [
        ("staging", None, "1", first["id"]),
        ("production", None, "1", first["id"]),
        ("staging", "1", None, first["id"]),  # staging moved on to production
        ("staging", None, second_version, second["id"]),
        ("production", "1", second_version, second["id"]),
        ("staging", second_version, None, second["id"]),
        ("production", second_version, "1", rolled.json()["id"]),
    ]
    assert {c["changed_by"] for c in now["changes"]} == {"admin"}
    assert client.get(f"{API}/models/no-such-model/history").status_code == 404
    out_of_range = {"at": "0001-01-01T00:00:00+01:00"}
    assert client.get(f"{API}/models/{name}/history", params=out_of_range).status_code == 422


def test_a_move_the_ledger_could_not_record_still_stands_with_a_warning(
    client: TestClient, auth: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.lifecycle import alias_moves, ledger

    name = copy_version(settings, "1")
    counted = alias_moves.moves(settings, name)

    def fails(*args: Any, **kwargs: Any) -> None:
        alias_moves.record_move(settings, name)  # as ledger.record does first
        raise RuntimeError("ledger table is read-only")

    monkeypatch.setattr(ledger, "record", fails)
    record = _deploy(client, auth, name)
    assert record["status"] == "succeeded", record["error"]
    production = next(g for g in record["stages"][2]["gates"] if g["name"] == "alias:production")
    assert "warning: the production move is not in the ledger" in production["message"]
    assert _aliases(settings, name) == {"production": "1"}
    assert alias_moves.moves(settings, name) > counted  # serving sees the move


def test_deploy_answers_at_once_and_the_status_url_shows_progress(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    response = client.post(
        f"{API}/models/{name}/deploy",
        json={"version": "1", "target_stage": "staging"},
        headers=auth,
    )
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == body["status_url"] == f"{API}/deployments/{body['id']}"
    assert body["status"] in ("pending", "running")
    deadline = time.monotonic() + 60
    while True:
        status = client.get(body["status_url"]).json()
        if status["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["status"] == "succeeded", status
    assert _stages(status) == {"validate": "passed", "staging": "passed", "production": "skipped"}
    assert _aliases(settings, name) == {"staging": "1"}
    assert registry.get_model(settings, name).versions[0].stage == "Staging"


def test_failed_threshold_stops_in_validate_and_changes_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    config = _config_copy(
        settings, tmp_path, 'accuracy: {op: ">=", value: 0.45}', 'accuracy: {op: ">=", value: 0.99}'
    )
    name = copy_version(settings, "1")
    record = _run(config, deployments.request_deployment(config, name, "1", "production", "t"))
    assert record.status == "failed" and record.failed_stage == "validate"
    assert [s.status for s in record.stages] == ["failed", "skipped", "skipped"]
    gate = next(g for g in record.stages[0].gates if not g.passed)
    assert gate.name == "threshold:accuracy" and gate.threshold == 0.99
    assert "needs >= 0.99" in record.error
    assert _aliases(settings, name) == {}


def test_missing_threshold_value_is_reported_in_the_record(
    settings: Settings, tmp_path: Path
) -> None:
    config = _config_copy(
        settings, tmp_path, 'roc_auc: {op: ">=", value: 0.45}', 'roc_auc: {op: ">="}'
    )
    name = copy_version(settings, "1")
    record = _run(config, deployments.request_deployment(config, name, "1", "production", "t"))
    assert record.status == "failed" and record.failed_stage == "validate"
    assert record.stages[0].gates[0].name == "gates_config"
    assert "thresholds.roc_auc.value" in record.error and "Field required" in record.error
    assert _aliases(settings, name) == {}


def test_production_keeps_its_version_when_a_challenger_fails(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    name = copy_version(settings, "1")
    _deploy(client, auth, name)
    broken = _broken_version(settings, name, tmp_path)
    record = _deploy(client, auth, name, broken)
    assert record["status"] == "failed" and record["failed_stage"] == "validate"
    gate = next(g for g in record["stages"][0]["gates"] if not g["passed"])
    assert gate["name"] == "model_loads" and "missing or corrupt" in gate["message"]
    assert _aliases(settings, name) == {"production": "1"}
    ticker = str(read_offline(settings, "bars.parquet")["ticker"].iloc[0])
    predicted = client.post(f"{API}/models/{name}/predict", json={"tickers": [ticker]})
    assert predicted.status_code == 200 and predicted.json()["version"] == "1"
    assert registry.get_version(settings, name, "1").stage == "Production"


def test_signature_misfit_and_raising_model_fail_their_gates(settings: Settings) -> None:
    misfit = logged_model(settings, columns=["ret_1d", "not_served"])
    record = _run(
        settings, deployments.request_deployment(settings, misfit, "1", "production", "t")
    )
    gate = next(g for g in record.stages[0].gates if not g.passed)
    assert gate.name == "signature" and "not_served" in gate.message

    raising = logged_model(settings, columns=None)
    record = _run(
        settings, deployments.request_deployment(settings, raising, "1", "production", "t")
    )
    gate = next(g for g in record.stages[0].gates if not g.passed)
    assert gate.name == "smoke_prediction" and "boom" in gate.message
    assert _aliases(settings, raising) == {}


def test_bad_requests_are_clear_and_leave_no_record(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    cases = [
        ("no-such-model", {"version": "1"}, 404, "No registered model"),
        (name, {"version": "99"}, 404, "has no version '99'"),
        (name, {"version": "1", "target_stage": "canary"}, 422, "Unknown target stage"),
    ]
    for model, body, status, message in cases:
        response = client.post(f"{API}/models/{model}/deploy", json=body, headers=auth)
        assert response.status_code == status and message in response.json()["error"]["message"]
    assert client.post(f"{API}/models/{name}/deploy", json={"version": "1"}).status_code == 401
    assert client.get(f"{API}/deployments", params={"model": name}).json() == []
    rollback = client.post(f"{API}/models/{name}/rollback", headers=auth)
    assert rollback.status_code == 409 and "no previous production" in rollback.text
    assert client.get(f"{API}/deployments/nope").status_code == 404


def test_second_deployment_of_a_model_is_refused_while_one_runs(settings: Settings) -> None:
    name = copy_version(settings, "1")
    first = deployments.request_deployment(settings, name, "1", "staging", "t")
    with pytest.raises(ConflictError, match=first.id):
        deployments.request_deployment(settings, name, "1", "production", "t")
    other = copy_version(settings, "1")  # another model is not blocked
    deployments.request_deployment(settings, other, "1", "staging", "t")
    done = _run(settings, first)
    assert done.status == "succeeded"
    again = deployments.request_deployment(settings, name, "1", "production", "t")
    assert again.status == "pending"


def test_a_dead_process_leaves_a_failed_record_not_a_running_one(settings: Settings) -> None:
    name = copy_version(settings, "1")
    info = deployments.request_deployment(settings, name, "1", "production", "t")
    deployments.begin(settings, info.id, None)
    deployments.start_stage(settings, info.id, "validate")
    _kill_runner(settings, info.id)
    assert reap_interrupted(settings) >= 1
    record = deployments.get_deployment(settings, info.id)
    assert record.status == "failed" and record.failed_stage == "validate"
    assert "Interrupted" in record.error
    assert [s.status for s in record.stages] == ["failed", "skipped", "skipped"]
    assert deployments.request_deployment(settings, name, "1", "staging", "t").status == "pending"


def test_production_needs_validate_and_staging_of_the_same_deployment(settings: Settings) -> None:
    name = copy_version(settings, "1")
    info = deployments.request_deployment(settings, name, "1", "production", "t")
    with pytest.raises(ConflictError, match="validate, staging"):
        promotion.promote_to_production(settings, info, run_recorded)
    assert _aliases(settings, name) == {}


def test_predict_uses_the_production_model_and_follows_the_alias(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    none_yet = client.post(f"{API}/models/{name}/predict", json={"tickers": ["X"]})
    assert none_yet.status_code == 404 and "no production version" in none_yet.text
    _deploy(client, auth, name)
    tickers = sorted(read_offline(settings, "bars.parquet")["ticker"].unique())
    response = client.post(f"{API}/models/{name}/predict", json={"tickers": tickers})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == "1" and [p["ticker"] for p in body["predictions"]] == tickers
    for p in body["predictions"]:
        assert 0.0 <= p["probability_up"] <= 1.0
        assert p["direction"] == ("up" if p["probability_up"] >= 0.5 else "down")
    model = registry.load_version(settings, name, "1")
    frame = pd.DataFrame(body["features"])
    expected = model.predict(frame)[:, 1]
    assert [p["probability_up"] for p in body["predictions"]] == pytest.approx(list(expected))

    second = add_version(settings, name, "2")
    _deploy(client, auth, name, second)
    assert (
        client.post(f"{API}/models/{name}/predict", json={"tickers": tickers[:1]}).json()["version"]
        == second
    )
    unknown = client.post(f"{API}/models/{name}/predict", json={"tickers": [tickers[0], "ZZZZ"]})
    assert unknown.status_code == 404 and "ZZZZ" in unknown.json()["error"]["message"]
    staging = client.post(
        f"{API}/models/{name}/predict", json={"tickers": tickers, "stage": "staging"}
    )
    assert staging.status_code == 404
    assert client.post(f"{API}/models/{name}/predict", json={"tickers": []}).status_code == 422


# ---------------------------------------------------------------------------- helpers


def _kill_runner(settings: Settings, deployment_id: str) -> None:
    """Make the record's owner a process that is gone, as after a kill -9."""
    with session_scope(settings.metadata_url) as session:
        session.get(Deployment, deployment_id).owner = f"{socket.gethostname()}:999999999:0"


def _run(settings: Settings, info: deployments.DeploymentInfo) -> deployments.DeploymentInfo:
    run_deployment(settings, info.id)
    return deployments.get_deployment(settings, info.id)


def _config_copy(settings: Settings, tmp_path: Path, old: str, new: str) -> Settings:
    config_dir = tmp_path / "config"
    shutil.copytree(settings.config_dir, config_dir)
    gates = config_dir / "gates.yaml"
    text = gates.read_text()
    assert old in text
    gates.write_text(text.replace(old, new))
    return settings.model_copy(update={"config_dir": config_dir})


def _broken_version(settings: Settings, name: str, tmp_path: Path) -> str:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {python_function: {loader_module: nowhere}}\n")
    created = mlflow_backend.client(settings).create_model_version(name, folder.as_uri())
    return str(created.version)


def test_predict_reports_a_model_that_raises(client: TestClient, settings: Settings) -> None:
    """An alias moved outside the platform onto a model that raises: a clear 500, no trace."""
    name = logged_model(settings, columns=None)
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", "1")
    ticker = str(read_offline(settings, "bars.parquet")["ticker"].iloc[0])
    response = client.post(f"{API}/models/{name}/predict", json={"tickers": [ticker]})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "model_failed" and "boom" in error["message"]
    assert "Traceback" not in response.text


def test_rollbacks_walk_back_the_production_history(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    second, third = add_version(settings, name, "2"), add_version(settings, name, "1")
    for version in ("1", second, third, third):  # redeploying the current one changes nothing
        assert _deploy(client, auth, name, version)["status"] == "succeeded"
    assert deployments.production_history(settings, name) == ["1", second, third]
    restored = []
    for _ in range(2):
        body = client.post(f"{API}/models/{name}/rollback", params={"wait": True}, headers=auth)
        restored.append(body.json()["version"])
    assert restored == [second, "1"]  # not back and forth between the last two
    assert _aliases(settings, name) == {"production": "1"}
    last = client.post(f"{API}/models/{name}/rollback", headers=auth)
    assert last.status_code == 409 and "no previous production" in last.text


def test_rollback_of_a_deployment_is_bound_to_it(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    first = _deploy(client, auth, name)
    second = _deploy(client, auth, name, add_version(settings, name, "2"))
    stale = client.post(f"{API}/deployments/{first['id']}/rollback", headers=auth)
    assert stale.status_code == 409 and "not v1" in stale.json()["error"]["message"]
    rolled = client.post(
        f"{API}/deployments/{second['id']}/rollback", params={"wait": True}, headers=auth
    )
    assert rolled.status_code == 200 and rolled.json()["version"] == "1"
    staging_only = _deploy(client, auth, name, "1", target="staging")
    refused = client.post(f"{API}/deployments/{staging_only['id']}/rollback", headers=auth)
    assert refused.status_code == 409 and "did not put a version in production" in refused.text


def test_rollback_refuses_an_alias_moved_outside_the_platform(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "1")
    _deploy(client, auth, name)
    _deploy(client, auth, name, add_version(settings, name, "2"))
    third = add_version(settings, name, "1")
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", third)
    response = client.post(f"{API}/models/{name}/rollback", headers=auth)
    assert response.status_code == 409 and "moved outside the platform" in response.text
    assert _aliases(settings, name)["production"] == third


def test_a_stopped_heartbeat_or_a_finished_move_closes_the_record(settings: Settings) -> None:
    from datetime import timedelta

    from mlops.db import utcnow

    name = copy_version(settings, "1")
    info = deployments.request_deployment(settings, name, "1", "production", "t")
    deployments.begin(settings, info.id, None)
    with session_scope(settings.metadata_url) as session:
        session.get(Deployment, info.id).heartbeat_at = utcnow() - timedelta(minutes=5)
    assert deployments.get_deployment(settings, info.id).status == "running"  # a read closes none
    # A new deployment of the model closes the holder of its lock, whose runner is gone.
    moved = deployments.request_deployment(settings, name, "1", "production", "t")
    assert deployments.get_deployment(settings, info.id).status == "failed"

    deployments.begin(settings, moved.id, None)
    for stage in ("validate", "staging"):
        deployments.start_stage(settings, moved.id, stage)
        gate = deployments.GateResult(name=stage, passed=True, message="test")
        deployments.end_stage(settings, moved.id, stage, [gate], "ok")
    deployments.start_stage(settings, moved.id, "production")
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", "1")
    _kill_runner(settings, moved.id)
    assert reap_interrupted(settings) >= 1
    record = deployments.get_deployment(settings, moved.id)
    assert record.status == "succeeded" and record.stages[2].status == "passed"


def test_each_stage_transition_reads_the_record_once(settings: Settings) -> None:
    """A deployment's run reads its record once per change: when it begins, when each
    stage starts and ends, when production's previous version is noted, when it finishes."""
    from sqlalchemy import event

    from mlops.db import engine_for

    name = copy_version(settings, "1")
    info = deployments.request_deployment(settings, name, "1", "production", "t")
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM deployments" in statement:
            reads.append(statement)

    engine = engine_for(settings.metadata_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        run_deployment(settings, info.id)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert deployments.get_deployment(settings, info.id).status == "succeeded"
    stages = len(deployments.STAGE_NAMES)
    assert len(reads) <= 1 + 2 * stages + 1 + 1, reads


def test_holdout_starts_after_the_candidate_was_trained(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = copy_version(settings, "2")  # the copy is version 1 of its own model
    record = _deploy(client, auth, name, "1")
    holdout_gate = next(g for g in record["stages"][0]["gates"] if g["name"] == "holdout")
    run_id = registry.get_version(settings, name, "1").run_id
    test_start = mlflow_backend.client(settings).get_run(run_id).data.params["test_start"]
    first_day = holdout_gate["message"].rsplit("from ", 1)[1]
    assert first_day >= test_start


@pytest.mark.parametrize("closed", [False, True], ids=["stage-open", "stage-closed"])
def test_a_runner_killed_after_production_moved_leaves_a_succeeded_record(
    settings: Settings, closed: bool
) -> None:
    """Killed between the alias move and the record's close (with or without the stage
    written down): the registry decides, and the next rollback follows that history."""
    name = copy_version(settings, "1")
    first = _run(settings, deployments.request_deployment(settings, name, "1", "production", "t"))
    assert first.status == "succeeded"
    second = add_version(settings, name, "1")
    info = deployments.request_deployment(settings, name, second, "production", "t")
    deployments.begin(settings, info.id, None)
    for stage in ("validate", "staging", "production"):
        deployments.start_stage(settings, info.id, stage)
        if stage == "production":
            mlflow_backend.client(settings).set_registered_model_alias(name, "production", second)
            if not closed:
                break
        gate = deployments.GateResult(name=stage, passed=True, message="test")
        deployments.end_stage(settings, info.id, stage, [gate], "ok")
    _kill_runner(settings, info.id)
    assert reap_interrupted(settings) >= 1
    record = deployments.get_deployment(settings, info.id)
    assert record.status == "succeeded" and record.error is None
    assert [s.status for s in record.stages] == ["passed", "passed", "passed"]
    assert deployments.production_history(settings, name) == ["1", second]
    assert deployments.rollback_target(settings, name) == ("1", second)


def test_a_runner_gone_while_the_registry_is_down_stays_open_until_it_answers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = copy_version(settings, "1")
    info = deployments.request_deployment(settings, name, "1", "production", "t")
    deployments.begin(settings, info.id, None)
    deployments.start_stage(settings, info.id, "staging")
    _kill_runner(settings, info.id)

    def registry_down(*_: object) -> None:
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(registry, "alias_version", registry_down)
    reap_interrupted(settings)
    assert deployments.get_deployment(settings, info.id).status == "running"
    monkeypatch.undo()
    assert reap_interrupted(settings) >= 1
    record = deployments.get_deployment(settings, info.id)
    assert record.status == "failed" and record.failed_stage == "staging"
    assert "Production was not moved" in (record.error or "")
