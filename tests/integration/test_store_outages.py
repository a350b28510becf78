"""Each store down in turn: the API answers 503 naming the store within seconds, /healthz
reports it, the CLI exits with the store exit code and one line, and nothing is written."""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from tests.support.postgres import postgres_databases
from tests.support.settings import make_settings, production_settings
from typer.testing import CliRunner, Result

from mlops.app import create_app
from mlops.cli import app as cli_app
from mlops.errors import StoreUnavailableError
from mlops.lifecycle import mlflow_backend
from mlops.sessions import SESSION_COOKIE, session_secret
from mlops.settings import Settings
from mlops.stores import FEATURE_REGISTRY, MLFLOW_STORE, ONLINE_STORE, PLATFORM_DB
from mlops.users import token_hash

API = "/api/v1"
EXPERIMENTS = f"{API}/ml/experiments"
BOUND_S = 10.0
"""The latency bound of an answer when a store is down (the issue saw 247 s)."""
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _feast_imported() -> None:
    """/healthz imports Feast on its first call (seconds when cold): the bounds here are
    about stores that are down, not about a process's first import."""
    import feast  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_mlflow_clients() -> Iterator[None]:
    """Each test opens its stores as a newly started process would."""
    mlflow_backend.forget_clients()
    yield
    mlflow_backend.forget_clients()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def assert_outage(answer: tuple[httpx.Response, float], store: str) -> str:
    """A fast 503 naming the store; returns its message."""
    response, seconds = answer
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "store_unavailable" and error["details"]["store"] == store
    assert error["message"].startswith(f"The {store} is unavailable")
    assert seconds < BOUND_S, f"{seconds:.1f} s"
    return str(error["message"])


