"""Shared fixtures: small real data in temporary state folders, a Prefect test server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from mlops.settings import Settings

DEMO = {"demo_tickers": 5, "demo_start": date(2024, 1, 2), "demo_end": date(2025, 6, 30)}


def make_settings(home: Path, **overrides: Any) -> Settings:
    """Local-profile settings on a temp folder with a small demo universe."""
    values: dict[str, Any] = {"home": home, "profile": "local", **DEMO, **overrides}
    settings = Settings(**values)
    settings.ensure_dirs()
    return settings


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


def run_ingest_flow(settings: Settings, source: str = "demo", message: str = "test") -> Any:
    from flows.ingest import ingest_flow

    return ingest_flow(source=source, author="tester", message=message, settings=settings)


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
