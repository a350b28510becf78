"""Schemathesis over the whole OpenAPI of the in-process app, with the token and without:
no server errors, and every answer (status, content type, body, headers, `Allow` of a 405)
as the document says.

Schemathesis' own engine runs its phases (boundary values of every parameter, then random
valid and invalid requests) as its CLI would; pytest 9 no longer supports its lazy
fixture-based test generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import engine
from schemathesis.engine import events
from tests.support.ingest import run_ingest_flow
from tests.support.settings import make_settings

from mlops.app import create_app
from mlops.settings import Settings

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
)
EXAMPLES = 10
"""Random requests per operation (valid and invalid) after the boundary-value phase."""


@pytest.fixture(scope="module")
def populated(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A state folder of this module's own (the calls with the token write into it): the
    demo data ingested and one model trained and registered."""
    from mlops.lifecycle import training

    settings = make_settings(Path(tmp_path_factory.mktemp("schema")))
    run_ingest_flow(settings, message="initial load")
    config = training.get_model_config(settings, "logistic_regression", {"C": 1.0})
    dataset = training.prepare_dataset(settings, config, "tester")
    training.train_model(settings, config, "tester", dataset=dataset)
    return settings


@pytest.fixture(scope="module")
def app(populated: Settings) -> Iterator[FastAPI]:
    application = create_app(populated)
    with TestClient(application):  # runs the lifespan: warm-up, prompt repository
        yield application


def _run(app: FastAPI, headers: dict[str, str]) -> tuple[list[str], dict[int, int]]:
    """Every distinct check failure or engine error, and the count of each status seen."""
    config = schemathesis.Config.from_dict(
        {
            "seed": 20261201,
            "suppress-health-check": ["all"],
            "request-timeout": 60,
            "headers": headers,
            "generation": {"max-examples": EXAMPLES},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app, config=config)
    problems: set[str] = set()
    statuses: dict[int, int] = {}
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            problems |= _failures(event)
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    code = interaction.response.status_code
                    statuses[code] = statuses.get(code, 0) + 1
        elif isinstance(event, events.NonFatalError):
            problems.add(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            problems.add(f"fatal: {event.exception!r}")
    return sorted(problems), statuses


def _failures(event: Any) -> set[str]:
    found = set()
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                failure = check.failure_info.failure
                found.add(
                    f"{event.recorder.label} [{check.name}] {failure.title}: "
                    f"{failure.message}\n{check.failure_info.code_sample}"
                )
    return found


def test_with_token_every_answer_is_documented(app: FastAPI, populated: Settings) -> None:
    problems, statuses = _run(app, {"Authorization": f"Bearer {populated.token}"})
    assert problems == []
    assert statuses.get(200, 0) > 100 and 500 not in statuses
    assert {201, 404, 409, 422} <= set(statuses)  # writes happened, and were refused


def test_without_token_every_answer_is_documented(app: FastAPI) -> None:
    problems, statuses = _run(app, {})
    assert problems == []
    assert statuses.get(401, 0) > 100 and 500 not in statuses
    assert 201 not in statuses  # nothing was created without the token
