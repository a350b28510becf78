"""The evaluation harness through the API on a real MLflow registry and offline store: runs of
suites x versions as the `evaluate` flow, pass/fail per test, comparison, SHAP explanations,
MLflow runs with artifacts, and bad requests that write nothing.

Each test evaluates a registered model of its own (copies of `lifecycle-model` versions: v1
logistic regression, v2 gradient boosting), so aliases never meet across tests."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.support.registered_models import add_version, copy_version, logged_model
from tests.support.waiting import wait_for

from mlops.app import create_app
from mlops.db import Evaluation, session_scope
from mlops.evaluation import records
from mlops.evaluation.tracking import EVALUATION_TAG, EXPERIMENT
from mlops.lifecycle import mlflow_backend
from mlops.reaper import reap_interrupted
from mlops.settings import Settings

API = "/api/v1/evaluation"
PNG = b"\x89PNG\r\n\x1a\n"
TEST_SUITES = {
    "missing-feature": """
name: missing-feature
tests:
  - {name: drift, kind: drift, max_psi: 0.2, features: [ret_1d, not_a_feature]}
""",
    "empty-range": """
name: empty-range
data: {start: 1990-01-01, end: 1990-12-31}
tests:
  - {name: auc, kind: metric, metric: roc_auc, op: ">=", threshold: 0.5}
""",
    "bad-baseline": """
name: bad-baseline
tests:
  - {name: versus_v77, kind: baseline, metric: roc_auc, against: "77"}
""",
    "impossible": """
name: impossible
description: A bar no model clears.
tests:
  - {name: near_perfect, kind: metric, metric: accuracy, op: ">=", threshold: 0.99}
  - {name: calibrated, kind: calibration, max_ece: 0.5}
""",
}


@pytest.fixture(scope="module")
def settings(lifecycle: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The lifecycle state with a config folder of its own holding extra test suites."""
    base: Settings = lifecycle["settings"]
    config = tmp_path_factory.mktemp("eval-config") / "config"
    shutil.copytree(base.config_dir, config)
    for name, text in TEST_SUITES.items():
        (config / "suites" / f"{name}.yaml").write_text(text)
    return base.model_copy(update={"config_dir": config})


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.token}"}


@pytest.fixture
def model(settings: Settings) -> str:
    """A model of this test's own: v1 logistic regression (in production), v2 boosting."""
    name = copy_version(settings, "1")
    add_version(settings, name, "2")
    mlflow_backend.client(settings).set_registered_model_alias(name, "production", "1")
    return name


def _run(
    client: TestClient, auth: dict[str, str], body: dict[str, Any], wait: bool = True
) -> dict[str, Any]:
    response = client.post(f"{API}/run", params={"wait": wait}, json=body, headers=auth)
    assert response.status_code == (200 if wait else 202), response.text
    return dict(response.json())


def _state(settings: Settings) -> tuple[int, int]:
    """(evaluation records, MLflow runs of the evaluation experiment)."""
    with session_scope(settings.metadata_url) as session:
        evaluations = session.scalar(select(func.count()).select_from(Evaluation)) or 0
    mlflow_client = mlflow_backend.client(settings)
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = len(mlflow_client.search_runs([experiment.experiment_id])) if experiment else 0
    return evaluations, runs


def _plots_drawn(client: TestClient, evaluation_id: str) -> None:
    """Plots are added to the runs after the results: wait until they are in."""
    url = f"{API}/results/{evaluation_id}"
    assert wait_for(lambda: client.get(url).json()["plots"] != "pending", 60, "plots") is True
    assert client.get(url).json()["plots"] == "done"


