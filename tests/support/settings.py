"""Settings for tests: the local profile on a temp folder with a small demo universe, and
the production profile against the local PostgreSQL, Redis and an MLflow server."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from mlops.settings import Settings

DEMO = {"demo_tickers": 5, "demo_start": date(2024, 1, 2), "demo_end": date(2025, 6, 30)}
QUIET_REAPER = {"reap_every_s": 3600.0}
"""The API apps of tests reap at start-up only: a test closes dead runs when it means to."""


def make_settings(home: Path, **overrides: Any) -> Settings:
    """Local-profile settings on a temp folder with a small demo universe."""
    values: dict[str, Any] = {
        "home": home,
        "profile": "local",
        **DEMO,
        **QUIET_REAPER,
        **overrides,
    }
    settings = Settings(**values)
    settings.ensure_dirs()
    return settings


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
