"""Shared fixtures: small real data in temporary state folders, a Prefect test server.
What tests import (settings, the ingest flow, registered models, ...) is in `tests/support/`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.ingest import run_ingest_flow
from tests.support.registered_models import LIFECYCLE_EXPERIMENT, LIFECYCLE_MODEL
from tests.support.settings import make_settings

from mlops.settings import Settings


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
