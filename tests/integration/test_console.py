"""The web console through the platform's app: pages render from the real stores, sign-in
with the API token, CSRF on every change, an evaluation run from the form to its results
page (Pass/Fail marks, comparison chart, explanations), and no asset from the network."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.console_pages import csrf, sign_in
from tests.support.registered_models import add_version, copy_version

from mlops.app import create_app
from mlops.settings import Settings


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _csrf(client: TestClient, path: str = "/evaluation") -> str:
    return csrf(client, path)


def _sign_in(client: TestClient, settings: Settings) -> None:
    sign_in(client, settings, "/evaluation")


def test_home_shows_component_health_and_recent_activity(
    client: TestClient, settings: Settings
) -> None:
    import uuid

    from mlops.prompts.publishing import publish
    from mlops.prompts.store import open_store

    store = open_store(settings)
    name = f"home_{uuid.uuid4().hex[:6]}"
    meta = "description: greeting\nowner: desk\nvariables:\n  who:\n    type: string\n"
    store.create(name, "Hello {{ who }}\n", meta, "tester", "tests", "first")
    publish(store, name, 1, "tester")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for component in ("metadata db", "feast registry", "offline store", "online store"):
        assert component in page.text
    assert "Recent activity" in page.text and "Ingest flow runs" in page.text
    assert f'<a href="/prompts/{name}">{name}</a> v1 · publish' in page.text
    assert "Prefect flow runs" in page.text
    assert 'aria-current="page">Home' in page.text


def test_pages_load_no_asset_from_the_network(client: TestClient) -> None:
    for path in ("/", "/evaluation", "/signin"):
        html = client.get(path).text
        assets = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="([^"]+)"', html)
        assert assets and all(a.startswith("/") for a in assets), (path, assets)
    css = client.get("/static/console.css")
    assert css.status_code == 200 and "svg.chart" in css.text


def test_changes_need_a_signed_in_session_and_its_csrf_token(
    client: TestClient, settings: Settings
) -> None:
    page = client.get("/evaluation").text
    assert "Sign in</a> to run suites" in page and 'type="submit">Run' not in page
    token = _csrf(client)
    body = {"csrf": token, "suite": ["smoke"], "model": ["lifecycle-model:1"]}
    refused = client.post("/evaluation/run", data=body, follow_redirects=False)
    assert refused.status_code == 401 and "Sign in with your API token" in refused.text

    wrong = client.post("/signin", data={"token": "nope", "next": "/"}, follow_redirects=False)
    assert wrong.status_code == 401 and "Invalid bearer token" in wrong.text
    _sign_in(client, settings)
    assert 'type="submit">Run' in client.get("/evaluation").text
    forged = client.post("/evaluation/run", data={**body, "csrf": "forged"}, follow_redirects=False)
    assert forged.status_code == 401 and "The form has expired" in forged.text
    missing = client.post("/evaluation/run", data={"suite": ["smoke"]}, follow_redirects=False)
    assert missing.status_code == 401

    client.post("/signout", follow_redirects=False)
    assert "Sign in</a> to run suites" in client.get("/evaluation").text


def test_signin_only_redirects_inside_the_console(client: TestClient, settings: Settings) -> None:
    response = client.post(
        "/signin",
        data={"token": settings.token, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_bad_run_form_shows_the_error_inline(client: TestClient, settings: Settings) -> None:
    _sign_in(client, settings)
    token = _csrf(client)
    empty = client.post("/evaluation/run", data={"csrf": token, "model": ["x:1"]})
    assert empty.status_code == 422
    assert 'role="alert">Tick at least one suite and one model version.' in empty.text
    unknown = client.post(
        "/evaluation/run", data={"csrf": token, "suite": ["smoke"], "model": ["no-such:1"]}
    )
    assert unknown.status_code == 404 and "has no version" in unknown.text
    assert "Benchmark suites" in unknown.text  # the form is still there


def test_run_from_the_form_to_pass_fail_comparison_and_explanations(
    client: TestClient, settings: Settings
) -> None:
    name = copy_version(settings, "1")
    add_version(settings, name, "2")
    _sign_in(client, settings)
    page = client.get("/evaluation").text
    assert f'value="{name}:1"' in page and f'value="{name}:2"' in page
    body = {
        "csrf": _csrf(client),
        "suite": ["smoke"],
        "model": [f"{name}:1", f"{name}:2"],
        "explain": "1",
    }
    started = client.post("/evaluation/run", data=body, follow_redirects=False)
    assert started.status_code == 303
    url = started.headers["location"]
    assert url.startswith("/evaluation/results/")

    deadline = time.monotonic() + 120
    while "refreshes every 2 s" in (result := client.get(url).text):
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    assert result.count("✓ Pass") + result.count("✗ Fail") + result.count("! Error") == 6
    assert f"{name} v1" in result and f"{name} v2" in result
    assert result.count('<svg class="chart"') >= 7  # 7 metric comparisons + 2 importances
    assert 'class="bar best"' in result and "% vs best" in result
    assert "<h3>" in result and "Top drivers of P(up)" in result  # Markdown rendered
    plots = re.findall(r'<img src="(/api/v1/evaluation/results/[^"]+\.png)"', result)
    assert len(plots) == 4
    for plot in plots:
        image = client.get(plot)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert url.rsplit("/", 1)[1][:8] in client.get("/evaluation").text  # in recent runs


def test_unknown_run_is_a_404_page(client: TestClient) -> None:
    page = client.get("/evaluation/results/0123456789abcdef0123456789abcdef")
    assert page.status_code == 404 and "No evaluation run" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_profiles_with_closed_reads_send_visitors_to_sign_in(settings: Settings) -> None:
    closed = settings.model_copy(update={"reads_require_auth": True})
    with TestClient(create_app(closed)) as client:
        for path in ("/", "/evaluation"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"] == f"/signin?next={path}"
        assert client.get("/api/v1/evaluation/benchmarks").status_code == 401
        _sign_in(client, closed)
        assert client.get("/", follow_redirects=False).status_code == 200
        # the pages' plots and downloads come from the API: the signed-in session reads it
        assert client.get("/api/v1/evaluation/benchmarks").status_code == 200
        wrong = {"Authorization": "Bearer wrong"}
        assert client.get("/api/v1/evaluation/benchmarks", headers=wrong).status_code == 401
