"""Publishing a prompt when the gate config asks approvals for prompts: the publish becomes
a request (after the checks a publish makes), N approvers other than the requester approve
it, each once with a comment, and the last approval publishes it (commit by the requester,
committed by that approver, the approvers named); a rejection or the expiry ends it and
the live version never moved. Through the API, the CLI, the console and several
processes at once, on a real git repository."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from tests.support.approvals import approve_publication_together, at_once
from tests.support.console_pages import csrf, sign_in
from tests.support.prompt_git import git
from typer.testing import CliRunner

from mlops import users
from mlops.app import create_app
from mlops.cli import app as cli
from mlops.db import Approval, PublicationRequest, session_scope, utcnow
from mlops.prompts.publishing import OUTSIDE
from mlops.reaper import reap_interrupted, watch_aliases
from mlops.roles import Role
from mlops.settings import PROJECT_ROOT, Settings

API = "/api/v1/prompt-governance"
META = {
    "description": "greeting",
    "variables": {"who": {"type": "string"}},
    "examples": [{"name": "desk", "variables": {"who": "desk"}, "expected": "Hello desk"}],
}


def _settings(home: Path, approvals: int) -> Settings:
    config_dir = home.parent / "config"
    shutil.copytree(PROJECT_ROOT / "config", config_dir)
    gates = config_dir / "gates.yaml"
    gates.write_text(gates.read_text() + f"\nprompts:\n  approvals: {approvals}\n")
    settings = Settings(
        home=home, prompts_mlflow_registry=False, api_token="t0ken", config_dir=config_dir
    )
    settings.ensure_dirs()
    return settings


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return _settings(tmp_path / "home", 2)


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = "Bearer t0ken"
        yield test_client


def _approvers(settings: Settings, *names: str) -> dict[str, str]:
    tokens = {}
    for name in names:
        users.add_user(settings, name, Role.APPROVER, by="test")
        tokens[name] = users.create_token(settings, name, "t").token
    return tokens


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client: TestClient, template: str = "Hello {{ who }}") -> None:
    body = {"name": "greet", "template": template, "metadata": META, "message": "first"}
    assert client.post(f"{API}/templates", json=body).status_code == 201


def _live(client: TestClient) -> Any:
    return client.get(f"{API}/templates/greet").json()["published_version"]


def test_a_publication_waits_for_two_other_approvers_then_goes_live(
    client: TestClient, settings: Settings
) -> None:
    _create(client)
    tokens = _approvers(settings, "bea", "cy")
    asked = client.post(f"{API}/templates/greet/publish", json={"version": 1, "message": "go"})
    assert asked.status_code == 202, asked.text
    request = asked.json()
    assert request["status"] == "awaiting_approval" and request["approvals_required"] == 2
    assert request["requested_by"] == "admin"
    assert _live(client) is None  # the live label has not moved
    here = f"{API}/publications/{request['id']}"
    comment = {"comment": "reads well"}

    own = client.post(f"{here}/approve", json=comment)  # the bootstrap admin asked for it
    assert own.status_code == 403 and "other than the requester" in own.text
    first = client.post(f"{here}/approve", json=comment, headers=_as(tokens["bea"]))
    assert first.status_code == 200 and first.json()["status"] == "awaiting_approval"
    twice = client.post(f"{here}/approve", json=comment, headers=_as(tokens["bea"]))
    assert twice.status_code == 409 and "each approver counts once" in twice.text
    assert _live(client) is None
    again = client.post(f"{API}/templates/greet/publish", json={"version": 1})
    assert again.status_code == 409 and "awaiting approval" in again.text

    done = client.post(f"{here}/approve", json=comment, headers=_as(tokens["cy"])).json()
    assert done["status"] == "published" and done["sha"]
    assert [d["approver"] for d in done["approvals"]] == ["bea", "cy"]
    assert _live(client) == 1
    event = client.get(f"{API}/templates/greet").json()["releases"][-1]
    assert (event["event"], event["by"], event["approved_by"]) == (
        "publish",
        "admin",
        ["bea", "cy"],
    )
    repo = settings.prompts_dir
    head = git(repo, "log", "-1", "--format=%an|%cn|%B").strip()
    assert head.startswith("admin|cy|publish greet v1") and "Approved-by: bea, cy" in head
    assert "approved by bea, cy" in git(repo, "tag", "-n1", "greet/v1")
    listed = client.get(f"{API}/publications", params={"template": "greet"}).json()
    assert [(r["id"], r["status"]) for r in listed] == [(request["id"], "published")]


def test_refused_requests_and_a_rejection_leave_the_live_version(
    client: TestClient, settings: Settings
) -> None:
    _create(client, "Hi {{ who }}")  # fails its example: "Hello desk" expected
    failing = client.post(f"{API}/templates/greet/publish", json={"version": 1})
    assert failing.status_code == 422 and "fails 1 example" in failing.text
    assert client.get(f"{API}/publications").json() == []  # nothing recorded
    edit = {"base_version": 1, "template": "Hello {{ who }}", "message": "fix"}
    assert client.put(f"{API}/templates/greet", json=edit).status_code == 200
    tokens = _approvers(settings, "bea")
    request = client.post(f"{API}/templates/greet/publish", json={"version": 2}).json()
    here = f"{API}/publications/{request['id']}"
    empty = client.post(f"{here}/reject", json={"comment": ""}, headers=_as(tokens["bea"]))
    assert empty.status_code == 422
    rejected = client.post(f"{here}/reject", json={"comment": "no"}, headers=_as(tokens["bea"]))
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["error"] == "Rejected by bea: no"
    assert _live(client) is None
    late = client.post(f"{here}/approve", json={"comment": "ok"}, headers=_as(tokens["bea"]))
    assert late.status_code == 409 and "is rejected" in late.text
    retry = client.post(f"{API}/templates/greet/publish", json={"version": 2})
    assert retry.status_code == 202  # the template is free again


def test_an_expired_publication_is_rejected(client: TestClient, settings: Settings) -> None:
    _create(client)
    tokens = _approvers(settings, "bea")
    first = client.post(f"{API}/templates/greet/publish", json={"version": 1}).json()
    _pass_expiry(settings, first["id"])
    assert reap_interrupted(settings) == 1
    expired = client.get(f"{API}/publications/{first['id']}").json()
    assert expired["status"] == "rejected" and expired["error"].startswith("Expired at ")
    second = client.post(f"{API}/templates/greet/publish", json={"version": 1}).json()
    _pass_expiry(settings, second["id"])
    late = client.post(
        f"{API}/publications/{second['id']}/approve",
        json={"comment": "ok"},
        headers=_as(tokens["bea"]),
    )
    assert late.status_code == 409 and "0 of 2 approvals" in late.text
    assert _live(client) is None and _decisions(settings) == 0


def test_approvals_of_a_publication_from_several_processes_publish_it_once(
    client: TestClient, settings: Settings
) -> None:
    _create(client)
    request = client.post(f"{API}/templates/greet/publish", json={"version": 1}).json()
    outcomes = at_once(approve_publication_together, settings, request["id"], ("bea", "cy", "dan"))
    assert sorted(outcomes.values()) == ["approved", "conflict", "ready"], outcomes
    assert _decisions(settings) == 2
    releases = client.get(f"{API}/templates/greet").json()["releases"]
    assert [e["event"] for e in releases] == ["publish"] and _live(client) == 1


def test_mlops_prompts_publish_approve_and_requests(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(client)
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(settings.config_dir))
    monkeypatch.setenv("MLOPS_PROMPTS_MLFLOW_REGISTRY", "false")
    runner = CliRunner()
    _approvers(settings, "ana", "bea", "cy")
    monkeypatch.setenv("MLOPS_AUTHOR", "ana")
    asked = runner.invoke(cli, ["prompts", "publish", "greet", "1"])
    assert asked.exit_code == 14, asked.output
    assert "awaits approval (0 of 2" in asked.output and "mlops prompts approve" in asked.output
    request_id = json.loads(runner.invoke(cli, ["prompts", "requests", "--json"]).stdout)[0]["id"]
    own = runner.invoke(cli, ["prompts", "approve", request_id[:8], "-c", "mine"])
    assert own.exit_code == 13
    for who, code in (("bea", 14), ("cy", 0)):
        monkeypatch.setenv("MLOPS_AUTHOR", who)
        done = runner.invoke(cli, ["prompts", "approve", request_id[:8], "-c", f"ok {who}"])
        assert done.exit_code == code, done.output
    assert "published: greet v1 is live" in done.output
    listed = runner.invoke(cli, ["prompts", "requests", "greet"])
    assert "published" in listed.output and "2/2" in listed.output


def test_the_console_shows_the_request_and_takes_decisions(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "home", 1)
    tokens = _approvers(settings, "bea")
    users.add_user(settings, "rob", Role.RESEARCHER, by="test")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = "Bearer t0ken"
        _create(client)
        del client.headers["Authorization"]
        page = "/prompts/greet"
        sign_in(client, settings, page)  # the bootstrap admin asks
        asked = client.post(
            f"{page}/publish",
            data={"csrf": csrf(client, page), "version": "1", "message": "go"},
            follow_redirects=True,
        )
        assert "awaits approval by 1 approver(s) other than you" in asked.text
        assert "v1 awaits approval: 0 of 1" in asked.text
        assert ">Approve</button>" not in asked.text and "Withdraw (reject)" in asked.text

        sign_in(client, settings, page, tokens["bea"])
        shown = client.get(page).text
        assert ">Approve</button>" in shown
        request_id = client.get(f"{API}/publications", headers=_as(tokens["bea"])).json()[0]["id"]
        empty = client.post(
            f"/prompts/publications/{request_id}/approve",
            data={"csrf": csrf(client, page), "comment": ""},
        )
        assert empty.status_code == 422 and "needs a comment" in empty.text
        done = client.post(
            f"/prompts/publications/{request_id}/approve",
            data={"csrf": csrf(client, page), "comment": "fine"},
            follow_redirects=True,
        )
        assert "Published version 1 of greet" in done.text
        assert "(approved by bea)" in done.text and "awaits approval" not in done.text


def _pass_expiry(settings: Settings, request_id: str) -> None:
    with session_scope(settings.metadata_url) as session:
        session.execute(
            update(PublicationRequest)
            .where(PublicationRequest.id == request_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def _decisions(settings: Settings) -> int:
    with session_scope(settings.metadata_url) as session:
        return session.scalar(select(func.count()).select_from(Approval)) or 0


def test_the_live_label_history_answers_who_made_which_version_live_when(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishes and rollbacks, newest first, with the version live at moments between
    them; a `git tag -f` of the label outside the platform is reported, and renders keep
    following the recorded release."""
    settings = _settings(tmp_path / "home", 0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = "Bearer t0ken"
        _create(client)
        edit = {"base_version": 1, "template": "Hello {{ who }}{# v2 #}", "message": "a note"}
        assert client.put(f"{API}/templates/greet", json=edit).status_code == 200
        history = f"{API}/templates/greet/live-history"
        assert client.get(history).json()["changes"] == []  # never published
        moments = [utcnow()]
        for path, version in (("publish", 1), ("publish", 2), ("rollback", 1)):
            body = {"version": version, "message": f"{path} v{version}"}
            assert client.post(f"{API}/templates/greet/{path}", json=body).status_code == 200
            moments.append(utcnow())
        found = client.get(history).json()
        assert [
            (c["event"], c["from_version"], c["to_version"], c["by"]) for c in found["changes"]
        ] == [
            ("rollback", 2, 1, "admin"),
            ("publish", 1, 2, "admin"),
            ("publish", None, 1, "admin"),
        ]
        live = [
            client.get(history, params={"at": m.isoformat()}).json()["live_at"] for m in moments
        ]
        assert live == [None, 1, 2, 1]
        assert found["label_moved_outside"] is None

        v2 = found["changes"][1]["sha"]
        git(settings.prompts_dir, "tag", "-f", "greet/production", v2)
        moved = client.get(history).json()
        assert moved["label_moved_outside"] == v2
        render = client.post(f"{API}/templates/greet/render", json={"variables": {"who": "x"}})
        assert render.json()["version"] == 1  # the recorded release, not the moved tag
        page = client.get("/prompts/greet").text
        assert 'id="label-moved"' in page and v2[:10] in page

        # recorded once as an external change, flagged, and blocking rollbacks until an
        # approver acknowledges it, which puts the tag back on the recorded release
        assert watch_aliases(settings) == 1 and watch_aliases(settings) == 0
        event = client.get(f"{API}/templates/greet").json()["releases"][-1]
        assert (event["event"], event["sha"], event["by"]) == ("external", v2, OUTSIDE)
        flags = client.get("/healthz").json()["flags"]
        assert any("live tag of prompt greet" in f for f in flags)
        back = client.post(f"{API}/templates/greet/rollback", json={"version": 2})
        assert back.status_code == 409 and "acknowledges it first" in back.text
        known = client.post(f"{API}/templates/greet/acknowledge", json={"comment": "mine"})
        assert known.status_code == 200, known.text
        v1 = found["changes"][0]["sha"]
        assert git(settings.prompts_dir, "rev-parse", "greet/production^{commit}").strip() == v1
        assert not any("greet" in f for f in client.get("/healthz").json()["flags"])
        again = client.post(f"{API}/templates/greet/acknowledge", json={"comment": "x"})
        assert again.status_code == 409
        assert (
            client.post(f"{API}/templates/greet/rollback", json={"version": 2}).status_code == 200
        )
        assert client.get(history).json()["label_moved_outside"] is None

    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(settings.config_dir))
    shown = CliRunner().invoke(cli, ["prompts", "live", "greet", "--at", moments[2].isoformat()])
    assert shown.exit_code == 0, shown.output
    assert "Live at" in shown.output and ": v2." in shown.output
    bad = CliRunner().invoke(cli, ["prompts", "live", "greet", "--at", "soon"])
    assert bad.exit_code == 2


