"""The console's models section through the platform's app: the experiment list (sort,
search, pages), creating one (and the inline 409 / 422), an experiment's runs and its metric
chart, the registry cards with stage chips, a deployment from the Deploy form through the
live stepper to production, a failed gate, refusals, and rollback with its confirmation.

Each test that deploys uses a registered model of its own (a copy of a `lifecycle-model`
version), so aliases never meet other tests."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.console_pages import csrf, sign_in
from tests.support.registered_models import (
    LIFECYCLE_EXPERIMENT,
    add_version,
    copy_version,
    logged_model,
)

from mlops.app import create_app
from mlops.lifecycle import deployments, experiments, mlflow_backend, registry
from mlops.settings import Settings

REFRESHING = "refreshes every 2 s"


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c
    for thread in threading.enumerate():  # let deployment threads report before the next test
        if thread.name.startswith("deploy-"):
            thread.join(timeout=60)


def _csrf(client: TestClient, path: str = "/experiments") -> str:
    return csrf(client, path)


def _sign_in(client: TestClient, settings: Settings) -> None:
    sign_in(client, settings, "/models")


def _follow(client: TestClient, url: str, seconds: float = 90) -> str:
    """The deployment page once it stops refreshing (polled, with a deadline)."""
    deadline = time.monotonic() + seconds
    while REFRESHING in (text := client.get(url).text):
        assert time.monotonic() < deadline, f"{url} still running after {seconds} s"
        time.sleep(0.2)
    return text


def _deploy(client: TestClient, name: str, version: str, target: str = "production") -> str:
    token = _csrf(client, f"/models/{name}")
    response = client.post(
        f"/models/{name}/deploy",
        data={"csrf": token, "version": version, "target_stage": target, "reason": "console"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    url = response.headers["location"]
    assert url.startswith("/deployments/")
    return url


def _steps(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<li class="step (\w+)"[^>]*>.*?<h2>(\w+)</h2>', page, re.S)


def _chips(page: str) -> list[str]:
    return re.findall(r'<span class="chip (\w+)">', page)


def test_experiment_list_sorts_searches_and_pages(client: TestClient, settings: Settings) -> None:
    prefix = f"cx-{uuid.uuid4().hex[:6]}"
    for suffix in ("b", "a", "c"):
        experiments.create_experiment(
            settings, experiments.ExperimentCreate(name=f"{prefix}-{suffix}"), "tester"
        )
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]

    def order(page: str) -> list[str]:
        return [n for n in re.findall(r">(cx-[0-9a-f]{6}-\w)</a>", page) if n.startswith(prefix)]

    ascending = client.get(
        "/experiments", params={"search": prefix, "sort": "name", "order": "asc"}
    )
    assert ascending.status_code == 200 and 'aria-current="page">Models' in ascending.text
    assert order(ascending.text) == names
    assert 'aria-sort="ascending"' in ascending.text
    descending = client.get(
        "/experiments", params={"search": prefix.upper(), "sort": "name", "order": "desc"}
    )
    assert order(descending.text) == names[::-1]

    first = client.get(
        "/experiments", params={"search": prefix, "sort": "name", "order": "asc", "page_size": 2}
    ).text
    assert order(first) == names[:2] and "Page 1 of 2" in first and "3 in all" in first
    next_url = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert next_url
    second = client.get(next_url.group(1).replace("&amp;", "&")).text
    assert order(second) == names[2:] and "Page 2 of 2" in second

    lifecycle_row = client.get("/experiments", params={"search": LIFECYCLE_EXPERIMENT}).text
    experiment_id = experiments.resolve_experiment(settings, LIFECYCLE_EXPERIMENT).experiment_id
    assert f'href="/experiments/{experiment_id}">{LIFECYCLE_EXPERIMENT}</a>' in lifecycle_row
    assert f"{settings.mlflow_url}/#/experiments/{experiment_id}" in lifecycle_row

    nothing = client.get("/experiments", params={"search": "no-such-experiment-zz"}).text
    assert "No experiment matches these filters" in nothing
    bad = client.get("/experiments", params={"sort": "colour"})
    assert bad.status_code == 422 and "Unknown sort &#39;colour&#39;" in bad.text


def test_create_experiment_and_inline_errors(client: TestClient, settings: Settings) -> None:
    name = f"console-created-{uuid.uuid4().hex[:6]}"
    page = client.get("/experiments").text
    assert "Sign in</a> to create an experiment" in page
    refused = client.post(
        "/experiments", data={"csrf": _csrf(client), "name": name}, follow_redirects=False
    )
    assert refused.status_code == 401 and "Sign in with your API token" in refused.text

    _sign_in(client, settings)
    token = _csrf(client)
    created = client.post(
        "/experiments",
        data={"csrf": token, "name": name, "description": "from the console", "tags": "team=ml"},
        follow_redirects=False,
    )
    assert created.status_code == 303
    detail = client.get(created.headers["location"]).text
    assert f"<h1>{name}" in detail and "from the console" in detail and "team=ml" in detail
    assert "This experiment has no run yet" in detail and "No run to chart yet" in detail

    duplicate = client.post("/experiments", data={"csrf": token, "name": name})
    assert duplicate.status_code == 409
    assert re.search(
        r'role="alert"><strong>409 conflict:</strong> An experiment named', duplicate.text
    )
    assert f'value="{name}"' in duplicate.text  # the form keeps what was typed
    invalid = client.post("/experiments", data={"csrf": token, "name": "!bad name"})
    assert invalid.status_code == 422 and "422 invalid input:" in invalid.text
    assert "starts with a letter or digit" in invalid.text
    listed = client.get("/experiments", params={"search": name}).text
    assert listed.count(f">{name}</a>") == 1


def test_experiment_detail_with_runs_and_metric_chart(
    client: TestClient, settings: Settings, lifecycle: dict[str, Any]
) -> None:
    experiment = experiments.resolve_experiment(settings, LIFECYCLE_EXPERIMENT)
    detail = experiments.get_experiment(settings, experiment.experiment_id)
    run_names = {r.run_id: r.name for r in detail.runs}
    assert len(run_names) == 2
    page = client.get(f"/experiments/{experiment.experiment_id}").text
    for run_id, run_name in run_names.items():
        assert run_name in page
        assert f"/#/experiments/{experiment.experiment_id}/runs/{run_id}" in page
    chart = re.search(r'<figure class="metric-chart">(.*?)</figure>', page, re.S)
    assert chart and "<svg" in chart.group(1)
    assert chart.group(1).count("<polyline") == 2  # one line per run
    legend = re.findall(r'<text class="label" x="62" y="\d+">([^<]+)</text>', chart.group(1))
    assert sorted(n.removesuffix(" (best)") for n in legend) == sorted(run_names.values())
    assert "cv_roc_auc by step" in chart.group(1)

    one = next(iter(run_names))
    single = client.get(
        f"/experiments/{experiment.experiment_id}", params={"run": one, "metric": "cv_accuracy"}
    ).text
    assert single.count("<polyline") == 1 and "cv_accuracy by step" in single

    other = experiments.create_experiment(
        settings,
        experiments.ExperimentCreate(name=f"console-compare-{uuid.uuid4().hex[:6]}"),
        "tester",
    )
    mlflow_client = mlflow_backend.client(settings)
    for value in (0.51, 0.55):
        run = mlflow_client.create_run(other.id)
        mlflow_client.log_metric(run.info.run_id, "roc_auc", value)
        mlflow_client.set_terminated(run.info.run_id)
    compared = client.get(
        "/experiments",
        params={
            "compare": [experiment.experiment_id, other.id],
            "compare_metric": "roc_auc",
            "search": "zz-none",
        },
    ).text
    section = compared.split('id="comparison-title"')[1]
    assert section.count("<polyline") == 2
    assert LIFECYCLE_EXPERIMENT in section and other.name in section


def test_registry_cards_show_stage_chips(client: TestClient, settings: Settings) -> None:
    name = copy_version(settings, "1")
    add_version(settings, name, "2")
    third = add_version(settings, name, "1")
    mlflow_client = mlflow_backend.client(settings)
    mlflow_client.set_registered_model_alias(name, "production", "1")
    mlflow_client.set_registered_model_alias(name, "staging", "2")
    mlflow_client.set_model_version_tag(name, third, registry.ARCHIVED_TAG, "true")

    page = client.get("/models", params={"search": name}).text
    assert 'class="card model-card"' in page and page.count("model-card") == 1
    assert _chips(page)[2:] == ["archived", "staging", "production"]  # newest version first
    assert "Production: v1" in page and "Staging: v2" in page
    assert f"{settings.mlflow_url}/#/models/{name}/versions/2" in page
    assert "Sign in</a> to deploy or roll back" in page and ">Deploy</button>" not in page

    staged = client.get("/models", params={"search": name, "stage": "Staging"}).text
    assert _chips(staged)[2:] == ["staging"]
    assert "No registered model matches" in client.get("/models?search=zz-none-such").text

    _sign_in(client, settings)
    signed = client.get(f"/models/{name}").text
    assert ">Deploy</button>" in signed and "Roll back production…</button>" in signed
    assert "<label>Version" in signed and "<label>Target stage" in signed
    assert "No deployment yet" in signed


def test_deploy_to_production_then_roll_back(client: TestClient, settings: Settings) -> None:
    name = copy_version(settings, "1")
    _sign_in(client, settings)
    url = _deploy(client, name, "1")
    page = _follow(client, url)
    assert '<span class="status succeeded">succeeded</span>' in page
    assert _steps(page) == [("passed", "validate"), ("passed", "staging"), ("passed", "production")]
    accuracy = re.search(r"<th scope=\"row\">threshold:accuracy</th>(.*?)</tr>", page, re.S)
    assert accuracy and "✓ Pass" in accuracy.group(1)
    assert "<td>&gt;=</td>" in accuracy.group(1) and ">0.45<" in accuracy.group(1)
    assert re.search(r'<span class="timing">\d+\.\d\d s</span>', page)
    info = deployments.get_deployment(settings, url.rsplit("/", 1)[1])
    assert f"{settings.prefect_url.removesuffix('/api')}/runs/flow-run/{info.flow_run_id}" in page
    assert f"{settings.mlflow_url}/#/models/{name}/versions/1" in page
    assert "source run in MLflow" in page and "Roll back this deployment" in page

    second = add_version(settings, name, "2")
    second_url = _deploy(client, name, second)
    assert "succeeded" in _follow(client, second_url)
    card = client.get("/models", params={"search": name}).text
    assert f"Production: v{second}" in card and _chips(card)[2:] == ["production", "archived"]

    token = _csrf(client, second_url)
    from_card = client.post(f"/models/{name}/rollback", data={"csrf": token})
    assert from_card.status_code == 200 and "Confirm rollback to v1</button>" in from_card.text
    assert 'name="confirm" value="yes"' in from_card.text and "Cancel</a>" in from_card.text
    deployment_id = second_url.rsplit("/", 1)[1]
    confirm = client.post(f"/deployments/{deployment_id}/rollback", data={"csrf": token})
    assert confirm.status_code == 200
    assert f"from <strong>v{second}</strong> back to <strong>v1</strong>" in confirm.text
    assert registry.alias_version(settings, name, "production") == second  # nothing yet
    rolled = client.post(
        f"/deployments/{deployment_id}/rollback",
        data={"csrf": token, "confirm": "yes", "reason": "bad numbers"},
        follow_redirects=False,
    )
    assert rolled.status_code == 303
    done = _follow(client, rolled.headers["location"])
    assert "Rollback of" in done and "succeeded" in done and "bad numbers" in done
    assert _steps(done) == [
        ("passed", "validate"),
        ("skipped", "staging"),
        ("passed", "production"),
    ]
    card = client.get(f"/models/{name}").text
    assert "Production: v1" in card and _chips(card)[2:] == ["archived", "production"]
    assert card.count("/deployments/") >= 3  # the history lists all three
    ledger = card[card.index('id="ledger"') :]
    rows = re.findall(r"<tr>\s*<td><time.*?</tr>", ledger, re.S)
    assert len(rows) == 7  # staging, production, staging cleared; twice; the rollback
    newest = re.sub(r"<[^>]+>", " ", rows[0])
    assert "production" in newest and f"v{second}" in newest and "v1" in newest
    assert "admin" in newest and "bad numbers" in newest

    model_confirm = client.post(f"/models/{name}/rollback", data={"csrf": token})
    assert model_confirm.status_code == 409  # v1 is the first production: nothing before
    assert "no previous production version" in model_confirm.text


def test_failed_gate_is_shown_with_its_reason(client: TestClient, settings: Settings) -> None:
    name = logged_model(settings, columns=["ret_1d", "not_served"])
    _sign_in(client, settings)
    page = _follow(client, _deploy(client, name, "1"))
    assert '<span class="status failed">failed</span>' in page
    assert _steps(page) == [
        ("failed", "validate"),
        ("skipped", "staging"),
        ("skipped", "production"),
    ]
    assert "Failed at the validate stage." in page
    assert re.search(r"Gate <strong>signature</strong> \(validate\) failed: [^<]*not_served", page)
    assert re.search(r'<tr class="gate-failed">\s*<th scope="row">signature</th>', page)
    assert "Production is unchanged" in page and "Roll back this deployment" not in page
    assert registry.alias_version(settings, name, "production") is None


def test_deploy_refusals_change_nothing(client: TestClient, settings: Settings) -> None:
    name = copy_version(settings, "1")
    token = _csrf(client, f"/models/{name}")
    body = {"csrf": token, "version": "1", "target_stage": "production"}
    refused = client.post(f"/models/{name}/deploy", data=body, follow_redirects=False)
    assert refused.status_code == 401 and "Sign in with your API token" in refused.text
    assert deployments.list_deployments(settings, name) == []

    _sign_in(client, settings)
    token = _csrf(client, f"/models/{name}")
    unknown = client.post(f"/models/{name}/deploy", data={**body, "csrf": token, "version": "99"})
    assert unknown.status_code == 404 and "404 not found:" in unknown.text
    assert "has no version &#39;99&#39;" in unknown.text and ">Deploy</button>" in unknown.text
    target = client.post(
        f"/models/{name}/deploy", data={**body, "csrf": token, "target_stage": "x"}
    )
    assert target.status_code == 422 and "Unknown target stage" in target.text
    long = client.post(f"/models/{name}/deploy", data={**body, "csrf": token, "reason": "x" * 2001})
    # the console's form is checked by the API's request model: the same limit, in words
    assert long.status_code == 422 and "reason: String should have at most 2000" in long.text
    assert deployments.list_deployments(settings, name) == []

    holding = deployments.request_deployment(settings, name, "1", "staging", "other")
    try:
        busy = client.post(f"/models/{name}/deploy", data={**body, "csrf": token})
        assert busy.status_code == 409 and "already has a deployment in progress" in busy.text
        assert "A deployment is in progress" in busy.text
    finally:
        deployments.finish(settings, holding.id, "test over")
    assert [d.id for d in deployments.list_deployments(settings, name)] == [holding.id]
    listing = client.get("/deployments", params={"model": name}).text
    assert holding.id[:8] in listing and '<span class="status failed">failed</span>' in listing
    assert client.get("/deployments/nope").status_code == 404
