"""The cluster profile for real, on loopback: a Prefect server on PostgreSQL with its
messaging on Redis, an MLflow tracking server on PostgreSQL with proxied artifacts, a
`mlops worker` of the work pool, and the API (`mlops api`). Deployments and evaluations
submitted through the API run on the worker; the platform's records, MLflow (through its
client, over HTTP) and Prefect's API agree; a worker killed mid-deployment and an API
killed mid-run leave the stores consistent."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.support.postgres import postgres_databases
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.production, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cluster-test-token"
ENDS = ("succeeded", "failed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _empty_redis_db() -> int:
    """A Redis database (1-15) nothing uses, for the Prefect server's messaging."""
    import redis

    for db in range(1, 16):
        if redis.Redis(host="127.0.0.1", port=6379, db=db).dbsize() == 0:
            return db
    pytest.fail("no empty Redis database (1-15) for the Prefect server's messaging")


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def prefect(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    def start(self, name: str, *args: str, health: str | None = None) -> None:
        log = open(self.home / "run" / f"test-{name}.log", "ab")  # noqa: SIM115
        self.processes[name] = subprocess.Popen(
            list(args),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.home,
        )
        log.close()
        if health:
            wait_for(lambda: self._healthy(name, health), 180, f"the {name} to answer")

    def _healthy(self, name: str, url: str) -> bool:
        process = self.processes[name]
        if process.poll() is not None:
            raise AssertionError(f"{name} exited ({process.returncode}): {self.log(name)}")
        try:
            return self.http.get(url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def log(self, name: str) -> str:
        return (self.home / "run" / f"test-{name}.log").read_text(errors="replace")[-4000:]

    def start_worker(self) -> None:
        self.start("worker", sys.executable, "-m", "mlops", "worker", "--name", "test-worker")
        wait_for(self._worker_online, 120, "the worker to poll the pool", interval=0.5)

    def _worker_online(self) -> bool:
        if self.processes["worker"].poll() is not None:
            raise AssertionError(f"the worker exited: {self.log('worker')}")
        pool = self.env["MLOPS_WORK_POOL"]
        workers = self.http.post(f"{self.prefect}/work_pools/{pool}/workers/filter", json={})
        return workers.status_code == 200 and any(
            w["status"] == "ONLINE" for w in workers.json()
        )

    def start_api(self) -> None:
        self.start(
            "api",
            sys.executable,
            "-m",
            "mlops",
            "api",
            "--port",
            str(self.ports["api"]),
            health=f"{self.api}/docs",  # /healthz is 503 while the offline store is empty
        )

    def kill_tree(self, name: str) -> None:
        """kill -9 a process and everything it started (a lost host or container)."""
        process = self.processes.pop(name)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        for member in tree:
            member.kill()
        psutil.wait_procs(tree, timeout=30)
        process.wait()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def mlops(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlops", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )

    def get(self, path: str) -> Any:
        response = self.http.get(f"{self.api}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            f"{self.api}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.http.get(f"{self.prefect}/flow_runs/{flow_run_id}").json()
        return run

    def wait_flow_run(self, flow_run_id: str, timeout: float = 120) -> dict[str, Any]:
        """The flow run once Prefect shows it ended."""

        def ended() -> dict[str, Any] | None:
            run = self.flow_run(flow_run_id)
            return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        return dict(wait_for(ended, timeout, f"flow run {flow_run_id}", interval=0.5))

    def deployment_name(self, run: dict[str, Any]) -> str:
        deployment = self.http.get(f"{self.prefect}/deployments/{run['deployment_id']}").json()
        flow = self.http.get(f"{self.prefect}/flows/{deployment['flow_id']}").json()
        return f"{flow['name']}/{deployment['name']}"

    def wait_record(self, path: str, timeout: float = 240) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            record: dict[str, Any] = self.get(path)
            return record if record["status"] in ENDS else None

        return dict(wait_for(ended, timeout, path, interval=0.5))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import redis

    tmp = tmp_path_factory.mktemp("cluster")
    home, config = tmp / "home", tmp / "config"
    (home / "run").mkdir(parents=True)
    shutil.copytree(ROOT / "config", config)
    # On 3 tickers over five months the demo models' scores are noise: gates without
    # metric thresholds, since this test is about where the work runs.
    (config / "gates.yaml").write_text("default: {holdout_days: 20}\n")
    name = f"mlops_cluster_{uuid.uuid4().hex[:8]}"
    redis_db = _empty_redis_db()
    ports = {"api": _free_port(), "prefect": _free_port(), "mlflow": _free_port()}
    with postgres_databases(name, f"{name}_mlflow", f"{name}_prefect") as urls:
        metadata, mlflow_db, prefect_db = urls
        env = {
            **os.environ,
            "MLOPS_PROFILE": "cluster",
            "MLOPS_HOME": str(home),
            "MLOPS_CONFIG_DIR": str(config),
            "MLOPS_METADATA_DB_URL": metadata,
            "MLOPS_FEAST_REGISTRY_URL": metadata,
            "MLOPS_FEAST_PROJECT": name,
            "MLOPS_REDIS_URL": "127.0.0.1:6379",
            "MLOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
            "MLOPS_MLFLOW_DATABASE_URL": mlflow_db,
            "MLOPS_PREFECT_DATABASE_URL": prefect_db.replace("+psycopg", "+asyncpg"),
            "MLOPS_PREFECT_REDIS_DB": str(redis_db),
            "MLOPS_PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api",
            "MLOPS_API_PORT": str(ports["api"]),
            "MLOPS_API_TOKEN": TOKEN,
            "MLOPS_WORK_POOL": f"pool-{name}",
            "MLOPS_REAP_EVERY_S": "1",
            "MLOPS_DEMO_TICKERS": "3",
            "MLOPS_DEMO_START": "2025-06-02",
            "MLOPS_DEMO_END": "2025-10-31",
            "PREFECT_HOME": str(home / "prefect"),
        }
        for key in [k for k in env if k.startswith("PREFECT_") and k != "PREFECT_HOME"]:
            env.pop(key)  # the test session's own Prefect settings
        env["MLOPS_PREFECT_API_URL"] = f"http://127.0.0.1:{ports['prefect']}/api"
        cluster = Cluster(home=home, env=env, ports=ports)
        try:
            _start_servers(cluster)
            cluster.start_worker()
            cluster.start_api()
            yield cluster
        finally:
            cluster.stop()
            redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
            client = redis.Redis(host="127.0.0.1", port=6379)
            for key in client.scan_iter(match=f"*{name}*".encode()):
                client.delete(key)


def _start_servers(cluster: Cluster) -> None:
    """The Prefect and MLflow servers as `mlops up` starts them in this profile."""
    from mlops.services import _commands
    from mlops.settings import Settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(cluster.env)
    try:
        settings = Settings(prefect_port=cluster.ports["prefect"], mlflow_port=cluster.ports["mlflow"])
        commands = _commands(settings)
        server_env = settings.prefect_server_environment()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    prefect_args, prefect_health = commands["prefect"]
    cluster.env.update(server_env)
    cluster.start("prefect", *prefect_args, health=prefect_health)
    for key in server_env:
        cluster.env.pop(key)
    mlflow_args, mlflow_health = commands["mlflow"]
    cluster.start("mlflow", *mlflow_args, health=mlflow_health)


def test_ingest_training_deployment_and_evaluation_run_on_the_worker(cluster: Cluster) -> None:
    demo = cluster.mlops("demo")  # ingest, train the three models, deploy the best
    assert demo.returncode == 0, demo.stdout + demo.stderr
    runs = cluster.http.post(f"{cluster.prefect}/flow_runs/filter", json={}).json()
    ran = [r for r in runs if r["deployment_id"] and r["state"]["type"] != "SCHEDULED"]
    assert sorted(cluster.deployment_name(r) for r in ran) == [
        "deploy/platform",
        "ingest/platform",
        *["train/platform"] * 3,
    ], "the demo's flows ran from their pool deployments (scheduled ones wait for their time)"
    assert {r["work_pool_name"] for r in ran} == {cluster.env["MLOPS_WORK_POOL"]}
    assert all(r["state"]["type"] == "COMPLETED" for r in ran)
    (deployment,) = cluster.get("/api/v1/ml/deployments")
    assert deployment["status"] == "succeeded", deployment["error"]
    (ingest,) = cluster.get("/api/v1/ingests")
    assert ingest["status"] == "completed" and ingest["rows"] > 0
    assert cluster.deployment_name(cluster.flow_run(ingest["flow_run_id"])) == "ingest/platform"

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
    assert eval_run["state"]["type"] == ("COMPLETED" if evaluation["verdict"] == "passed" else "FAILED")
    assert cluster.get(started.json()["status_url"])["plots"] == "done"
    assert len(evaluation["results"]) == 1 and len(evaluation["results"][0]["tests"]) == 9


def test_a_killed_worker_leaves_production_at_a_version_that_passed(cluster: Cluster) -> None:
    models = cluster.get("/api/v1/ml/models")["items"]
    versions = sorted(int(v["version"]) for v in models[0]["versions"])
    production = next(
        v["version"] for v in models[0]["versions"] if v.get("stage") == "Production"
    )
    other = next(str(v) for v in versions if str(v) != production)
    started = cluster.post(
        "/api/v1/ml/models/direction-model/deploy", {"version": other, "reason": "killed"}
    )
    assert started.status_code == 202, started.text
    status_url = started.json()["status_url"]
    wait_for(
        lambda: cluster.get(status_url)["status"] == "running" or cluster.get(status_url)["status"] in ENDS,
        180,
        "the worker to begin the deployment",
        interval=0.1,
    )
    cluster.kill_tree("worker")
    record = cluster.wait_record(status_url, timeout=120)
    if record["status"] == "succeeded":
        pytest.skip("the deployment finished before the worker was killed")
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
