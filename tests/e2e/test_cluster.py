"""The cluster profile for real, on loopback (`tests/support/cluster.py`): a Prefect
server on PostgreSQL with its messaging on Redis, an MLflow tracking server on PostgreSQL
with proxied artifacts, a `mlops worker` of the work pool, and the API with two workers.
Ingests, trainings, deployments and evaluations run on the worker; the platform's
records, MLflow (through its client, over HTTP) and Prefect's API agree, and the demo gives
what it gives in the local profile; a worker killed mid-deployment and an API killed
mid-run leave the stores consistent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tests.support.cluster import ENDS, Cluster, cluster_environment, running_cluster
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.production, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def cluster_demo(cluster: Cluster) -> list[dict[str, Any]]:
    """`mlops demo --json` on the cluster: ingest, train the three models, deploy the best
    (what it printed: the ingest, each training, the deployment)."""
    demo = cluster.mlops("demo", "--json")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    return _documents(demo.stdout)


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after the other (stdout holds nothing else)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def test_ingest_training_deployment_and_evaluation_run_on_the_worker(
    cluster: Cluster, cluster_demo: list[dict[str, Any]]
) -> None:
    runs = cluster.http.post(f"{cluster.prefect}/flow_runs/filter", json={}).json()
    ran = [r for r in runs if r["deployment_id"] and r["state"]["type"] != "SCHEDULED"]
    assert sorted(cluster.deployment_name(r) for r in ran) == [
        "deploy/platform",
        "ingest/platform",
        "train-many/platform",
    ], "the demo's flows ran from their pool deployments (scheduled ones wait for their time)"
    assert {r["work_pool_name"] for r in ran} == {cluster.env["MLOPS_WORK_POOL"]}
    assert all(r["state"]["type"] == "COMPLETED" for r in ran)
    (trainings,) = [r for r in ran if cluster.deployment_name(r) == "train-many/platform"]
    fits = cluster.http.post(
        f"{cluster.prefect}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [trainings["id"]]}}},
    ).json()  # the three fits, as task runs of the flow run (on the Ray head's workers)
    assert sorted(t["name"] for t in fits if t["name"].startswith("fit-and-log")) == [
        f"fit-and-log · {name}"
        for name in ("gradient_boosting", "logistic_regression", "random_forest")
    ]
    assert all(t["state"]["type"] == "COMPLETED" for t in fits)
    (deployment,) = cluster.get("/api/v1/ml/deployments")
    assert deployment["status"] == "succeeded", deployment["error"]
    (ingest,) = cluster.get("/api/v1/ingests")
    assert ingest["status"] == "completed" and ingest["rows"] > 0
    assert cluster.deployment_name(cluster.flow_run(ingest["flow_run_id"])) == "ingest/platform"
    (compute,) = [step for step in ingest["steps"] if step["step"] == "compute"]
    assert compute["where"] == f"Ray cluster at 127.0.0.1:{cluster.ports['ray']}"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow, registry_uri=cluster.mlflow)
    production = client.get_model_version_by_alias("direction-model", "production")
    assert production.version == deployment["version"]
    experiment = client.get_experiment(client.get_run(production.run_id).info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), "proxied artifacts"

    started = cluster.post(
        "/api/v1/evaluation/run",
        {"suites": ["standard"], "models": [{"name": "direction-model", "alias": "production"}]},
    )
    assert started.status_code == 202, started.text
    evaluation = cluster.wait_record(started.json()["status_url"])
    eval_run = cluster.wait_flow_run(evaluation["flow_run_id"])  # it draws the plots last
    assert cluster.deployment_name(eval_run) == "evaluate/platform"
    assert eval_run["state"]["type"] == (
        "COMPLETED" if evaluation["verdict"] == "passed" else "FAILED"
    )
    assert cluster.get(started.json()["status_url"])["plots"] == "done"
    assert len(evaluation["results"]) == 1 and len(evaluation["results"][0]["tests"]) == 9


def _outcome(demo: list[dict[str, Any]]) -> dict[str, Any]:
    """What the demo's steps gave: rows and feature versions, each model's metrics and
    version, the deployment's stages and gate verdicts (not the times they took)."""
    ingested, *trained, deployed = demo
    return {
        "ingest": (ingested["rows"], ingested["new_versions"], ingested["materialized"]),
        "trained": [
            (t["kind"], t["model_version"], t["train_rows"], t["test_rows"], t["metrics"])
            for t in trained
        ],
        "deployed": (deployed["version"], deployed["status"], [
            (stage["name"], stage["status"], [
                (gate["name"], gate["passed"], gate["value"] if "latency" not in gate["name"]
                 else None)
                for gate in stage["gates"]
            ])
            for stage in deployed["stages"]
        ]),
    }  # fmt: skip


