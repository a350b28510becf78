"""Alias moves made outside the platform (the MLflow UI, a script): the ledger records them
as external changes once, `/healthz` and the model's page flag them, and rollbacks of
production wait until an approver acknowledges them; then a rollback restores the version
the platform last put there. On a real MLflow registry and `deploy` flow.

Each test deploys a registered model of its own (a copy of a `lifecycle-model` version)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from tests.support.console_pages import csrf, sign_in
from tests.support.registered_models import add_version, copy_version
from typer.testing import CliRunner

from mlops import users
from mlops.app import create_app
from mlops.cli import app as cli
from mlops.db import AliasChange, session_scope, utcnow
from mlops.errors import ConflictError, ForbiddenError
from mlops.health import check_health
from mlops.lifecycle import deployments, ledger, mlflow_backend
from mlops.reaper import watch_aliases
from mlops.roles import Principal, Role
from mlops.settings import Settings
from mlops.usecases import deployments as use
from mlops.usecases.deployments import DeployRequest, RollbackRequest

ANA, BEA = Principal("ana", Role.APPROVER), Principal("bea", Role.APPROVER)


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


def _in_production_twice(settings: Settings) -> tuple[str, str]:
    """A model of its own with v1 then v2 deployed to production by the platform."""
    name = copy_version(settings)
    second = add_version(settings, name, "2")
    for version in ("1", second):
        done = use.deploy(settings, ANA, name, DeployRequest(version=version)).wait(300)
        assert done.status == "succeeded", done.error
    return name, second


def _move_outside(settings: Settings, name: str) -> str:
    """Point production at a new version as the MLflow UI would; that version."""
    third = add_version(settings, name, "1")
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", third)
    return third


def _production(settings: Settings, name: str) -> str:
    return str(mlflow_backend.client(settings).get_registered_model(name).aliases["production"])


def test_a_move_outside_is_recorded_once_flagged_and_blocks_rollback_until_acknowledged(
    settings: Settings,
) -> None:
    name, second = _in_production_twice(settings)
    third = _move_outside(settings, name)
    assert watch_aliases(settings) >= 1
    assert not [c for c in ledger.detect_external_moves(settings) if c.model_name == name]
    newest = ledger.history(settings, name)[0]
    assert (newest.kind, newest.alias, newest.from_version, newest.to_version) == (
        "external",
        "production",
        second,
        third,
    )
    assert newest.changed_by == ledger.OUTSIDE and newest.deployment_id is None
    assert ledger.serving_at(settings, name, "production", utcnow()).to_version == third
    flags = [f for f in check_health(settings).flags if name in f]
    assert len(flags) == 1 and "production of" in flags[0] and "moved outside" in flags[0]

    with pytest.raises(ConflictError, match="an approver acknowledges it first"):
        use.roll_back(settings, "ana", name, RollbackRequest())
    with pytest.raises(ForbiddenError, match="needs the approver role"):
        ledger.acknowledge(settings, name, Principal("rob", Role.RESEARCHER), "seen")
    acknowledged = ledger.acknowledge(settings, name, BEA, "the desk moved it by hand")
    assert [(c.kind, c.changed_by, c.to_version) for c in acknowledged] == [
        ("acknowledged", "bea", third)
    ]
    assert not [f for f in check_health(settings).flags if name in f]
    with pytest.raises(ConflictError, match="no move made outside the platform"):
        ledger.acknowledge(settings, name, BEA, "again")

    plan = use.rollback_plan(settings, name)
    assert (plan.restore, plan.current) == (second, third)
    back = use.roll_back(settings, "ana", name, RollbackRequest(reason="undo")).wait(300)
    assert back.status == "succeeded" and back.version == second, back.error
    assert _production(settings, name) == second
    everything = ledger.history(settings, name)
    assert everything[0].kind == "platform"
    assert deployments.production_history(settings, name) == ["1", second]
    page = ledger.model_history(settings, name, limit=2, offset=1).changes
    assert page == everything[1:3] and len(everything) > 3


def test_a_model_being_deployed_is_not_flagged_and_a_model_before_the_ledger_is(
    settings: Settings,
) -> None:
    name, second = _in_production_twice(settings)
    pending = deployments.request_deployment(settings, name, "1", "staging", "ana")
    _move_outside(settings, name)
    assert not [c for c in ledger.detect_external_moves(settings) if c.model_name == name]
    deployments.finish(settings, pending.id, "test: not run")  # releases the model
    assert [c.model_name for c in ledger.detect_external_moves(settings, name)] == [name]

    older, _ = _in_production_twice(settings)  # deployed before the ledger began
    with session_scope(settings.metadata_url) as session:
        session.execute(delete(AliasChange).where(AliasChange.model_name == older))
    _move_outside(settings, older)
    with pytest.raises(ConflictError, match="moved outside the platform"):
        use.rollback_plan(settings, older)  # the deployments say what production was
    assert ledger.unacknowledged(settings, older)[0].from_version == second


def test_the_api_console_and_cli_acknowledge_a_move_outside(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = _in_production_twice(settings)
    third = _move_outside(settings, name)
    ledger.detect_external_moves(settings, name)
    approver = f"approver-{name[-8:]}"
    users.add_user(settings, approver, Role.APPROVER, by="test")
    token = users.create_token(settings, approver, "t").token
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/healthz", headers={"Authorization": f"Bearer {settings.token}"})
        assert any(name in flag for flag in health.json()["flags"])
        page = f"/models/{name}"
        anonymous = client.get(page).text
        assert 'id="moved-outside"' in anonymous and f"to v{third}" in anonymous
        sign_in(client, settings, page, token)
        assert ">Acknowledge</button>" in client.get(page).text
        empty = client.post(f"{page}/acknowledge", data={"csrf": csrf(client, page)})
        assert empty.status_code == 422
        done = client.post(
            f"{page}/acknowledge",
            data={"csrf": csrf(client, page), "comment": "seen on the desk"},
            follow_redirects=True,
        )
        assert done.status_code == 200 and 'id="moved-outside"' not in done.text
        assert "acknowledged" in done.text and "seen on the desk" in done.text
        paged = client.get(f"/api/v1/ml/models/{name}/history", params={"limit": 1, "offset": 1})
        assert [c["kind"] for c in paged.json()["changes"]] == ["external"]
        too_many = client.get(f"/api/v1/ml/models/{name}/history", params={"limit": 5000})
        assert too_many.status_code == 422
        again = client.post(
            f"/api/v1/ml/models/{name}/acknowledge",
            json={"comment": "x"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert again.status_code == 409

    other, _ = _in_production_twice(settings)
    _move_outside(settings, other)
    ledger.detect_external_moves(settings, other)
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    users.add_user(settings, f"cy-{other[-8:]}", Role.APPROVER, by="test")
    monkeypatch.setenv("MLOPS_AUTHOR", f"cy-{other[-8:]}")
    result = CliRunner().invoke(cli, ["models", "acknowledge", other, "-c", "known"])
    assert result.exit_code == 0, result.output
    assert "Acknowledged: production of" in result.output
    assert ledger.unacknowledged(settings, other) == []
