"""`mlops up` for real: Prefect server, MLflow server, served deployments and the API
start, a deployment run triggered through the Prefect API completes, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.waiting import wait_for

from mlops.errors import ServiceError

ROOT = Path(__file__).resolve().parents[2]
_http = httpx.Client(timeout=30)  # first calls load MLflow in the API process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    """A small demo universe, and gates without metric thresholds: on 3 tickers over five
    months the demo models' scores are noise, and this test is about the plumbing."""
    config = home.parent / "config"
    if not config.exists():
        shutil.copytree(ROOT / "config", config)
        (config / "gates.yaml").write_text("default: {holdout_days: 20}\n")
    return {
        **os.environ,
        "MLOPS_HOME": str(home),
        "MLOPS_CONFIG_DIR": str(config),
        "MLOPS_DEMO_TICKERS": "3",
        "MLOPS_DEMO_START": "2025-06-02",
        "MLOPS_DEMO_END": "2025-10-31",
    }


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_up_serves_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = {"api": _free_port(), "prefect": _free_port(), "mlflow": _free_port()}
    home = tmp_path / "home"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops",
            "up",
            "--api-port",
            str(ports["api"]),
            "--prefect-port",
            str(ports["prefect"]),
            "--mlflow-port",
            str(ports["mlflow"]),
        ],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    services = home / "run" / "services.json"
    try:
        wait_for(
            lambda: services.exists() or process.poll() is not None, 300, "mlops up", interval=0.5
        )
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        urls = json.loads(services.read_text())
        assert _http.get(f"{urls['api']}/healthz").json()["status"] == "ok"
        assert _http.get(f"{urls['mlflow']}/health").status_code == 200
        token = (home / "api_token").read_text().strip()
        features = _http.get(f"{urls['api']}/api/v1/features").json()
        assert features["total"] == 9, "the empty store was ingested once at start"
        models = _http.get(f"{urls['api']}/api/v1/ml/models").json()["items"]
        assert [len(m["versions"]) for m in models] == [3], "the demo models were trained"
        (demo_deployment,) = _http.get(f"{urls['api']}/api/v1/ml/deployments").json()
        assert demo_deployment["status"] == "succeeded", demo_deployment["error"]
        _deploy_through_the_api(urls, token, demo_deployment["version"])

        prefect = urls["prefect"]
        deployments = _http.post(f"{prefect}/deployments/filter", json={}).json()
        by_name = {d["name"]: d for d in deployments}
        assert sorted(by_name) == ["daily-ingest", "nightly-evaluation", "nightly-train"]
        ingest = by_name["daily-ingest"]
        assert ingest["schedules"][0]["schedule"]["cron"] == "30 21 * * 1-5"
        assert _run_deployment(prefect, ingest["id"]) == "COMPLETED"
        _nightly_evaluation(urls, by_name["nightly-evaluation"])
        home = _http.get(f"{urls['api']}/").text  # the console's home reads Prefect's runs
        assert "/runs/flow-run/" in home and "The Prefect server is not running" not in home
        assert token
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Stopped." in output and "API token" in output
    assert not services.exists()
    assert not any(_port_open(port) for port in ports.values())


def _run_deployment(prefect: str, deployment_id: str) -> str:
    """Start a served deployment through the Prefect API and wait for its final state."""

    def create() -> dict[str, Any] | None:
        """A server under load may answer 5xx (SQLite busy) once: ask until it creates."""
        answer = _http.post(f"{prefect}/deployments/{deployment_id}/create_flow_run", json={})
        assert answer.status_code in (201, 500, 503), answer.text
        return dict(answer.json()) if answer.status_code == 201 else None

    run = wait_for(create, 60, f"a flow run of deployment {deployment_id}", interval=1)

    def finished() -> str | None:
        state = _http.get(f"{prefect}/flow_runs/{run['id']}").json()["state"]["type"]
        return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

    return str(wait_for(finished, 180, "the deployment run", interval=0.5))


def _nightly_evaluation(urls: dict[str, str], deployment: dict[str, Any]) -> None:
    """The scheduled evaluation, started as its schedule would, runs the standard suite on
    the production model; its results show in the platform's API and MLflow's."""
    assert deployment["schedules"][0]["schedule"]["cron"] == "30 23 * * 1-5"
    state = _run_deployment(urls["prefect"], deployment["id"])
    runs = _http.get(f"{urls['api']}/api/v1/evaluation/results").json()
    nightly = [r for r in runs if r["requested_by"] == "nightly-evaluation"]
    assert len(nightly) == 1 and nightly[0]["status"] == "succeeded"
    result = _http.get(f"{urls['api']}/api/v1/evaluation/results/{nightly[0]['id']}").json()
    assert state == ("COMPLETED" if result["verdict"] == "passed" else "FAILED")
    (standard,) = result["results"]
    assert standard["suite"] == "standard" and len(standard["tests"]) == 9
    assert result["explained"] == [f"direction-model v{standard['version']}"]
    experiment = _http.get(
        f"{urls['mlflow']}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "evaluation"},
    ).json()["experiment"]
    found = _http.post(
        f"{urls['mlflow']}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [experiment["experiment_id"]],
            "filter": f"tags.`mlops.evaluation_id` = '{result['id']}'",
        },
    ).json()["runs"]
    assert len(found) == 2 and {r["info"]["status"] for r in found} == {"FINISHED"}


def _deploy_through_the_api(urls: dict[str, str], token: str, production: str) -> None:
    """A deployment started through the running API runs as a `deploy` flow of the API
    process, reports its tasks to the Prefect server, and its alias shows in MLflow's API."""
    version = "1" if production != "1" else "2"
    started = _http.post(
        f"{urls['api']}/api/v1/ml/models/direction-model/deploy",
        json={"version": version, "target_stage": "staging"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert started.status_code == 202, started.text
    status_url = urls["api"] + started.json()["status_url"]

    def done() -> dict[str, Any] | None:
        record: dict[str, Any] = _http.get(status_url).json()
        return record if record["status"] in ("succeeded", "failed") else None

    record = wait_for(done, 120, "the deployment", interval=0.5)
    assert record["status"] == "succeeded", record["error"]
    tasks = _http.post(
        f"{urls['prefect']}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [record["flow_run_id"]]}}},
    ).json()
    assert sorted(t["name"].rsplit("-", 1)[0] for t in tasks) == ["staging", "validate"]
    model = _http.get(
        f"{urls['mlflow']}/api/2.0/mlflow/registered-models/get", params={"name": "direction-model"}
    ).json()["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model["aliases"]}
    assert aliases == {"production": production, "staging": version}


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mlops", "up", "--api-port", str(port)],
            env=_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == ServiceError.exit_code
    assert f"Port {port}" in result.stderr and "already in use" in result.stderr
