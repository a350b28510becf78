"""Protected production: a deployment whose gate config asks for `approvals: N` stops after
validate and staging, awaiting approval, and production moves only once N distinct
approvers other than the requester approved (each once, with a comment); a rejection or the
expiry ends it with production untouched. On a real MLflow registry and `deploy` flow.

Each test deploys a registered model of its own (a copy of a `lifecycle-model` version)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from tests.support.approvals import approve_together, at_once
from tests.support.registered_models import add_version, copy_version

from mlops.approvals import Decision, DecisionRequest
from mlops.db import Approval, Deployment, session_scope, utcnow
from mlops.errors import ConflictError, ForbiddenError, InvalidInputError, checked
from mlops.fields import as_utc
from mlops.lifecycle import deployments, ledger, mlflow_backend
from mlops.lifecycle.deployments import DeploymentInfo
from mlops.orchestration import run_deployment
from mlops.reaper import reap_interrupted
from mlops.roles import Principal, Role
from mlops.settings import Settings
from mlops.usecases import deployments as use
from mlops.usecases.deployments import DeployRequest
from mlops.usecases.started import Started

ANA = Principal("ana", Role.APPROVER)
"""The requester in these tests."""
BEA, CY = Principal("bea", Role.APPROVER), Principal("cy", Role.ADMIN)


@pytest.fixture(scope="module")
def base(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


def _approving(base: Settings, tmp_path: Path, name: str, required: int, **more: Any) -> Settings:
    """The settings with a copy of the config whose gates ask `required` approvals of
    `name`."""
    config_dir = tmp_path / "config"
    shutil.copytree(base.config_dir, config_dir)
    gates = config_dir / "gates.yaml"
    own = "".join(f"    {key}: {value}\n" for key, value in {"approvals": required, **more}.items())
    gates.write_text(gates.read_text().rstrip("\n") + f"\n  {name}:\n{own}")
    return base.model_copy(update={"config_dir": config_dir})


def _awaiting(
    settings: Settings, name: str, version: str = "1", requester: Principal = ANA
) -> DeploymentInfo:
    """A deployment of `name` (requested by ana), run until it awaits approval."""
    request = DeployRequest(version=version, reason="release")
    started = use.deploy(settings, requester, name, request)
    info = started.wait(300)
    assert info.status == "awaiting_approval", info.error
    return info


def _decide(
    settings: Settings, who: Principal, info: DeploymentInfo, decision: Decision = "approve"
) -> Started[DeploymentInfo]:
    comment = DecisionRequest(comment=f"{decision} by {who.name}")
    return use.decide(settings, who, info.id, decision, comment)


def _aliases(settings: Settings, name: str) -> dict[str, str]:
    model = mlflow_backend.client(settings).get_registered_model(name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _stages(info: DeploymentInfo) -> dict[str, str]:
    return {s.name: s.status for s in info.stages}


def test_production_moves_once_two_other_approvers_approved(base: Settings, tmp_path: Path) -> None:
    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 2)
    info = _awaiting(settings, name)
    assert _stages(info) == {"validate": "passed", "staging": "passed", "production": "pending"}
    assert (info.approvals_required, info.approvals_given) == (2, 0)
    assert info.approval_expires_at is not None
    assert timedelta(hours=71) < as_utc(info.approval_expires_at) - utcnow() <= timedelta(hours=72)
    gates_config = info.stages[0].gates[0]
    assert gates_config.name == "gates_config" and "2 approvals" in gates_config.message
    assert _aliases(settings, name) == {"staging": "1"}  # production not touched
    assert [c.alias for c in ledger.history(settings, name)] == ["staging"]

    with pytest.raises(ForbiddenError, match="needs approvers other than the requester"):
        _decide(settings, ANA, info)
    with pytest.raises(ForbiddenError, match="needs the approver role"):
        _decide(settings, Principal("rob", Role.RESEARCHER), info)
    first = _decide(settings, BEA, info).wait(10)
    assert (first.status, first.approvals_given) == ("awaiting_approval", 1)
    with pytest.raises(ConflictError, match="bea already decided"):
        _decide(settings, BEA, info)
    assert deployments.get_deployment(settings, info.id).approvals_given == 1  # counted once
    assert _aliases(settings, name) == {"staging": "1"}

    done = _decide(settings, CY, info).wait(300)
    assert done.status == "succeeded", done.error
    assert _stages(done) == {"validate": "passed", "staging": "passed", "production": "passed"}
    assert [(d.approver, d.decision, d.comment) for d in done.approvals] == [
        ("bea", "approve", "approve by bea"),
        ("cy", "approve", "approve by cy"),
    ]
    assert _aliases(settings, name) == {"production": "1"}
    moves = ledger.history(settings, name)
    assert [(c.alias, c.to_version, c.changed_by) for c in moves][:2] == [
        ("staging", None, "ana"),
        ("production", "1", "ana"),
    ]
    assert {c.deployment_id for c in moves} == {info.id}
    with pytest.raises(ConflictError, match="is succeeded: it is not awaiting approval"):
        _decide(settings, Principal("dan", Role.APPROVER), info)


def test_a_deployment_awaiting_approval_holds_the_model_and_other_models_need_none(
    base: Settings, tmp_path: Path
) -> None:
    name, other = copy_version(base), copy_version(base)
    settings = _approving(base, tmp_path, name, 1)
    info = _awaiting(settings, name)
    with pytest.raises(ConflictError, match="has a deployment awaiting approval"):
        use.deploy(settings, ANA, name, DeployRequest(version="1", target_stage="staging"))
    free = use.deploy(settings, ANA, other, DeployRequest(version="1")).wait(300)
    assert free.status == "succeeded" and free.approvals_required == 0  # no approvals asked
    assert reap_interrupted(settings) == 0  # nobody runs it, and that is no crash
    assert deployments.get_deployment(settings, info.id).status == "awaiting_approval"
    with pytest.raises(InvalidInputError, match="comment"):
        checked(DecisionRequest, {"comment": ""})  # a decision needs its reason


def test_one_rejection_ends_it_and_production_keeps_its_version(
    base: Settings, tmp_path: Path
) -> None:
    name = copy_version(base)
    plain = use.deploy(base, ANA, name, DeployRequest(version="1")).wait(300)
    assert plain.status == "succeeded"  # v1 in production, with no approvals asked then
    second = add_version(base, name, "2")
    settings = _approving(base, tmp_path, name, 2)
    info = _awaiting(settings, name, second)
    _decide(settings, BEA, info).wait(10)
    rejected = _decide(settings, CY, info, "reject").wait(10)
    assert rejected.status == "rejected"
    assert rejected.error == "Rejected by cy: reject by cy"
    assert _stages(rejected)["production"] == "skipped"
    assert _aliases(settings, name)["production"] == "1"
    with pytest.raises(ConflictError, match="is rejected"):
        _decide(settings, Principal("dan", Role.APPROVER), info)
    again = use.deploy(settings, ANA, name, DeployRequest(version=second)).wait(300)
    assert again.status == "awaiting_approval"  # the model is free again
    withdrawn = _decide(settings, ANA, again, "reject").wait(10)  # the requester withdraws
    assert withdrawn.status == "rejected" and withdrawn.error == "Rejected by ana: reject by ana"


def test_an_expired_deployment_is_rejected_by_the_reaper_or_at_the_next_decision(
    base: Settings, tmp_path: Path
) -> None:
    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 2, approval_expiry_hours=1)
    first = _awaiting(settings, name)
    assert (
        timedelta(minutes=59) < as_utc(first.approval_expires_at) - utcnow() <= timedelta(hours=1)
    )
    _decide(settings, BEA, first).wait(10)
    _pass_expiry(settings, first.id)
    assert reap_interrupted(settings) == 1
    expired = deployments.get_deployment(settings, first.id)
    assert expired.status == "rejected"
    assert expired.error.startswith("Expired at ") and "with 1 of 2 approvals" in expired.error

    second = _awaiting(settings, name)  # the expiry released the model
    _pass_expiry(settings, second.id)
    with pytest.raises(ConflictError, match=r"Expired at .* with 0 of 2 approvals"):
        _decide(settings, BEA, second)
    assert deployments.get_deployment(settings, second.id).status == "rejected"
    assert _approvals(settings, second.id) == 0  # the late approval was not kept
    assert "production" not in _aliases(settings, name)


def test_approvals_from_several_processes_at_once_count_exactly_n(
    base: Settings, tmp_path: Path
) -> None:
    """Three approvers in three processes approve at the same moment; two are needed:
    exactly two approvals are kept, one of them completes the count, the third is refused,
    and production moves once."""
    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 2)
    info = _awaiting(settings, name)
    outcomes = at_once(approve_together, settings, info.id, ("bea", "cy", "dan"))
    assert sorted(outcomes.values()) == ["approved", "conflict", "ready"], outcomes
    assert _approvals(settings, info.id) == 2
    reopened = deployments.get_deployment(settings, info.id)
    assert reopened.status == "pending" and reopened.approved
    refused = next(who for who, outcome in outcomes.items() if outcome == "conflict")
    assert refused not in {d.approver for d in reopened.approvals}

    # The process whose approval completed the count has exited without starting it
    # (the domain call does not start the flow): the reaper closes it, production untouched.
    assert reap_interrupted(settings) == 1
    closed = deployments.get_deployment(settings, info.id)
    assert closed.status == "failed" and "after the staging stage" in closed.error
    assert "production" not in _aliases(settings, name)


def test_a_process_that_stops_while_awaiting_approval_loses_nothing(
    base: Settings, tmp_path: Path
) -> None:
    """The deployment waits in its record, not in a process: after its runner is gone the
    approvals still come in and the production stage runs in whichever process completes
    them."""
    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 1)
    info = _awaiting(settings, name)
    with session_scope(settings.metadata_url) as session:
        row = session.get(Deployment, info.id)
        assert row is not None and row.owner == ""  # no process holds it
    assert reap_interrupted(settings) == 0
    reopened, ready = deployments.decide(settings, info.id, BEA, "approve", "fine")
    assert ready and reopened.status == "pending"
    run_deployment(settings, info.id)  # as this process's thread would
    done = deployments.get_deployment(settings, info.id)
    assert done.status == "succeeded", done.error
    assert _aliases(settings, name) == {"production": "1"}


def test_rollbacks_and_staging_deployments_need_no_approval(base: Settings, tmp_path: Path) -> None:
    name = copy_version(base)
    assert use.deploy(base, ANA, name, DeployRequest(version="1")).wait(300).status == "succeeded"
    second = add_version(base, name, "2")
    assert (
        use.deploy(base, ANA, name, DeployRequest(version=second)).wait(300).status == "succeeded"
    )
    settings = _approving(base, tmp_path, name, 3)
    staged = use.deploy(settings, ANA, name, DeployRequest(version=second, target_stage="staging"))
    assert staged.wait(300).status == "succeeded"
    back = use.roll_back(settings, "ana", name, use.RollbackRequest(reason="bad v2")).wait(300)
    assert back.status == "succeeded" and back.approvals_required == 0
    assert _aliases(settings, name)["production"] == "1"


def _pass_expiry(settings: Settings, deployment_id: str) -> None:
    """Time passes: the deployment's expiry is now a second ago."""
    with session_scope(settings.metadata_url) as session:
        session.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(approval_expires_at=utcnow() - timedelta(seconds=1))
        )


