"""The console's prompts section through the platform's app: the card grid, the editor
(highlighted source, one input per variable, preview with inline errors and their line),
commits into the git history, diffs, publish and rollback, usage charts, the live preview
fragment, and refusals without sign-in or the session's CSRF token."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.console_pages import csrf, sign_in
from tests.support.prompt_git import git, repo_snapshot

from mlops.app import create_app
from mlops.errors import MlopsError
from mlops.prompts.store import PromptStore, open_store
from mlops.settings import Settings

META = "description: greeting\nowner: desk\nvariables:\n  who:\n    type: string\n"
META_TWO = META + "  times:\n    type: integer\n    required: false\n    default: 1\n"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", prompts_mlflow_registry=False, api_token="t0ken")
    settings.ensure_dirs()
    return settings


@pytest.fixture()
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture()
def store(settings: Settings, client: TestClient) -> PromptStore:
    store = open_store(settings)
    store.create("greet", "Hello {{ who }}\n", META, "alice", "tests", "first")
    return store


def _sign_in(client: TestClient, settings: Settings) -> None:
    sign_in(client, settings, "/prompts")


def _csrf(client: TestClient, path: str = "/prompts") -> str:
    return csrf(client, path)


def _card(page: str, name: str) -> str:
    cards = re.findall(r'<li class="card prompt-card">(.*?)</li>', page, re.S)
    found = [c for c in cards if f'href="/prompts/{name}"' in c]
    assert len(found) == 1, f"one card for {name}"
    return found[0]


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _edit(
    client: TestClient, name: str, template: str, action: str = "commit", **extra: Any
) -> Any:
    body = {
        "csrf": _csrf(client, f"/prompts/{name}/edit"),
        "name": name,
        "base_version": "1",
        "template": template,
        "metadata": META,
        "var.who": "desk",
        "action": action,
        **extra,
    }
    return client.post(f"/prompts/{name}/edit", data=body, follow_redirects=False)


def test_card_grid_shows_name_version_status_and_calls(
    client: TestClient, store: PromptStore
) -> None:
    store.render("greet", {"who": "a"}, "tests", label="latest")
    store.render("greet", {"who": "b"}, "tests", label="latest")
    page = client.get("/prompts")
    assert page.status_code == 200 and 'aria-current="page">Prompts' in page.text
    card = _text(_card(page.text, "greet"))
    assert "greeting" in card and "v1" in card and "not published" in card
    assert re.search(r"status\s*draft", card) and re.search(r"calls\s*2", card)
    for shipped in ("market_summary", "risk_report", "trade_rationale"):
        assert f'href="/prompts/{shipped}"' in page.text
    assert 'href="/static/prompts.css"' in page.text
    none = client.get("/prompts", params={"q": "no-such-thing"}).text
    assert "No template matches" in none and "prompt-card" not in none
    found = client.get("/prompts", params={"q": "earnings"}).text
    assert len(re.findall(r'class="card prompt-card"', found)) == 1


def test_card_grid_pages_when_long(
    client: TestClient, store: PromptStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.web.prompts import index

    monkeypatch.setattr(index, "CARDS_PER_PAGE", 2)
    first = client.get("/prompts").text
    assert len(re.findall(r'class="card prompt-card"', first)) == 2
    assert "Page 1 of 3" in first and 'rel="next"' in first
    last = client.get("/prompts", params={"page": 3}).text
    assert "Page 3 of 3" in last and 'rel="prev"' in last


def test_view_and_editor_show_highlighted_source_and_one_input_per_variable(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    view = client.get("/prompts/market_summary").text
    assert '<div class="highlight">' in view
    assert '<span class="cp">{{</span> <span class="nv">style</span>' in view
    assert '<span class="k">for</span>' in view
    _sign_in(client, settings)
    editor = client.get("/prompts/market_summary/edit")
    assert editor.status_code == 200
    assert '<label for="prompt-template">' in editor.text
    assert re.search(r'<textarea id="prompt-template" name="template"[^>]*>', editor.text)
    declared = store.detail("market_summary").metadata.variables
    inputs = re.findall(r'id="var-([a-z_]+)" name="var\.\1"', editor.text)
    assert sorted(inputs) == sorted(declared)
    for variable in declared:
        assert f'<label for="var-{variable}">' in editor.text
    assert '<script src="/static/prompts.js" defer></script>' in editor.text
    assert 'data-preview-url="/prompts/_preview"' in editor.text
    assert "You are a markets analyst. Write a concise summary of the US equities" in (
        html.unescape(editor.text)
    ), "the editor opens with the first example previewed"
    js = client.get("/static/prompts.js")
    assert js.status_code == 200 and "fetch(" in js.text and "FormData" in js.text


def test_preview_and_rejected_templates_show_the_error_line_and_commit_nothing(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    _sign_in(client, settings)
    shown = _edit(client, "greet", "Hi {{ who }}!\n", action="preview")
    assert shown.status_code == 200
    assert '<pre class="preview-output" aria-label="Rendered output">Hi desk!' in shown.text
    before, history = repo_snapshot(settings.prompts_dir), store.history("greet")
    broken = "Hello\nthere\n{{ who }\n"
    preview = _edit(client, "greet", broken, action="preview")
    assert preview.status_code == 200 and "Line 3" in _text(preview.text)
    assert "Template syntax error at line 3" in _text(preview.text)
    assert '<span class="hll">' in preview.text, "the failing line is marked in the draft"
    rejected = [
        (broken, 3, "syntax error"),
        ("Hello\n{{ whom }}\n", 2, "undeclared variable(s): whom"),
        ("Hello {{ who }}\n{{ who.__class__.__mro__ }}\n", 2, "Refused by the sandbox"),
    ]
    for template, line, message in rejected:
        refused = _edit(client, "greet", template)
        assert refused.status_code == 422, template
        text = _text(refused.text)
        assert f"Not committed — line {line}:" in text and message in text, text
        assert repo_snapshot(settings.prompts_dir) == before
        assert store.history("greet") == history


def test_an_edit_creates_a_version_in_the_history_and_a_diff(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    _sign_in(client, settings)
    saved = _edit(
        client,
        "greet",
        "Hello {{ who }}\nWelcome {{ times }} times.\n",
        metadata=META_TWO,
        message="welcome line",
        author="bob",
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/prompts/greet"
    assert "Committed version 2 of greet" in client.get("/prompts/greet").text
    versions = store.history("greet")
    assert [(v.version, v.author, v.committer, v.message) for v in versions] == [
        (1, "alice", "tests", "first"),
        (2, "bob", "admin", "welcome line"),  # committed by the signed-in user
    ]
    history = client.get("/prompts/greet/history").text
    rows = re.findall(r"<tr>\s*<td><input type=\"radio\".*?</tr>", history, re.S)
    assert [re.findall(r">v(\d+)</a>", r)[0] for r in rows] == ["2", "1"]
    assert "bob" in rows[0] and "admin" in rows[0] and "welcome line" in rows[0]
    assert 'href="/prompts/greet/diff?from=1&amp;to=2"' in history
    diff = client.get("/prompts/greet/diff", params={"from": 1, "to": 2}).text
    added = re.findall(r'<tr class="add">(.*?)</tr>', diff, re.S)
    assert any("Welcome" in row and '<span class="cp">{{</span>' in row for row in added)
    assert any("times" in _text(row) for row in added)
    assert "greet/template.j2@v1" in diff and "greet/prompt.yaml@v2" in diff
    stale = _edit(client, "greet", "Lost {{ who }}\n")  # the form still says base version 1
    assert stale.status_code == 409 and "reload and edit again" in _text(stale.text)
    assert len(store.history("greet")) == 2


def test_create_a_template_from_the_editor(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    _sign_in(client, settings)
    page = client.get("/prompts/_new").text
    assert '<label for="prompt-name">' in page and "Hello world!" in page
    body = {
        "csrf": _csrf(client, "/prompts/_new"),
        "name": "farewell",
        "template": "Bye {{ who }}\r\n",
        "metadata": META.replace("\n", "\r\n"),
        "var.who": "desk",
        "action": "commit",
    }
    created = client.post("/prompts/_new", data=body, follow_redirects=False)
    assert created.status_code == 303 and created.headers["location"] == "/prompts/farewell"
    assert store.detail("farewell").template == "Bye {{ who }}\n"
    again = client.post("/prompts/_new", data=body)
    assert again.status_code == 409 and "already exists" in again.text


def test_publish_then_rollback_changes_the_status_and_published_version(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    _sign_in(client, settings)
    assert _edit(client, "greet", "Hi {{ who }}\n").status_code == 303

    def facts() -> tuple[str, str]:
        page = client.get("/prompts/greet").text
        published = re.search(r'id="published-version">(.*?)</dd>', page, re.S)
        status = re.search(r'id="status">(.*?)</dd>', page)
        assert published and status
        return _text(published.group(1)).strip(), status.group(1)

    assert facts() == ("not published", "draft")
    csrf = _csrf(client, "/prompts/greet")
    for version in (1, 2):
        done = client.post(
            "/prompts/greet/publish",
            data={"csrf": csrf, "version": str(version), "message": "go"},
            follow_redirects=False,
        )
        assert done.status_code == 303
    page = client.get("/prompts/greet").text
    assert "Published version 2 of greet (tag greet/v2)" in page
    assert facts() == ("v2", "published")
    assert '<option value="1">v1</option>' in page, "v1 is offered as a rollback target"
    back = client.post(
        "/prompts/greet/rollback",
        data={"csrf": csrf, "version": "1", "message": "bad"},
        follow_redirects=False,
    )
    assert back.status_code == 303
    assert facts() == ("v1", "published")
    assert store.detail("greet").published_version == 1
    events = re.findall(r'<tr class="release"><td>(\w+)</td>', client.get("/prompts/greet").text)
    assert events == ["rollback", "publish", "publish"]
    assert git(settings.prompts_dir, "log", "--format=%s", "-1").strip() == "rollback greet v1"
    twice = client.post("/prompts/greet/publish", data={"csrf": csrf, "version": "1"})
    assert twice.status_code == 409 and "already live" in twice.text


def test_usage_charts_after_renders(client: TestClient, store: PromptStore) -> None:
    empty = client.get("/prompts/greet").text
    assert "No render of greet in the last 7 days" in empty and "<svg" not in empty
    for who in ("a", "b", "c"):
        store.render("greet", {"who": who}, "tests", label="latest")
    with pytest.raises(MlopsError):
        store.render("greet", {}, "tests", label="latest")
    page = client.get("/prompts/greet").text
    charts = re.findall(r'<svg class="chart"[^>]*aria-label="([^"]+)"', page)
    assert charts == [
        "Calls per hour",
        "Success rate per hour (%)",
        "Latency by version (ms)",
        "Mean latency per hour (ms)",
    ]
    for series in ("calls", "success rate", "p50", "p95", "mean latency"):
        assert f"<title>{series}</title></polyline>" in page, series
    assert re.search(r"<dt>calls</dt><dd class=\"num\">4</dd>", page)
    assert "75.0%" in page and "failed: missing_variable" in page
    daily = client.get("/prompts/greet", params={"bucket": "day", "days": 30}).text
    assert 'aria-label="Calls per day"' in daily


def test_changes_and_previews_need_sign_in_and_the_csrf_token(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    before = repo_snapshot(settings.prompts_dir)
    csrf = _csrf(client, "/prompts/greet/edit")
    editor = client.get("/prompts/greet/edit").text
    assert "to preview and commit changes" in editor and 'value="commit"' not in editor
    assert 'action="/prompts/greet/publish"' not in client.get("/prompts/greet").text
    body = {"csrf": csrf, "base_version": "1", "template": "X {{ who }}", "metadata": META}
    attempts = [
        ("/prompts/greet/edit", {**body, "action": "commit"}),
        ("/prompts/greet/publish", {"csrf": csrf, "version": "1"}),
        ("/prompts/_new", {**body, "name": "other", "action": "commit"}),
        ("/prompts/_preview", {**body, "name": "greet"}),
    ]
    for path, data in attempts:
        refused = client.post(path, data=data, follow_redirects=False)
        assert refused.status_code == 401 and "Sign in with your API token" in refused.text, path
    _sign_in(client, settings)
    for path, data in attempts:
        forged = client.post(path, data={**data, "csrf": "forged"}, follow_redirects=False)
        assert forged.status_code == 401 and "The form has expired" in forged.text, path
    assert repo_snapshot(settings.prompts_dir) == before
    assert store.detail("greet").published_version is None


def test_the_live_preview_fragment_renders_the_draft(
    client: TestClient, settings: Settings, store: PromptStore
) -> None:
    _sign_in(client, settings)
    body = {
        "csrf": _csrf(client, "/prompts/greet/edit"),
        "name": "greet",
        "base_version": "1",
        "template": "Dear {{ who }},\r\n{% for i in range(times) %}hi {% endfor %}\r\n",
        "metadata": META_TWO,
        "var.who": "desk",
        "var.times": "2",
    }
    fragment = client.post("/prompts/_preview", data=body)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "Dear desk,\nhi hi \n" in html.unescape(fragment.text)
    broken = client.post(
        "/prompts/_preview", data={**body, "template": "a\n{% for %}\n", "var.times": "x"}
    )
    assert broken.status_code == 200 and "Line 2" in _text(broken.text)
    wrong = client.post("/prompts/_preview", data={**body, "var.times": "many"})
    assert "Variable 'times' (integer)" in html.unescape(wrong.text)
    assert len(store.history("greet")) == 1
