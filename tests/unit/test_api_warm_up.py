"""The API's warm-up runs its Prefect flow only against a server the platform set up."""

from pathlib import Path

import pytest
from tests.support.settings import make_settings

from mlops import prefect_server
from mlops.api import app as api_app


def _record_flow_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import flows.warm_up

    runs: list[str] = []
    monkeypatch.setattr(flows.warm_up, "warm_up_flow", lambda: runs.append("ran"))
    monkeypatch.setattr(prefect_server, "wait_until_ready", lambda *a, **k: None)
    monkeypatch.setattr(prefect_server, "current", lambda: None)
    return runs


def test_no_flow_runs_when_no_prefect_server_was_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _record_flow_runs(monkeypatch)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    api_app._warm_prefect(make_settings(tmp_path))
    assert runs == []  # an embedding program without Prefect: no ephemeral server started


def test_the_flow_runs_against_the_configured_prefect_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _record_flow_runs(monkeypatch)
    settings = make_settings(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", settings.prefect_url)
    api_app._warm_prefect(settings)
    assert runs == ["ran"]