def test_the_demo_gives_what_it_gives_in_the_local_profile(
    cluster: Cluster, cluster_demo: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The same demo in the local profile (one process, SQLite, no Ray) on the same
    configuration: the same features, rows, metrics, versions and verdicts."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))},
        **{k: v for k, v in cluster.env.items() if k.startswith(("MLOPS_DEMO_", "MLOPS_CONFIG"))},
        "MLOPS_HOME": str(tmp_path / "local"),
        "MLOPS_PROFILE": "local",
    }
    local = subprocess.run(
        [sys.executable, "-m", "mlops", "demo", "--json"],
        env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 0, local.stdout + local.stderr[-3000:]
    here = _outcome(_documents(local.stdout))
    assert _outcome(cluster_demo) == here
    assert len(here["trained"]) == 3 and here["deployed"][1] == "succeeded"


def test_a_killed_worker_leaves_production_at_a_version_that_passed(cluster: Cluster) -> None:
    models = cluster.get("/api/v1/ml/models")["items"]
    versions = sorted(int(v["version"]) for v in models[0]["versions"])
    production = next(v["version"] for v in models[0]["versions"] if v.get("stage") == "Production")
    other = next(str(v) for v in versions if str(v) != production)
    started = cluster.post(
        "/api/v1/ml/models/direction-model/deploy", {"version": other, "reason": "killed"}
    )
    assert started.status_code == 202, started.text
    status_url = started.json()["status_url"]
    wait_for(
        lambda: (
            cluster.get(status_url)["status"] == "running"
            or cluster.get(status_url)["status"] in ENDS
        ),
        180,
        "the worker to begin the deployment",
        interval=0.1,
    )
    cluster.kill_tree("worker")
    record = cluster.wait_record(status_url, timeout=120)
    assert record["status"] == "failed", "the worker was killed while the stages ran"
    assert record["error"].startswith("Interrupted"), record["error"]
    run = wait_for(
        lambda: (r := cluster.flow_run(record["flow_run_id"]))["state"]["type"] == "CRASHED" and r,
        60,
        "Prefect to show the run crashed",
    )
    assert "Interrupted" in run["state"]["message"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cluster.mlflow, registry_uri=cluster.mlflow)
    assert client.get_model_version_by_alias("direction-model", "production").version == production

    cluster.start_worker()
    again = cluster.post("/api/v1/ml/models/direction-model/deploy", {"version": other})
    assert again.status_code == 202, again.text
    retried = cluster.wait_record(again.json()["status_url"])
    assert retried["status"] == "succeeded", retried["error"]
    assert client.get_model_version_by_alias("direction-model", "production").version == other


def test_a_run_goes_on_while_the_api_restarts(cluster: Cluster) -> None:
    production = cluster.get("/api/v1/ml/models")["items"][0]
    current = next(v["version"] for v in production["versions"] if v.get("stage") == "Production")
    target = next(v["version"] for v in production["versions"] if v["version"] != current)
    started = cluster.post(
        "/api/v1/ml/models/direction-model/deploy", {"version": target, "target_stage": "staging"}
    )
    assert started.status_code == 202, started.text
    status_url = started.json()["status_url"]
    cluster.kill_tree("api")
    cluster.start_api()
    record = cluster.wait_record(status_url)
    assert record["status"] == "succeeded", record["error"]
    assert cluster.wait_flow_run(record["flow_run_id"])["state"]["type"] == "COMPLETED"


def test_an_upload_is_ingested_on_the_worker_and_its_files_removed(
    cluster: Cluster, tmp_path: Path
) -> None:
    from datetime import date

    from mlops.features.demo_data import generate_ohlcv

    bars = generate_ohlcv(n_tickers=3, start=date(2025, 6, 2), end=date(2025, 11, 14), seed=7)
    day_batch = tmp_path / "bars.csv"
    bars[bars["date"] > "2025-10-31"].to_csv(day_batch, index=False)
    ingested = cluster.mlops("ingest", str(day_batch), "--message", "two weeks more")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "Ingested 30 rows" in ingested.stdout, ingested.stdout
    latest = cluster.get("/api/v1/ingests")[0]
    assert latest["status"] == "completed" and latest["source"] == str(day_batch)
    assert cluster.deployment_name(cluster.flow_run(latest["flow_run_id"])) == "ingest/platform"
    assert not list((cluster.home / "uploads").iterdir()), "the worker removed the upload"


def test_up_runs_the_cluster_profile_on_one_machine(tmp_path: Path) -> None:
    """What docs/cluster.md tells a new user: with the profile's environment, `mlops up`
    starts Prefect (PostgreSQL, Redis), MLflow, a worker of the pool and the API, and the
    first start's demo deployment runs on that worker; Ctrl-C stops all."""
    with cluster_environment(tmp_path) as (env, ports):
        home = Path(env["MLOPS_HOME"])
        process = subprocess.Popen(
            [sys.executable, "-m", "mlops", "up"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            cwd=home,
        )
        services = home / "run" / "services.json"
        try:
            wait_for(
                lambda: services.exists() or process.poll() is not None,
                600,
                "mlops up",
                interval=0.5,
            )
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            recorded = json.loads(services.read_text())
            assert set(recorded["pids"]) == {"prefect", "mlflow", "ray", "worker", "api"}
            assert recorded["ray"] == f"127.0.0.1:{ports['ray']}"
            cluster = Cluster(home=home, env=env, ports=ports)
            (deployment,) = cluster.get("/api/v1/ml/deployments")
            assert deployment["status"] == "succeeded", deployment["error"]
            (ingest,) = cluster.get("/api/v1/ingests")  # the features computed on its head
            (compute,) = [step for step in ingest["steps"] if step["step"] == "compute"]
            assert compute["where"] == f"Ray cluster at {recorded['ray']}"
            run = cluster.flow_run(deployment["flow_run_id"])
            assert cluster.deployment_name(run) == "deploy/platform"
            assert run["work_pool_name"] == env["MLOPS_WORK_POOL"]
        finally:
            os.killpg(process.pid, signal.SIGINT)
            output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
        assert "Stopped." in output and "Prefect, MLflow and Ray are up." in output
        ray_temp = Path(tempfile.gettempdir()) / f"mlops-ray-{ports['ray']}"

        def head_stopped() -> bool:  # its processes all name its temp folder
            named = (" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))
            return not any(str(ray_temp) in line for line in named)

        wait_for(head_stopped, 60, "the Ray head to stop with `mlops up`")
        shutil.rmtree(ray_temp, ignore_errors=True)