def test_run_reports_pass_fail_per_test_and_compares_versions(
    client: TestClient, auth: dict[str, str], settings: Settings, model: str
) -> None:
    body = {
        "suites": ["smoke", "standard"],
        "models": [{"name": model, "version": "1"}, {"name": model, "version": "2"}],
        "explain": False,
    }
    result = _run(client, auth, body)
    assert result["status"] == "succeeded" and result["progress"] == {"done": 4, "total": 4}
    pairs = [(r["version"], r["suite"]) for r in result["results"]]
    assert pairs == [("1", "smoke"), ("1", "standard"), ("2", "smoke"), ("2", "standard")]
    standard = next(r for r in result["results"] if r["suite"] == "standard")
    assert [t["name"] for t in standard["tests"]] == [
        "roc_auc", "accuracy", "brier", "accuracy_per_ticker", "roc_auc_per_regime",
        "not_worse_than_production", "calibration", "feature_drift", "batch_latency",
    ]  # fmt: skip
    for test in standard["tests"]:
        assert test["status"] in ("passed", "failed", "error") and test["reason"]
        if test["status"] != "error":
            assert test["value"] is not None and test["operator"] and test["threshold"] is not None
    per_ticker = next(t for t in standard["tests"] if t["name"] == "accuracy_per_ticker")
    assert {s["slice"] for s in per_ticker["details"]["slices"]} == set(standard["data"]["tickers"])
    baseline = next(t for t in standard["tests"] if t["name"] == "not_worse_than_production")
    assert "itself the production version" in baseline["reason"]
    statuses = {t["status"] for r in result["results"] for t in r["tests"]}
    expected = "failed" if "failed" in statuses else "error" if "error" in statuses else "passed"
    assert result["verdict"] == expected

    comparison = {c["suite"]: c for c in result["comparison"]}
    accuracy = next(m for m in comparison["standard"]["metrics"] if m["metric"] == "accuracy")
    bars = {b["version"]: b for b in accuracy["bars"]}
    best = max(bars.values(), key=lambda b: b["value"])
    assert [b["best"] for b in bars.values()].count(True) == 1 and best["best"]
    assert best["diff_from_best_pct"] == 0
    other = bars["1" if best["version"] == "2" else "2"]
    expected_pct = (other["value"] - best["value"]) / best["value"] * 100
    assert other["diff_from_best_pct"] == pytest.approx(expected_pct)
    assert bars["1"]["diff_from_production_pct"] == 0  # v1 is production
    latency = next(m for m in comparison["standard"]["metrics"] if m["metric"] == "p95_ms")
    assert latency["higher_is_better"] is False
    again = client.get(f"{API}/results/{result['id']}/comparison").json()
    assert again == result["comparison"]


