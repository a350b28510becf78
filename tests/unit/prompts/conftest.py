"""Fixtures of the prompt-store tests: a real git repository seeded from the shipped prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.prompts.store import PromptStore, open_store
from mlops.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path / "home", profile="local", prompts_mlflow_registry=False)
    settings.ensure_dirs()
    return settings


@pytest.fixture()
def store(settings: Settings) -> PromptStore:
    return open_store(settings)