def _approvals(settings: Settings, deployment_id: str) -> int:
    with session_scope(settings.metadata_url) as session:
        return session.scalar(
            select(func.count()).select_from(Approval).where(Approval.subject_id == deployment_id)
        )


def _people(settings: Settings) -> dict[str, tuple[str, str]]:
    """Users of this test, as {who: (user name, token)}: two approvers and a researcher
    (names of their own: the users table is the session's)."""
    from mlops import users

    suffix = uuid.uuid4().hex[:6]
    people = {}
    for who, role in (("ana", Role.APPROVER), ("bea", Role.APPROVER), ("rob", Role.RESEARCHER)):
        users.add_user(settings, f"{who}-{suffix}", role, by="test")
        people[who] = (
            f"{who}-{suffix}",
            users.create_token(settings, f"{who}-{suffix}", "t").token,
        )
    return people


def _auth(person: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {person[1]}"}


def test_the_api_asks_approvers_and_refuses_everyone_else(base: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mlops.app import create_app

    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 1)
    people = _people(settings)
    api = "/api/v1/ml"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        asked = client.post(
            f"{api}/models/{name}/deploy",
            params={"wait": True},
            json={"version": "1", "reason": "quarterly"},
            headers=_auth(people["ana"]),
        )
        assert asked.status_code == 200, asked.text
        record = asked.json()
        assert record["status"] == "awaiting_approval" and record["approvals_required"] == 1
        assert record["requested_by"] == people["ana"][0]
        here = f"{api}/deployments/{record['id']}"
        comment = {"comment": "looks right"}
        by_researcher = client.post(f"{here}/approve", json=comment, headers=_auth(people["rob"]))
        assert by_researcher.status_code == 403
        assert "needs the approver role" in by_researcher.json()["error"]["message"]
        by_requester = client.post(f"{here}/approve", json=comment, headers=_auth(people["ana"]))
        assert by_requester.status_code == 403
        assert "other than the requester" in by_requester.json()["error"]["message"]
        no_comment = client.post(f"{here}/approve", json={}, headers=_auth(people["bea"]))
        assert no_comment.status_code == 422
        unknown = client.post(
            f"{api}/deployments/nope/approve", json=comment, headers=_auth(people["bea"])
        )
        assert unknown.status_code == 404
        assert client.get(here).json()["approvals"] == []  # the refusals kept nothing

        approved = client.post(
            f"{here}/approve", params={"wait": True}, json=comment, headers=_auth(people["bea"])
        )
        assert approved.status_code == 200, approved.text
        done = approved.json()
        assert done["status"] == "succeeded", done["error"]
        assert [(d["approver"], d["comment"]) for d in done["approvals"]] == [
            (people["bea"][0], "looks right")
        ]
        late = client.post(f"{here}/reject", json=comment, headers=_auth(people["bea"]))
        assert late.status_code == 409 and "not awaiting approval" in late.text
    assert _aliases(settings, name) == {"production": "1"}


def test_the_console_shows_the_approval_step_and_takes_decisions(
    base: Settings, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient
    from tests.support.console_pages import csrf, sign_in

    from mlops.app import create_app

    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 1)
    people = _people(settings)
    ana, bea = people["ana"], people["bea"]
    info = _awaiting(settings, name, requester=Principal(ana[0], Role.APPROVER))
    page = f"/deployments/{info.id}"
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        anonymous = client.get(page).text
        assert "<h2>approval</h2>" in anonymous and "0 of 1" in anonymous
        assert "Sign in</a> to approve or reject" in anonymous

        sign_in(client, settings, page, ana[1])
        own = client.get(page).text
        assert ">Approve</button>" not in own and "Withdraw (reject)" in own

        sign_in(client, settings, page, people["rob"][1])
        assert "Approving needs the approver role" in client.get(page).text
        token = csrf(client, "/experiments")  # no form on the page for a researcher
        refused = client.post(f"{page}/approve", data={"csrf": token, "comment": "x"})
        assert refused.status_code == 403

        sign_in(client, settings, page, bea[1])
        shown = client.get(page).text
        assert ">Approve</button>" in shown and ">Reject</button>" in shown
        empty = client.post(f"{page}/approve", data={"csrf": csrf(client, page), "comment": ""})
        assert empty.status_code == 422 and "comment" in empty.text
        assert deployments.get_deployment(settings, info.id).approvals == []
        sent = client.post(
            f"{page}/approve",
            data={"csrf": csrf(client, page), "comment": "checked the holdout"},
            follow_redirects=False,
        )
        assert sent.status_code == 303 and sent.headers["location"] == page
        for thread in threading.enumerate():  # the production stage, started by the approval
            if thread.name.startswith("deploy-"):
                thread.join(timeout=120)
        final = client.get(page).text
        assert "is now in production" in final and "checked the holdout" in final
        assert re.search(r'<li class="step passed" id="approval"', final)
    assert _aliases(settings, name) == {"production": "1"}


def test_mlops_models_approve_and_deploy_exit_codes(
    base: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL
    from typer.testing import CliRunner

    from mlops.cli import app

    name = copy_version(base)
    settings = _approving(base, tmp_path, name, 1)
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(settings.config_dir))
    monkeypatch.setenv("MLOPS_PREFECT_API_URL", str(PREFECT_API_URL.value()))
    runner = CliRunner()
    people = {who: name for who, (name, _) in _people(settings).items()}
    monkeypatch.setenv("MLOPS_AUTHOR", people["ana"])
    asked = runner.invoke(app, ["models", "deploy", name, "1"])
    assert asked.exit_code == 14, asked.output
    assert "awaits approval (0 of 1" in asked.output and "mlops models approve" in asked.output
    deployment_id = deployments.list_deployments(settings, name)[0].id
    own = runner.invoke(app, ["models", "approve", deployment_id[:8], "-c", "mine"])
    assert own.exit_code == 13 and "other than the requester" in own.output
    silent = runner.invoke(app, ["models", "approve", deployment_id[:8]])
    assert silent.exit_code == 2 and "comment" in silent.output
    for author, code, says in (
        ("nobody-at-all", 6, "must be a user of the platform"),  # a name is not a person
        (people["rob"], 13, "needs the approver role"),
    ):
        monkeypatch.setenv("MLOPS_AUTHOR", author)
        refused = runner.invoke(app, ["models", "approve", deployment_id[:8], "-c", "x"])
        assert refused.exit_code == code and says in refused.output, refused.output
    assert deployments.get_deployment(settings, deployment_id).approvals == []

    monkeypatch.setenv("MLOPS_AUTHOR", people["bea"])
    approved = runner.invoke(app, ["models", "approve", deployment_id[:8], "-c", "fine", "--json"])
    assert approved.exit_code == 0, approved.output
    record = json.loads(approved.stdout[approved.stdout.index("{") :])
    assert record["status"] == "succeeded"
    assert record["approvals"][0]["approver"] == people["bea"]
    status = runner.invoke(app, ["models", "status", deployment_id[:8]])
    assert "approval" in status.output and f"✓ {people['bea']}: fine" in status.output