def test_a_publish_that_fails_at_the_last_approval_takes_it_back(
    client: TestClient, settings: Settings
) -> None:
    """The template is archived while its publication waits: the last approval's publish
    is refused, that approval is not kept, the request waits again; a request a stopped
    process left `publishing` is settled from git by the reaper."""
    _create(client)
    tokens = _approvers(settings, "bea", "cy")
    request = client.post(f"{API}/templates/greet/publish", json={"version": 1}).json()
    here = f"{API}/publications/{request['id']}"
    first = client.post(f"{here}/approve", json={"comment": "a"}, headers=_as(tokens["bea"]))
    assert first.status_code == 200
    archive = client.post(f"{API}/templates/greet/archive", json={"message": "retired"})
    assert archive.status_code == 200
    late = client.post(f"{here}/approve", json={"comment": "b"}, headers=_as(tokens["cy"]))
    assert late.status_code == 409 and "is archived" in late.text
    back = client.get(here).json()
    assert back["status"] == "awaiting_approval"
    assert [d["approver"] for d in back["approvals"]] == ["bea"]  # cy's approval taken back
    assert _live(client) is None

    restored = client.post(f"{API}/templates/greet/restore", json={"message": "back"})
    assert restored.status_code == 200
    _stuck_publishing(settings, request["id"])  # as a process killed mid-publish leaves it
    assert reap_interrupted(settings) == 1
    assert client.get(here).json()["status"] == "awaiting_approval"  # git shows no release
    assert client.get(here).json()["approvals"] == []  # its last approval taken back

    done = client.post(f"{here}/approve", json={"comment": "c"}, headers=_as(tokens["bea"]))
    assert done.json()["status"] == "awaiting_approval"
    done = client.post(f"{here}/approve", json={"comment": "d"}, headers=_as(tokens["cy"]))
    assert done.json()["status"] == "published" and _live(client) == 1
    _stuck_publishing(settings, request["id"])  # killed after git published it
    assert reap_interrupted(settings) == 1
    settled = client.get(here).json()
    assert settled["status"] == "published" and settled["sha"] == done.json()["sha"]


def _stuck_publishing(settings: Settings, request_id: str) -> None:
    with session_scope(settings.metadata_url) as session:
        session.execute(
            update(PublicationRequest)
            .where(PublicationRequest.id == request_id)
            .values(
                status="publishing",
                active_template="greet",
                publishing_since=utcnow() - timedelta(minutes=10),
            )
        )