def test_every_result_is_a_finished_mlflow_run_linked_to_its_version(
    client: TestClient, auth: dict[str, str], settings: Settings, model: str
) -> None:
    body = {"suites": ["smoke"], "models": [{"name": model, "alias": "production"}]}
    result = _run(client, auth, {**body, "explain": False})
    (smoke,) = result["results"]
    mlflow_client = mlflow_backend.client(settings)
    run = mlflow_client.get_run(smoke["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[EVALUATION_TAG] == result["id"]
    assert run.data.tags["model_name"] == model and run.data.tags["model_version"] == "1"
    assert run.data.tags["verdict"] == smoke["status"]
    assert {k: v for k, v in run.data.tags.items() if k.startswith("test.")} == {
        f"test.{t['name']}": t["status"] for t in smoke["tests"]
    }
    assert run.data.metrics["accuracy"] == pytest.approx(smoke["metrics"]["accuracy"])
    assert "report.json" in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    _plots_drawn(client, result["id"])
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"report.json", "reliability.png"} <= artifacts
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT
    version = mlflow_client.get_model_version(model, "1")
    assert version.tags["evaluation.smoke"] == f"{smoke['status']} {run.info.run_id}"
    plot = client.get(f"{API}/results/{result['id']}/artifacts/{run.info.run_id}/reliability.png")
    assert plot.status_code == 200 and plot.content.startswith(PNG)


def test_explanations_with_plots_summary_and_stability(
    client: TestClient, auth: dict[str, str], settings: Settings, model: str
) -> None:
    body = {
        "suites": ["smoke"],
        "models": [{"name": model, "version": "1"}, {"name": model, "version": "2"}],
        "explain_rows": 120,
    }
    result = _run(client, auth, body)
    assert sorted(result["explained"]) == [f"{model} v1", f"{model} v2"]
    report = client.get(f"{API}/results/{result['id']}/explainability").json()
    by_version = {e["version"]: e for e in report["explanations"]}
    linear, boosted = by_version["1"], by_version["2"]
    assert linear["explainer"] == "linear" and boosted["explainer"] == "tree"
    assert linear["rows"] == 120 and linear["stability"] is None
    assert boosted["stability"]["previous_version"] == "1"
    top = boosted["importance"][0]
    assert top["feature"] in boosted["summary_markdown"]
    assert sum(f["share"] for f in boosted["importance"]) == pytest.approx(1.0)
    assert "No previous version" in linear["summary_markdown"]
    assert boosted["plots"] == ["shap_bar.png", "shap_beeswarm.png"]
    _plots_drawn(client, result["id"])
    run_id = boosted["mlflow_run_id"]
    artifacts = {a.path for a in mlflow_backend.client(settings).list_artifacts(run_id)}
    assert {"shap_bar.png", "shap_beeswarm.png", "summary.md", "explanation.json"} <= artifacts
    plot = client.get(f"{API}/results/{result['id']}/artifacts/{run_id}/shap_beeswarm.png")
    assert plot.status_code == 200 and plot.content.startswith(PNG)
    for name in (".env", "a%5Cb"):
        unsafe = client.get(f"{API}/results/{result['id']}/artifacts/{run_id}/{name}")
        assert unsafe.status_code == 400, name
    foreign = client.get(f"{API}/results/{result['id']}/artifacts/{'0' * 32}/shap_bar.png")
    assert foreign.status_code == 404


def test_run_answers_at_once_and_the_status_url_shows_progress(
    client: TestClient, auth: dict[str, str], model: str
) -> None:
    body = {"suites": ["smoke"], "models": [{"name": model, "version": "2"}], "explain": True}
    started = _run(client, auth, body, wait=False)
    assert started["status"] in ("pending", "running") and started["progress"]["total"] == 2
    url = started["status_url"]
    done = wait_for(
        lambda: (r := client.get(url).json())["status"] == "succeeded" and r, 60, "the run"
    )
    assert done["progress"] == {"done": 2, "total": 2} and done["verdict"] is not None


def test_benchmarks_list_suites_with_their_last_run(
    client: TestClient, auth: dict[str, str], model: str
) -> None:
    _run(client, auth, {"suites": ["impossible"], "models": [{"name": model, "version": "1"}]})
    listed = {b["name"]: b for b in client.get(f"{API}/benchmarks").json()}
    assert {"smoke", "standard", "stress", "impossible"} <= set(listed)
    assert listed["standard"]["test_count"] == 9 and listed["standard"]["description"]
    impossible = listed["impossible"]["last_run"]
    assert impossible["outcome"] == "failed" and impossible["models"] == [f"{model} v1"]
    detail = client.get(f"{API}/benchmarks/impossible").json()
    assert [t["name"] for t in detail["suite"]["tests"]] == ["near_perfect", "calibrated"]
    assert client.get(f"{API}/benchmarks/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"suites": ["nope"]}, 404, "No benchmark suite 'nope'"),
        ({"models": [{"name": "no-such-model", "version": "1"}]}, 404, "has no version '1'"),
        ({"models": [{"name": "{model}", "version": "9"}]}, 404, "has no version '9'"),
        ({"models": [{"name": "{model}", "alias": "staging"}]}, 404, "has no staging version"),
        ({"models": [{"name": "{model}"}]}, 422, "exactly one of version and alias"),
        ({"suites": ["missing-feature"]}, 422, "no feature not_a_feature"),
        ({"suites": ["empty-range"]}, 422, "no labelled rows in range"),
        ({"suites": ["bad-baseline"]}, 404, "test 'versus_v77': the baseline '77' of model"),
        ({"suites": []}, 422, "suites"),
        ({"explain_rows": 501}, 422, "explain_rows"),
    ],
)
def test_bad_requests_are_clear_and_write_nothing(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    model: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    request: dict[str, Any] = {"suites": ["smoke"], "models": [{"name": model, "version": "1"}]}
    for key, value in body.items():
        request[key] = [
            {k: (v.format(model=model) if isinstance(v, str) else v) for k, v in item.items()}
            if isinstance(item, dict)
            else item
            for item in value
        ] if isinstance(value, list) else value  # fmt: skip
    before = _state(settings)
    response = client.post(f"{API}/run", params={"wait": True}, json=request, headers=auth)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert _state(settings) == before


def test_invalid_suite_file_and_incompatible_model_are_refused(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    bad = settings.config_dir / "suites" / "bad-operator.yaml"
    bad.write_text(
        "name: bad-operator\ntests:\n  - {name: a, kind: metric, metric: f1, op: '=>', threshold: 1}\n"
    )
    foreign = logged_model(settings, columns=["alpha", "beta"])  # inputs the store lacks
    before = _state(settings)
    try:
        body = {"suites": ["bad-operator"], "models": [{"name": foreign, "version": "1"}]}
        response = client.post(f"{API}/run", json=body, headers=auth)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_suite"
        assert error["details"]["line"] == 3 and error["details"]["field"] == "tests.0.metric.op"
        body["suites"] = ["smoke"]
        response = client.post(f"{API}/run", json=body, headers=auth)
        assert response.status_code == 422
        assert "no feature alpha, beta" in response.json()["error"]["message"]
    finally:
        bad.unlink()
    assert _state(settings) == before
    assert client.post(f"{API}/run", json=body).status_code == 401


def test_a_model_that_raises_errors_its_tests_and_the_run_completes(
    client: TestClient, auth: dict[str, str], settings: Settings, model: str
) -> None:
    raising = logged_model(settings, columns=None)
    body = {
        "suites": ["standard"],
        "models": [{"name": raising, "version": "1"}, {"name": model, "version": "1"}],
        "explain": False,
    }
    result = _run(client, auth, body)
    broken, healthy = result["results"]
    assert broken["status"] == "error" and broken["counts"]["error"] == 9
    assert all("RuntimeError: boom" in t["reason"] for t in broken["tests"])
    assert healthy["counts"]["error"] == 0 and len(healthy["tests"]) == 9
    assert result["status"] == "succeeded"
    assert result["verdict"] == ("failed" if healthy["counts"]["failed"] else "error")
    mlflow_client = mlflow_backend.client(settings)
    for item in (broken, healthy):
        assert mlflow_client.get_run(item["mlflow_run_id"]).info.status == "FINISHED"


def test_an_interrupted_run_is_failed_with_its_mlflow_runs(settings: Settings, model: str) -> None:
    from mlops.evaluation.results import ModelRef
    from mlops.evaluation.service import request_evaluation, take_plan
    from mlops.evaluation.tracking import _experiment_id

    evaluation_id = request_evaluation(
        settings, ["smoke"], [ModelRef(name=model, version="1")], False, "tester"
    )
    take_plan(settings, evaluation_id)
    mlflow_client = mlflow_backend.client(settings)
    orphan = mlflow_client.create_run(
        _experiment_id(settings), tags={EVALUATION_TAG: evaluation_id}
    ).info.run_id
    with session_scope(settings.metadata_url) as session:
        row = session.get(Evaluation, evaluation_id)
        assert row is not None
        row.status = "running"
        row.owner = f"{socket.gethostname()}:999999:1"  # this host, a process that is gone
    assert reap_interrupted(settings) >= 1
    info = records.get(settings, evaluation_id)
    assert info.status == "failed" and "Interrupted" in (info.error or "")
    assert mlflow_client.get_run(orphan).info.status == "FAILED"


def test_a_suite_named_twice_runs_once(
    client: TestClient, auth: dict[str, str], model: str
) -> None:
    body = {"suites": ["smoke", "smoke"], "models": [{"name": model, "version": "1"}]}
    result = _run(client, auth, {**body, "explain": False})
    assert result["suites"] == ["smoke"] and result["progress"] == {"done": 1, "total": 1}


def test_plots_that_cannot_be_drawn_leave_the_results_whole(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    model: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops.evaluation import tracking

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no canvas")

    monkeypatch.setattr(tracking, "reliability_plot", broken)
    body = {"suites": ["smoke"], "models": [{"name": model, "version": "1"}], "explain": False}
    result = _run(client, auth, body)
    url = f"{API}/results/{result['id']}"
    outcome = wait_for(
        lambda: (p := client.get(url).json()["plots"]) != "pending" and p, 60, "plots"
    )
    assert outcome.startswith("failed: run ") and "RuntimeError: no canvas" in outcome
    after = client.get(url).json()
    assert after["results"] == result["results"] and after["status"] == "succeeded"
    run_id = result["results"][0]["mlflow_run_id"]
    assert mlflow_backend.client(settings).get_run(run_id).info.status == "FINISHED"
