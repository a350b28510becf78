"""The cluster profile's servers for real, on loopback, for the cluster tests and the
cluster benchmark: a Prefect server on PostgreSQL with its messaging on Redis, an MLflow
tracking server on PostgreSQL with proxied artifacts (both as `mlops up` starts them), a
`mlops worker` of the work pool, and the API (`mlops api`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.support.ports import free_port
from tests.support.postgres import postgres_databases
from tests.support.waiting import wait_for

from mlops.services import _terminate

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cluster-test-token"
ENDS = ("succeeded", "failed")


def _empty_redis_db() -> int:
    """A Redis database (1-15) nothing uses, reserved for the Prefect server's messaging
    (a key set only if absent, so two runs at once never share one)."""
    import redis

    for db in range(1, 16):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        if client.dbsize() == 0 and client.set("mlops-test-reserved", "1", nx=True):
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
        return workers.status_code == 200 and any(w["status"] == "ONLINE" for w in workers.json())

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

    def stop_process(self, name: str) -> None:
        """SIGTERM a process (and its group), as Ctrl-C or a service manager would."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    def stop(self) -> None:
        for name, process in reversed(self.processes.items()):
            if process.poll() is None:  # as `mlops up` stops them (`services._terminate`)
                _terminate(name, process.pid)
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


@contextmanager
def cluster_environment(tmp: Path, **extra: str) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """The environment of a cluster-profile platform of its own (`extra` adds MLOPS_*
    settings): PostgreSQL databases, a Redis database, ports and a work pool; (environment,
    ports). The databases and Redis keys are dropped after."""
    import redis

    home, config = tmp / "home", tmp / "config"
    (home / "run").mkdir(parents=True)
    shutil.copytree(ROOT / "config", config)
    # On 3 tickers over five months the demo models' scores are noise: gates without
    # metric thresholds, since these tests are about where the work runs.
    (config / "gates.yaml").write_text("default: {holdout_days: 20}\n")
    name = f"mlops_cluster_{uuid.uuid4().hex[:8]}"
    redis_db = _empty_redis_db()
    ports = {name: free_port() for name in ("api", "prefect", "mlflow", "ray", "ray_client")}
    with postgres_databases(name, f"{name}_mlflow", f"{name}_prefect") as urls:
        metadata, mlflow_db, prefect_db = urls
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
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
            "MLOPS_PREFECT_PORT": str(ports["prefect"]),
            "MLOPS_MLFLOW_PORT": str(ports["mlflow"]),
            "MLOPS_RAY_PORT": str(ports["ray"]),
            "MLOPS_RAY_CLIENT_PORT": str(ports["ray_client"]),
            "MLOPS_RAY_COMPUTE_MIN_BARS": "0",  # the demo's few bars are computed on Ray too
            "RAY_USAGE_STATS_ENABLED": "0",
            "MLOPS_API_TOKEN": TOKEN,
            "MLOPS_WORK_POOL": f"pool-{name}",
            "MLOPS_REAP_EVERY_S": "1",
            "MLOPS_DEMO_TICKERS": "3",
            "MLOPS_DEMO_START": "2025-06-02",
            "MLOPS_DEMO_END": "2025-10-31",
            "PREFECT_HOME": str(home / "prefect"),  # not the test session's Prefect
            **extra,
        }
        try:
            yield env, ports
        finally:
            redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()
            client = redis.Redis(host="127.0.0.1", port=6379)
            for key in client.scan_iter(match=f"*{name}*".encode()):
                client.delete(key)


@contextmanager
def running_cluster(tmp: Path, **extra: str) -> Iterator[Cluster]:
    """The cluster profile's servers, a worker and the API on loopback, in an environment
    of their own (`cluster_environment`); everything stopped and dropped after."""
    with cluster_environment(tmp, **extra) as (env, ports):
        cluster = Cluster(home=Path(env["MLOPS_HOME"]), env=env, ports=ports)
        try:
            _start_servers(cluster)
            cluster.start_worker()
            cluster.start_api()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(Path(tempfile.gettempdir()) / f"mlops-ray-{ports['ray']}", True)


def _start_servers(cluster: Cluster) -> None:
    """The Prefect and MLflow servers and the Ray head as `mlops up` starts them in this
    profile; the worker and the API get the head's address and token as `mlops up`'s
    children do."""
    from mlops.ray_cluster import head_environment
    from mlops.services import _commands, own_ray_address
    from mlops.settings import Settings

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(cluster.env)
    try:
        settings = Settings()
        commands = _commands(settings)
        server_env = settings.prefect_server_environment()
        ray_env = head_environment(settings, own_ray_address(settings))
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
    cluster.env.update(ray_env)
    ray_args, _ = commands["ray"]
    cluster.start("ray", *ray_args)
    wait_for(lambda: _answers(cluster, cluster.ports["ray"]), 120, "the Ray head to answer")


def _answers(cluster: Cluster, port: int) -> bool:
    if cluster.processes["ray"].poll() is not None:
        raise AssertionError(f"the Ray head exited: {cluster.log('ray')}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
