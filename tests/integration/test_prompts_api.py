"""Prompt governance over HTTP: every endpoint, auth on mutations, JSON errors, usage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.prompt_git import git, repo_snapshot

from mlops.app import create_app
from mlops.settings import Settings

API = "/api/v1/prompt-governance"
META = {"description": "greeting", "owner": "desk", "variables": {"who": {"type": "string"}}}


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", prompts_mlflow_registry=False, api_token="t0ken")
    settings.ensure_dirs()
    return settings


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = "Bearer t0ken"
        yield test_client


def _create(client: TestClient, name: str = "greet", template: str = "Hello {{ who }}") -> Any:
    body = {"name": name, "template": template, "metadata": META, "message": "first"}
    return client.post(f"{API}/templates", json=body)


def _error(response: Any) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert {"code", "message", "details", "request_id"} <= set(error)
    return error


def test_lifecycle_create_edit_diff_publish_render_rollback(
    client: TestClient, settings: Settings
) -> None:
    created = _create(client)
    assert created.status_code == 201 and created.json()["version"] == 1
    assert created.json()["metadata"]["owner"] == "desk"
    edit = {
        "base_version": 1,
        "template": "Hi {{ who }}!",
        "message": "friendlier",
        "author": "bob",
    }
    updated = client.put(f"{API}/templates/greet", json=edit).json()
    assert updated["version"] == 2 and updated["template"] == "Hi {{ who }}!"
    stale = client.put(f"{API}/templates/greet", json={**edit, "template": "lost {{ who }}"})
    assert stale.status_code == 409 and _error(stale)["details"]["current_version"] == 2
    versions = client.get(f"{API}/templates/greet/versions").json()
    assert [(v["version"], v["author"], v["committer"]) for v in versions] == [
        (1, "admin", "admin"),  # the bootstrap token is the admin's
        (2, "bob", "admin"),
    ]
    diff = client.get(f"{API}/templates/greet/diff", params={"from": 1, "to": 2}).json()
    assert "+Hi {{ who }}!" in diff["template_diff"]
    never = client.post(f"{API}/templates/greet/rollback", json={"version": 2})
    assert never.status_code == 409  # nothing published yet
    assert client.post(f"{API}/templates/greet/publish", json={"version": 1}).status_code == 200
    assert (
        client.post(f"{API}/templates/greet/publish", json={"version": 2}).json()["tag"]
        == "greet/v2"
    )
    render = client.post(f"{API}/templates/greet/render", json={"variables": {"who": "desk"}})
    assert render.status_code == 200 and render.json()["output"] == "Hi desk!"
    back = client.post(f"{API}/templates/greet/rollback", json={"version": 1, "message": "bad"})
    assert back.json()["event"] == "rollback"
    assert (
        client.post(f"{API}/templates/greet/render", json={"variables": {"who": "a"}}).json()[
            "output"
        ]
        == "Hello a"
    )
    v2 = client.post(
        f"{API}/templates/greet/render", json={"variables": {"who": "a"}, "version": 2}
    )
    assert v2.json()["output"] == "Hi a!"
    detail = client.get(f"{API}/templates/greet", params={"version": 1}).json()
    assert (
        detail["version"] == 1
        and detail["published_version"] == 1
        and detail["status"] == "published"
    )
    assert [e["event"] for e in detail["releases"]] == ["publish", "publish", "rollback"]
    log = git(settings.prompts_dir, "log", "--format=%s", "-5").splitlines()
    assert log == [
        "rollback greet v1",
        "publish greet v2",
        "publish greet v1",
        "friendlier",
        "first",
    ]


def test_bad_authors_and_never_published_rollbacks_are_422_and_change_nothing(
    client: TestClient, settings: Settings
) -> None:
    _create(client)
    client.put(f"{API}/templates/greet", json={"base_version": 1, "template": "Hi {{ who }}"})
    client.post(f"{API}/templates/greet/publish", json={"version": 1})
    before = repo_snapshot(settings.prompts_dir)
    for author in ("Bob <bob@corp.com>", "x\ny"):
        edit = {"base_version": 2, "template": "Hey {{ who }}", "author": author}
        response = client.put(f"{API}/templates/greet", json=edit)
        assert response.status_code == 422, response.text
    rollback = client.post(f"{API}/templates/greet/rollback", json={"version": 2})
    assert rollback.status_code == 422
    assert _error(rollback)["details"]["published_versions"] == [1]
    assert repo_snapshot(settings.prompts_dir) == before
    ok = client.put(f"{API}/templates/greet", json={"base_version": 2, "template": "Yo {{ who }}"})
    assert ok.status_code == 200 and ok.json()["version"] == 3
    files = git(settings.prompts_dir, "show", "--name-only", "--format=", "HEAD").split()
    assert files == ["greet/template.j2"]


def test_list_shows_versions_status_and_calls(client: TestClient) -> None:
    _create(client)
    client.post(
        f"{API}/templates/greet/render", json={"variables": {"who": "a"}, "label": "latest"}
    )
    listing = {t["name"]: t for t in client.get(f"{API}/templates").json()}
    assert set(listing) >= {"greet", "market_summary", "risk_report", "trade_rationale"}
    greet = listing["greet"]
    assert greet["latest_version"] == 1 and greet["published_version"] is None
    assert greet["status"] == "draft" and greet["calls"] == 1 and greet["updated"]
    found = client.get(f"{API}/templates", params={"q": "earnings"}).json()
    assert [t["name"] for t in found] == ["earnings_call_digest"]
    archived = client.post(f"{API}/templates/greet/archive", json={"message": "retired"})
    assert archived.json()["status"] == "archived"
    assert "greet" not in {t["name"] for t in client.get(f"{API}/templates").json()}
    every = client.get(f"{API}/templates", params={"include_archived": True}).json()
    assert "greet" in {t["name"] for t in every}
    assert client.post(f"{API}/templates/greet/restore", json={}).json()["status"] == "draft"


def test_usage_endpoint_and_outcomes(client: TestClient) -> None:
    _create(client)
    client.post(f"{API}/templates/greet/publish", json={"version": 1})
    ids = [
        client.post(f"{API}/templates/greet/render", json={"variables": {"who": str(i)}}).json()[
            "render_id"
        ]
        for i in range(4)
    ]
    failed = client.post(f"{API}/templates/greet/render", json={"variables": {}})
    assert failed.status_code == 422 and _error(failed)["details"]["kind"] == "missing_variable"
    assert client.post(f"{API}/renders/{ids[0]}/outcome", json={"success": True}).status_code == 200
    assert (
        client.post(f"{API}/renders/{ids[1]}/outcome", json={"success": False}).status_code == 200
    )
    assert client.post(f"{API}/renders/{ids[1]}/outcome", json={"success": True}).status_code == 409
    assert (
        client.post(f"{API}/renders/{'0' * 32}/outcome", json={"success": True}).status_code == 404
    )
    report = client.get(f"{API}/templates/greet/usage", params={"bucket": "day"}).json()
    assert report["total"]["calls"] == 5 and report["total"]["successes"] == 4
    assert report["total"]["success_rate"] == pytest.approx(0.8)
    assert report["failures_by_kind"] == {"missing_variable": 1}
    assert report["outcomes"] == {"success": 1, "failure": 1}
    assert report["versions"][0]["version"] == 1 and report["total"]["latency_p95_ms"] > 0
    assert len(report["series"]) == 1 and report["series"][0]["calls"] == 5
    assert client.get(f"{API}/templates/greet/usage", params={"bucket": "week"}).status_code == 422
    assert client.get(f"{API}/templates/nope/usage").status_code == 404


def test_examples_endpoint_and_refused_publish(client: TestClient, settings: Settings) -> None:
    report = client.post(f"{API}/templates/risk_report/test").json()
    assert report["passed"] and report["results"][0]["name"] == "one_breach"
    meta = {**META, "examples": [{"name": "e", "variables": {"who": "x"}, "expected": "Hi x"}]}
    _create(client)
    client.put(f"{API}/templates/greet", json={"base_version": 1, "metadata": meta})
    before = repo_snapshot(settings.prompts_dir)
    refused = client.post(f"{API}/templates/greet/publish", json={"version": 2})
    assert (
        refused.status_code == 422
        and _error(refused)["details"]["failures"][0]["output"] == "Hello x"
    )
    assert client.post(f"{API}/templates/greet/publish", json={"version": 9}).status_code == 404
    assert client.post(f"{API}/templates/greet/rollback", json={"version": 1}).status_code == 409
    assert repo_snapshot(settings.prompts_dir) == before


def test_mutations_need_the_token(settings: Settings) -> None:
    with TestClient(create_app(settings)) as anonymous:
        assert anonymous.get(f"{API}/templates").status_code == 200
        for method, path, body in [
            ("post", "/templates", {"name": "x", "template": "x"}),
            ("put", "/templates/market_summary", {"base_version": 1}),
            ("post", "/templates/market_summary/publish", {"version": 1}),
            ("post", "/templates/market_summary/rollback", {"version": 1}),
            ("post", "/templates/market_summary/archive", {}),
            ("post", "/templates/market_summary/render", {"variables": {}}),
            ("post", f"/renders/{'0' * 32}/outcome", {"success": True}),
        ]:
            response = getattr(anonymous, method)(f"{API}{path}", json=body)
            assert response.status_code == 401, path
    assert git(settings.prompts_dir, "rev-list", "--count", "HEAD").strip() == "5"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "../etc", "template": "x"}, 400, "unsafe_path"),
        ({"name": "a" * 101, "template": "x"}, 400, "unsafe_path"),
        ({"name": "ok", "template": "{{ secret }}"}, 422, "render_failed"),
        ({"name": "ok", "template": "{% if %}"}, 422, "render_failed"),
        ({"name": "ok", "template": "x", "metadata_yaml": "a: [b"}, 422, "invalid_input"),
        ({"name": "ok", "template": "x", "metadata": {"owner": 3}}, 422, "invalid_input"),
        (
            {"name": "ok", "template": "x", "metadata": {}, "metadata_yaml": "{}"},
            422,
            "invalid_input",
        ),
        ({"name": "ok", "template": "x" * 102_401}, 422, "invalid_input"),
        ({"name": "market_summary", "template": "x"}, 409, "conflict"),
    ],
)
def test_bad_creates_are_clear_errors_and_change_nothing(
    client: TestClient, settings: Settings, body: dict[str, Any], status: int, code: str
) -> None:
    before = repo_snapshot(settings.prompts_dir)
    response = client.post(f"{API}/templates", json=body)
    assert response.status_code == status and _error(response)["code"] == code
    assert "Traceback" not in response.text
    assert repo_snapshot(settings.prompts_dir) == before


def test_injection_through_the_api_never_executes(client: TestClient) -> None:
    meta = {"variables": {"x": {"type": "string"}}}
    for i, payload in enumerate(
        [
            "{{ x.__class__.__mro__ }}",
            "{{ '{0.__class__}'.format(x) }}",
            "{{ x|attr('__class__') }}",
        ]
    ):
        created = client.post(
            f"{API}/templates", json={"name": f"p{i}", "template": payload, "metadata": meta}
        )
        assert created.status_code == 201
        render = client.post(
            f"{API}/templates/p{i}/render", json={"variables": {"x": "a"}, "label": "latest"}
        )
        assert render.status_code == 422 and _error(render)["details"]["kind"] == "security"
    bad_syntax = client.post(
        f"{API}/templates", json={"name": "s", "template": "ok\n{{ x + }}", "metadata": meta}
    )
    assert _error(bad_syntax)["details"] == {"kind": "syntax", "line": 2, "column": 8}


def test_preview_renders_an_unsaved_draft_and_saves_nothing(
    client: TestClient, settings: Settings
) -> None:
    assert _create(client, "part", "part for {{ who }}").status_code == 201
    assert _create(client, "main", "[{% include 'part' %}]").status_code == 201
    client.put(f"{API}/templates/part", json={"base_version": 1, "template": "v2 {{ who }}"})
    before = repo_snapshot(settings.prompts_dir)
    draft = {
        "name": "main",
        "template": "[{% include 'part' %}] to {{ who }}",
        "metadata": META,
        "variables": {"who": "desk"},
    }
    latest = client.post(f"{API}/preview", json=draft)
    assert latest.status_code == 200 and latest.json()["output"] == "[v2 desk] to desk"
    # an edit of main v1 reads its includes as they were then (part v1)
    at_v1 = client.post(f"{API}/preview", json={**draft, "base_version": 1})
    assert at_v1.json()["output"] == "[part for desk] to desk"
    new = client.post(f"{API}/preview", json={**draft, "name": "new", "template": "hi {{ who }}"})
    assert new.json() == {"name": "new", "output": "hi desk"}

    broken = client.post(f"{API}/preview", json={**draft, "template": "{% for %}"})
    assert broken.status_code == 422 and _error(broken)["details"]["kind"] == "syntax"
    undeclared = client.post(f"{API}/preview", json={**draft, "template": "{{ nobody }}"})
    assert undeclared.status_code == 422 and "nobody" in _error(undeclared)["message"]
    missing = client.post(f"{API}/preview", json={**draft, "variables": {}})
    assert missing.status_code == 422 and _error(missing)["code"] == "render_failed"
    itself = client.post(f"{API}/preview", json={**draft, "name": "part"})
    assert itself.status_code == 422 and _error(itself)["details"]["kind"] == "recursion"

    assert repo_snapshot(settings.prompts_dir) == before
    calls = {t["name"]: t["calls"] for t in client.get(f"{API}/templates").json()}
    assert set(calls.values()) == {0} and {"part", "main"} <= set(calls)
