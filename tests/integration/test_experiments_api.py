"""Experiment endpoints over a real MLflow backend: summaries, sorting, filters, create,
detail, metric history, comparison, and the fixed number of queries behind the list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.registered_models import LIFECYCLE_EXPERIMENT

from mlops.app import create_app
from mlops.lifecycle import mlflow_backend
from mlops.settings import Settings

API = "/api/v1/ml"


@pytest.fixture(scope="module")
def client(lifecycle: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(lifecycle["settings"]), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def auth(ingested: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {ingested.token}"}


def _find(client: TestClient, name: str, **params: Any) -> dict[str, Any]:
    page = client.get(f"{API}/experiments", params={"search": name, **params}).json()
    return next(item for item in page["items"] if item["name"] == name)


def test_list_summarises_runs_with_best_and_latest_metrics(
    client: TestClient, lifecycle: dict[str, Any]
) -> None:
    runs = lifecycle["runs"]
    item = _find(client, LIFECYCLE_EXPERIMENT)
    assert item["run_count"] == 2 and item["status"] == "active"
    best = max(r.metrics["roc_auc"] for r in runs.values())
    assert item["best"] == {
        "metric": "roc_auc",
        "value": pytest.approx(best),
        "higher_is_better": True,
    }
    latest = runs["gradient_boosting"]  # trained last
    assert item["latest_run_id"] == latest.run_id
    assert item["latest_metrics"]["accuracy"] == pytest.approx(latest.metrics["accuracy"])
    assert item["created"] <= item["updated"]

    lowest = min(r.metrics["log_loss"] for r in runs.values())
    by_loss = _find(client, LIFECYCLE_EXPERIMENT, metric="log_loss")
    assert by_loss["best"]["value"] == pytest.approx(lowest)
    assert by_loss["best"]["higher_is_better"] is False


def test_create_then_sort_filter_and_page(client: TestClient, auth: dict[str, str]) -> None:
    names = [f"sortable-{i}" for i in range(3)]
    for i, name in enumerate(names):
        body = {"name": name, "description": f"exp {i}", "tags": {"team": "alpha" if i else "beta"}}
        created = client.post(f"{API}/experiments", json=body, headers=auth)
        assert created.status_code == 201, created.text
        assert created.json()["description"] == f"exp {i}" and created.json()["run_count"] == 0
        assert created.json()["tags"]["mlops.created_by"] == "admin"  # the token's user
    listed = client.get(
        f"{API}/experiments", params={"search": "SORTABLE", "sort": "name", "order": "asc"}
    )
    assert [i["name"] for i in listed.json()["items"]] == names
    desc = client.get(f"{API}/experiments", params={"search": "sortable", "sort": "name"})
    assert [i["name"] for i in desc.json()["items"]] == names[::-1]
    tagged = client.get(f"{API}/experiments", params={"search": "sortable", "tag": "team=alpha"})
    assert {i["name"] for i in tagged.json()["items"]} == set(names[1:])
    page = client.get(
        f"{API}/experiments",
        params={"search": "sortable", "sort": "name", "order": "asc", "page": 2, "page_size": 2},
    ).json()
    assert page["total"] == 3 and [i["name"] for i in page["items"]] == names[2:]
    by_runs = client.get(f"{API}/experiments", params={"sort": "run_count"}).json()["items"]
    counts = [i["run_count"] for i in by_runs]
    assert counts == sorted(counts, reverse=True)
    by_metric = client.get(f"{API}/experiments", params={"sort": "metric:roc_auc"}).json()["items"]
    values = [i["best"]["value"] for i in by_metric if i["best"]["value"] is not None]
    assert values == sorted(values, reverse=True) and by_metric[0]["best"]["value"] is not None


def test_create_rejects_duplicates_invalid_names_and_missing_token(
    client: TestClient, auth: dict[str, str]
) -> None:
    assert (
        client.post(f"{API}/experiments", json={"name": "dup-exp"}, headers=auth).status_code == 201
    )
    again = client.post(f"{API}/experiments", json={"name": "dup-exp"}, headers=auth)
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    for bad in (
        "",
        " leading-space",
        "trailing-space ",
        "new\nline",
        "a" * 201,
        "semi;colon",
        "../up",
    ):
        response = client.post(f"{API}/experiments", json={"name": bad}, headers=auth)
        assert response.status_code == 422, bad
        assert "name" in response.json()["error"]["message"]
    assert client.post(f"{API}/experiments", json={"name": "no-token"}).status_code == 401
    assert client.get(f"{API}/experiments/no-token").status_code == 404


def test_invalid_list_parameters_are_422(client: TestClient) -> None:
    for params in (
        {"sort": "colour"},
        {"sort": "metric:"},
        {"page": 0},
        {"page_size": 1000},
        {"status": "zombie"},
    ):
        response = client.get(f"{API}/experiments", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "invalid_input"


def test_detail_lists_runs_with_params_metrics_and_duration(
    client: TestClient, lifecycle: dict[str, Any]
) -> None:
    detail = client.get(f"{API}/experiments/{LIFECYCLE_EXPERIMENT}").json()
    runs = {r["run_id"]: r for r in detail["runs"]}
    assert set(runs) == {r.run_id for r in lifecycle["runs"].values()}
    gb = runs[lifecycle["runs"]["gradient_boosting"].run_id]
    assert gb["status"] == "FINISHED" and gb["duration_seconds"] > 0
    assert gb["params"]["kind"] == "gradient_boosting" and gb["params"]["n_estimators"] == "30"
    assert gb["metrics"]["f1"] == pytest.approx(
        lifecycle["runs"]["gradient_boosting"].metrics["f1"]
    )
    by_id = client.get(f"{API}/experiments/{detail['experiment']['id']}").json()
    assert by_id["experiment"]["name"] == LIFECYCLE_EXPERIMENT
    ordered = client.get(
        f"{API}/experiments/{LIFECYCLE_EXPERIMENT}", params={"order_by": "metrics.roc_auc ASC"}
    ).json()["runs"]
    assert [r["metrics"]["roc_auc"] for r in ordered] == sorted(
        r["metrics"]["roc_auc"] for r in ordered
    )
    assert (
        client.get(
            f"{API}/experiments/{LIFECYCLE_EXPERIMENT}", params={"order_by": "DROP"}
        ).status_code
        == 422
    )


def test_metric_history_and_comparison_are_chart_ready(
    client: TestClient, lifecycle: dict[str, Any]
) -> None:
    gb = lifecycle["runs"]["gradient_boosting"]
    history = client.get(f"{API}/runs/{gb.run_id}/metrics/staged_log_loss").json()
    steps = [p["step"] for p in history["points"]]
    assert steps == sorted(steps) and steps[-1] == 30 and len(steps) == 30
    assert history["points"][-1]["value"] == pytest.approx(gb.metrics["log_loss"])
    missing = client.get(f"{API}/runs/{gb.run_id}/metrics/nope")
    assert missing.status_code == 404 and "cv_accuracy" in missing.json()["error"]["message"]
    assert client.get(f"{API}/runs/not-a-run/metrics/accuracy").status_code == 404

    run_ids = [r.run_id for r in lifecycle["runs"].values()]
    by_runs = client.get(f"{API}/compare", params={"metric": "cv_roc_auc", "runs": run_ids}).json()
    assert by_runs["x_axis"] == "step" and len(by_runs["series"]) == 2
    assert all([p["x"] for p in s["points"]] == [0, 1, 2, 3] for s in by_runs["series"])
    best = max(by_runs["series"], key=lambda s: s["best"])
    assert by_runs["best_series"] == best["id"]

    by_exp = client.get(
        f"{API}/compare", params={"metric": "roc_auc", "experiments": [LIFECYCLE_EXPERIMENT]}
    ).json()
    (series,) = by_exp["series"]
    assert by_exp["x_axis"] == "run_start_time" and len(series["points"]) == 2
    assert [p["x"] for p in series["points"]] == sorted(p["x"] for p in series["points"])
    both = client.get(
        f"{API}/compare", params={"metric": "roc_auc", "runs": run_ids[:1], "experiments": ["x"]}
    )
    assert both.status_code == 422


def test_list_costs_a_fixed_number_of_queries(lifecycle: dict[str, Any]) -> None:
    """The summaries of 5 or 25 experiments take the same number of SQL statements."""
    from sqlalchemy import event

    from mlops.lifecycle import experiments

    settings = lifecycle["settings"]
    for i in range(25):
        name = f"count-{i:02d}"
        if mlflow_backend.client(settings).get_experiment_by_name(name) is None:
            mlflow_backend.create_experiment(settings, name)
    engine = mlflow_backend.tracking_engine(settings)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        counts = []
        for size in (5, 25):
            statements.clear()
            query = experiments.ExperimentQuery(search="count-", page_size=size)
            assert len(experiments.list_experiments(settings, query).items) == size
            counts.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert counts[0] == counts[1] <= 4


def test_nan_and_infinite_metrics_never_win_or_leak(
    client: TestClient, lifecycle: dict[str, Any]
) -> None:
    import math

    settings = lifecycle["settings"]
    experiment_id = mlflow_backend.create_experiment(settings, "odd-metrics")
    mlflow_client = mlflow_backend.client(settings)
    for values in (
        {"roc_auc": 0.61, "accuracy": 0.55},
        {"roc_auc": math.nan, "accuracy": math.inf},
    ):
        run = mlflow_client.create_run(experiment_id)
        for key, value in values.items():
            mlflow_client.log_metric(run.info.run_id, key, value)
        mlflow_client.set_terminated(run.info.run_id)
    item = _find(client, "odd-metrics")
    assert item["best"]["value"] == pytest.approx(0.61)
    assert item["latest_metrics"] == {}  # the latest run has only NaN and inf
    by_accuracy = _find(client, "odd-metrics", metric="accuracy")
    assert by_accuracy["best"]["value"] == pytest.approx(0.55)
    series = client.get(
        f"{API}/compare", params={"metric": "roc_auc", "experiments": ["odd-metrics"]}
    ).json()["series"][0]
    assert [p["y"] for p in series["points"]] == [pytest.approx(0.61)]
    unknown = client.get(
        f"{API}/compare", params={"metric": "nope", "experiments": ["odd-metrics"]}
    )
    assert unknown.json()["series"][0]["points"] == [] and unknown.json()["best_series"] is None
    bad = client.get(f"{API}/compare", params={"metric": "a`b", "experiments": ["odd-metrics"]})
    assert bad.status_code == 422 and "Invalid metric name" in bad.json()["error"]["message"]
