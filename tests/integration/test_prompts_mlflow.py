"""Published versions mirrored into MLflow's prompt registry (SQLite backend), and a publish
that stands in git when MLflow registration fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.prompt_git import git

from mlops.prompts import publishing
from mlops.prompts.store import PromptStore
from mlops.settings import Settings


def test_published_versions_are_registered_with_the_production_alias(tmp_path: Path) -> None:
    import mlflow.genai

    settings = Settings(home=tmp_path / "home")
    settings.ensure_dirs()
    store = PromptStore(settings)
    store.update("compliance_footer", 1, "Internal use only ({{ as_of }}).", None, "a", "a")
    first = publishing.publish(store, "compliance_footer", 1, "alice", "initial")
    assert first.mlflow is not None and first.mlflow.registered, first.mlflow
    store_v2 = store.record("compliance_footer", 2)
    examples_meta = store.repository.read(store_v2.commit.sha, "compliance_footer/prompt.yaml")
    fixed = examples_meta.replace(
        'expected: "For internal research use only. Not investment advice. Figures as of 2026-11-24."',
        'expected: "Internal use only (2026-11-24)."',
    )
    store.update("compliance_footer", 2, None, fixed, "a", "a")
    second = publishing.publish(store, "compliance_footer", 3, "alice")
    assert second.mlflow is not None and second.mlflow.prompt_version == 2
    live = mlflow.genai.load_prompt("prompts:/compliance_footer@production")
    assert live.template == "Internal use only ({{ as_of }})."
    assert live.tags["git_sha"] == second.sha and live.tags["git_version"] == "3"
    back = publishing.rollback(store, "compliance_footer", 1, "bob")
    assert back.mlflow is not None and back.mlflow.prompt_version == 3
    assert (
        mlflow.genai.load_prompt("prompts:/compliance_footer@production").tags["git_sha"]
        == first.sha
    )
    # A prompt is no model: the registry's list, detail and deploy do not offer it.
    from mlops.errors import NotFoundError
    from mlops.lifecycle import deployments, registry

    assert registry.list_models(settings, registry.ModelQuery()).items == []
    with pytest.raises(NotFoundError):
        registry.get_model(settings, "compliance_footer")
    with pytest.raises(NotFoundError):
        deployments.request_deployment(settings, "compliance_footer", "1", "production", "t")


def test_a_failed_registration_keeps_the_git_publish(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri="unsupported-scheme://nowhere")
    settings.ensure_dirs()
    store = PromptStore(settings)
    result = publishing.publish(store, "risk_report", 1, "alice")
    assert result.mlflow is not None and not result.mlflow.registered and result.mlflow.error
    assert store.detail("risk_report").published_version == 1
    assert git(settings.prompts_dir, "rev-parse", "risk_report/production").strip() == result.sha
