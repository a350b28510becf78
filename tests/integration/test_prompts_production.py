"""Prompt usage analytics on PostgreSQL for real (percentile_cont, GROUP BY), in a database
of the test's own that is dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.support.postgres import postgres_databases
from tests.support.prompt_usage_data import T0, check_report, load_events
from tests.support.settings import production_settings

from mlops.app import create_app
from mlops.prompts import analytics, usage
from mlops.settings import Settings

pytestmark = [pytest.mark.production]


@pytest.fixture()
def pg_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    from mlops.db import engine_for

    name = f"mlops_prompts_{uuid.uuid4().hex[:10]}"
    # MLflow gets a database of its own: its `datasets` table would clash with the platform's
    # when an earlier test in the session left MLflow initialised.
    with postgres_databases(name, f"{name}_mlflow") as (url, mlflow_url):
        monkeypatch.setenv("MLOPS_PROFILE", "production")
        settings = production_settings(
            tmp_path / "home", url, mlflow_url, prompts_mlflow_registry=False
        )
        settings.ensure_dirs()
        yield settings
        engine_for(url).dispose()


def test_usage_aggregates_on_postgres_match_the_reference(pg_settings: Settings) -> None:
    from sqlalchemy import inspect

    from mlops.db import engine_for

    events = load_events(pg_settings.metadata_url)
    assert engine_for(pg_settings.metadata_url).dialect.name == "postgresql"
    tables = set(inspect(engine_for(pg_settings.metadata_url)).get_table_names())
    assert {"prompt_usage_events", "prompt_usage_counts"} <= tables
    report = analytics.usage_report(
        pg_settings.metadata_url, "greet", T0, T0 + timedelta(days=1), "hour"
    )
    check_report(report, events)
    assert usage.call_counts(pg_settings.metadata_url) == {"greet": 51, "other": 1}


def test_renders_through_the_api_are_counted_on_postgres(pg_settings: Settings) -> None:
    headers = {"Authorization": "Bearer prod-token"}
    api = "/api/v1/prompt-governance"
    with TestClient(create_app(pg_settings)) as client:
        body = {"variables": {"as_of": "2026-11-24"}, "label": "latest"}
        render = client.post(
            f"{api}/templates/compliance_footer/render", json=body, headers=headers
        )
        assert render.status_code == 200
        outcome = client.post(
            f"{api}/renders/{render.json()['render_id']}/outcome",
            json={"success": True},
            headers=headers,
        )
        assert outcome.status_code == 200
        report = client.get(f"{api}/templates/compliance_footer/usage", headers=headers).json()
        assert report["total"]["calls"] == 1 and report["outcomes"] == {"success": 1}
        listing = client.get(f"{api}/templates", headers=headers).json()
        assert {t["name"]: t["calls"] for t in listing}["compliance_footer"] == 1
        assert client.get(f"{api}/templates").status_code == 401
