"""`mlops up` for real: Prefect server, MLflow server, served deployments and the API
start, a deployment run triggered through the Prefect API completes, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.errors import ServiceError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MLOPS_HOME": str(home),
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
        _wait_for(lambda: services.exists() or process.poll() is not None, 300, "mlops up")
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        urls = json.loads(services.read_text())
        assert httpx.get(f"{urls['api']}/healthz").json()["status"] == "ok"
        assert httpx.get(f"{urls['mlflow']}/health").status_code == 200
        token = (home / "api_token").read_text().strip()
        features = httpx.get(f"{urls['api']}/api/v1/features").json()
        assert features["total"] == 9, "the empty store was ingested once at start"
        models = httpx.get(f"{urls['api']}/api/v1/ml/models").json()["items"]
        assert [len(m["versions"]) for m in models] == [3], "the demo models were trained"
        deployments_made = httpx.get(f"{urls['api']}/api/v1/ml/deployments").json()
        assert [d["status"] in ("succeeded", "failed") for d in deployments_made] == [True]

        prefect = urls["prefect"]
        deployments = httpx.post(f"{prefect}/deployments/filter", json={}).json()
        by_name = {d["name"]: d for d in deployments}
        assert sorted(by_name) == ["daily-ingest", "nightly-train"]
        ingest = by_name["daily-ingest"]
        assert ingest["schedules"][0]["schedule"]["cron"] == "30 21 * * 1-5"
        run = httpx.post(f"{prefect}/deployments/{ingest['id']}/create_flow_run", json={}).json()

        def finished() -> str | None:
            state = httpx.get(f"{prefect}/flow_runs/{run['id']}").json()["state"]["type"]
            return state if state in ("COMPLETED", "FAILED", "CRASHED") else None

        assert _wait_for(finished, 180, "the deployment run") == "COMPLETED"
        assert token
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Stopped." in output and "API token" in output
    assert not services.exists()
    assert not any(_port_open(port) for port in ports.values())


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