def assert_health_down(
    client: TestClient, component: str, store: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response, seconds = timed(lambda: client.get("/healthz", headers=headers))
    assert response.status_code == 503 and response.json()["status"] == "degraded"
    assert seconds < BOUND_S, f"{seconds:.1f} s"
    part: dict[str, Any] = response.json()["components"][component]
    assert part["status"] == "down" and part["store"] == store
    return part


def cli_env(settings: Settings) -> dict[str, str]:
    env = {"MLOPS_HOME": str(settings.home), "MLOPS_PROFILE": settings.profile}
    for name in ("metadata_db_url", "feast_registry_url", "redis_url", "mlflow_tracking_uri"):
        if (value := getattr(settings, name)) is not None:
            env[f"MLOPS_{name.upper()}"] = value
    if settings.api_token is not None:
        env["MLOPS_API_TOKEN"] = settings.api_token.get_secret_value()
    return env


def assert_cli_outage(result: Result, store: str) -> str:
    assert result.exit_code == StoreUnavailableError.exit_code, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: The {store} is unavailable")
    return line


def experiment_names(settings: Settings) -> list[str]:
    return [e.name for e in mlflow_backend.client(settings).search_experiments()]


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Another connection holding an exclusive transaction on a SQLite file."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture()
def local(tmp_path: Path) -> Iterator[tuple[Settings, TestClient, dict[str, str]]]:
    """A local state folder whose MLflow store has been used (one experiment)."""
    settings = make_settings(tmp_path / "home")
    auth = {"Authorization": f"Bearer {settings.token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post(EXPERIMENTS, json={"name": "before"}, headers=auth).status_code == 201
        yield settings, client, auth


@pytest.mark.slow  # waits out the lock timeout three times (API, /healthz, CLI)
def test_locked_mlflow_db(local: tuple[Settings, TestClient, dict[str, str]]) -> None:
    settings, client, auth = local
    with exclusive_lock(settings.home / "mlflow.db"):
        message = assert_outage(
            timed(lambda: client.post(EXPERIMENTS, json={"name": "during"}, headers=auth)),
            MLFLOW_STORE,
        )
        assert "locked" in message
        assert "locked" in assert_health_down(client, "mlflow_tracking", MLFLOW_STORE)["detail"]
        result = runner.invoke(cli_app, ["experiments", "create", "cli"], env=cli_env(settings))
        assert "locked" in assert_cli_outage(result, MLFLOW_STORE)
    assert set(experiment_names(settings)) == {"before", "Default"}
    assert client.get("/healthz").json()["components"]["mlflow_tracking"]["status"] == "ok"


@pytest.mark.slow  # starts a new `mlops` process after `mlops stores forget`
def test_deleted_mlflow_db_is_refused_not_recreated(
    local: tuple[Settings, TestClient, dict[str, str]],
) -> None:
    settings, client, auth = local
    database = settings.home / "mlflow.db"
    database.unlink()
    message = assert_outage(
        timed(lambda: client.post(EXPERIMENTS, json={"name": "after"}, headers=auth)),
        MLFLOW_STORE,
    )
    assert "deleted" in message and "mlops stores forget mlflow" in message
    assert (
        "missing or empty" in assert_health_down(client, "mlflow_tracking", MLFLOW_STORE)["detail"]
    )
    assert not database.exists()

    mlflow_backend.forget_clients()  # as after a restart: the platform's record refuses it
    env = cli_env(settings)
    result = runner.invoke(cli_app, ["experiments", "create", "after"], env=env)
    assert "used it until" in assert_cli_outage(result, MLFLOW_STORE)
    assert not database.exists()

    forgot = runner.invoke(cli_app, ["stores", "forget", "mlflow"], env=env)
    assert forgot.exit_code == 0, forgot.output
    again = runner.invoke(cli_app, ["stores", "forget", "mlflow"], env=env)
    assert again.exit_code == 4 and "no record" in again.output
    started = subprocess.run(  # a new process accepts the new empty store
        [sys.executable, "-m", "mlops", "experiments", "create", "fresh"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    assert database.exists()


def test_corrupt_mlflow_db(local: tuple[Settings, TestClient, dict[str, str]]) -> None:
    settings, client, auth = local
    database = settings.home / "mlflow.db"
    garbage = b"this is not a database " * 4096
    database.write_bytes(garbage)
    for answer in (
        timed(lambda: client.post(EXPERIMENTS, json={"name": "after"}, headers=auth)),
        timed(lambda: client.get(f"{API}/ml/models")),
    ):
        assert "corrupt" in assert_outage(answer, MLFLOW_STORE)
    assert "corrupt" in assert_health_down(client, "mlflow_tracking", MLFLOW_STORE)["detail"]
    result = runner.invoke(cli_app, ["experiments", "list"], env=cli_env(settings))
    assert "corrupt" in assert_cli_outage(result, MLFLOW_STORE)
    assert database.read_bytes() == garbage


def test_dead_mlflow_tracking_server(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home", mlflow_tracking_uri=f"http://127.0.0.1:{closed_port()}"
    )
    auth = {"Authorization": f"Bearer {settings.token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert_outage(
            timed(lambda: client.post(EXPERIMENTS, json={"name": "x"}, headers=auth)),
            MLFLOW_STORE,
        )
        assert_outage(
            timed(
                lambda: client.post(
                    f"{API}/ml/models/m/predict", json={"tickers": ["BUCI"]}, headers=auth
                )
            ),
            MLFLOW_STORE,
        )
        assert_health_down(client, "mlflow_tracking", MLFLOW_STORE)
    started = time.perf_counter()
    result = runner.invoke(cli_app, ["experiments", "create", "x"], env=cli_env(settings))
    assert_cli_outage(result, MLFLOW_STORE)
    assert time.perf_counter() - started < BOUND_S


def test_unreachable_postgres_hides_its_address_from_anonymous_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/platform_db"
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    settings = production_settings(
        tmp_path / "home",
        url,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        feast_project=f"outage_{uuid.uuid4().hex[:8]}",
    )
    auth = {"Authorization": "Bearer prod-token"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        message = assert_outage(
            timed(lambda: client.get(f"{API}/ml/deployments", headers=auth)), PLATFORM_DB
        )
        assert f"127.0.0.1:{port}/platform_db" in message and "s3cret" not in message
        assert_outage(timed(lambda: client.get(f"{API}/features", headers=auth)), PLATFORM_DB)
        anonymous = assert_health_down(client, "metadata_db", PLATFORM_DB)
        assert anonymous["detail"] == "down"
        assert_health_down(client, "feast_registry", FEATURE_REGISTRY)
        text = client.get("/healthz").text
        for secret in (str(port), "127.0.0.1", "platform_db", "s3cret", str(tmp_path)):
            assert secret not in text
        detailed = assert_health_down(client, "metadata_db", PLATFORM_DB, headers=auth)
        assert f"127.0.0.1:{port}" in detailed["detail"]
        assert "s3cret" not in client.get("/healthz", headers=auth).text
        # a signed-in console session is read from the same database: the pages still
        # render, as signed out (they cannot say who is signed in)
        session = base64.b64encode(json.dumps({"token": token_hash("prod-token")}).encode())
        signed = TimestampSigner(session_secret(settings)).sign(session).decode()
        client.cookies.set(SESSION_COOKIE, signed)  # as SessionMiddleware writes it
        home = client.get("/", follow_redirects=False)
        assert home.status_code == 303 and home.headers["location"].startswith("/signin")
        signin = client.get("/signin")
        assert signin.status_code == 200 and "Sign in" in signin.text
    result = runner.invoke(cli_app, ["models", "status"], env=cli_env(settings))
    assert "s3cret" not in assert_cli_outage(result, PLATFORM_DB)


@pytest.mark.production
def test_redis_on_a_closed_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.features.ingest import apply_definitions
    from mlops.features.store import forget_store

    project = f"outage_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MLOPS_PROFILE", "production")
    with postgres_databases(project) as (url,):
        settings = Settings(
            home=tmp_path / "home",
            metadata_db_url=url,
            feast_registry_url=url,
            redis_url=f"127.0.0.1:{closed_port()}",
            mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            feast_project=project,
            api_token="prod-token",
        )
        settings.ensure_dirs()
        try:
            applied = apply_definitions(settings, "tester", "views for the outage test")
            assert applied
            auth = {"Authorization": "Bearer prod-token"}
            with TestClient(create_app(settings), raise_server_exceptions=False) as client:
                params = {"tickers": "BUCI", "feature_service": "model_features"}
                assert_outage(
                    timed(
                        lambda: client.get(f"{API}/online-features", params=params, headers=auth)
                    ),
                    ONLINE_STORE,
                )
                assert_health_down(client, "online_store", ONLINE_STORE)
                listed = client.get(f"{API}/features", headers=auth)
                assert listed.status_code == 200 and listed.json()["total"] == 9
            result = runner.invoke(cli_app, ["health"], env=cli_env(settings))
            assert result.exit_code == StoreUnavailableError.exit_code
            assert "down online_store" in result.output
        finally:
            forget_store(settings)
            from mlops.db import engine_for

            engine_for(url).dispose()
