"""Shared fixtures: small real data in temporary state folders, a Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.features.sources import BarsSource

DEMO = {"demo_tickers": 5, "demo_start": date(2024, 1, 2), "demo_end": date(2025, 6, 30)}


def make_settings(home: Path, **overrides: Any) -> Settings:
    """Local-profile settings on a temp folder with a small demo universe."""
    values: dict[str, Any] = {"home": home, "profile": "local", **DEMO, **overrides}
    settings = Settings(**values)
    settings.ensure_dirs()
    return settings


def read_offline(settings: Settings, dataset: str) -> Any:
    """One dataset of the offline store's current snapshot, as a pandas frame."""
    from mlops.features.offline import open_snapshot

    snapshot = open_snapshot(settings)
    assert snapshot is not None, "nothing ingested"
    return snapshot.read(dataset)


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server (SQLite) for every flow run of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_ingest_flow(
    settings: Settings,
    source: str | BarsSource = "demo",
    message: str = "test",
    date_format: str | None = None,
) -> Any:
    from flows.ingest import ingest_flow

    return ingest_flow(
        source=source,
        author="tester",
        message=message,
        settings=settings,
        date_format=date_format,
    )


@pytest.fixture(scope="session")
def ingested(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A state folder with the demo data ingested through the real flow (read-only use)."""
    settings = make_settings(tmp_path_factory.mktemp("ingested"))
    run_ingest_flow(settings, message="initial load")
    return settings


@pytest.fixture()
def fresh(prefect_server: None, tmp_path: Path) -> Settings:
    """A state folder of this test's own with the demo data ingested (may be changed)."""
    settings = make_settings(tmp_path / "home")
    run_ingest_flow(settings, message="initial load")
    return settings


FAST_MODELS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0},
    "gradient_boosting": {"n_estimators": 30, "max_depth": 2},
}
LIFECYCLE_EXPERIMENT = "lifecycle-tests"
LIFECYCLE_MODEL = "lifecycle-model"


@pytest.fixture(scope="session")
def lifecycle(ingested: Settings) -> dict[str, Any]:
    """Two small models trained through the `train` flow into an experiment and registered
    model of their own (versions 1 and 2 of `lifecycle-model`) on the ingested store."""
    from mlops.lifecycle import training

    results = {}
    for kind, params in FAST_MODELS.items():
        config = training.get_model_config(ingested, kind, params).model_copy(
            update={"experiment": LIFECYCLE_EXPERIMENT, "registered_model": LIFECYCLE_MODEL}
        )
        info = training.prepare_dataset(ingested, config, "tester")
        results[kind] = training.train_model(ingested, config, "tester", dataset=info)
    return {"settings": ingested, "runs": results}


def copy_version(
    settings: Settings, version: str = "1", source_model: str = LIFECYCLE_MODEL
) -> str:
    """A registered model of a test's own holding a copy of a `lifecycle-model` version
    (same artifact, same run), so tests can move aliases without meeting each other."""
    import uuid

    from mlops.lifecycle.mlflow_backend import client, configure_mlflow

    configure_mlflow(settings)  # MLflow resolves a `models:/m-...` source with its global URI
    mlflow_client = client(settings)
    source = mlflow_client.get_model_version(source_model, version)
    name = f"test-model-{uuid.uuid4().hex[:8]}"
    mlflow_client.create_registered_model(name)
    mlflow_client.create_model_version(name, source.source, run_id=source.run_id)
    return name


def production_settings(home: Path, url: str, mlflow_url: str, **overrides: Any) -> Settings:
    """Production-profile settings (set MLOPS_PROFILE=production first): the platform and
    Feast registry at `url`, Redis on 127.0.0.1, MLflow at `mlflow_url`."""
    values: dict[str, Any] = {
        "home": home,
        "metadata_db_url": url,
        "feast_registry_url": url,
        "redis_url": "127.0.0.1:6379",
        "mlflow_tracking_uri": mlflow_url,
        "api_token": "prod-token",
        **overrides,
    }
    return Settings(**values)


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_databases(*names: str) -> Iterator[list[str]]:
    """Fresh PostgreSQL databases on 127.0.0.1 (URLs), dropped afterwards."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for the production profile: {exc}")
    try:
        yield [f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
