"""The evaluation harness beyond the API: suites as deployment gates, the nightly scheduled
run of the standard suite on production, and `mlops eval ...`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.support.registered_models import add_version, copy_version
from typer.testing import CliRunner

from mlops.cli import app
from mlops.cli.common import EVALUATION_FAILED_EXIT
from mlops.errors import InvalidInputError, NotFoundError
from mlops.evaluation import records
from mlops.lifecycle import deployments, mlflow_backend
from mlops.orchestration import run_deployment
from mlops.settings import Settings

IMPOSSIBLE = """
name: impossible
tests:
  - {name: near_perfect, kind: metric, metric: accuracy, op: ">=", threshold: 0.99}
"""


def _settings_with(base: Settings, tmp_path: Path, gates: str) -> Settings:
    config = tmp_path / "config"
    shutil.copytree(base.config_dir, config)
    (config / "suites" / "impossible.yaml").write_text(IMPOSSIBLE)
    (config / "gates.yaml").write_text(gates)
    return base.model_copy(update={"config_dir": config})


@pytest.fixture
def base(lifecycle: dict[str, Any]) -> Settings:
    return lifecycle["settings"]


def _deploy(settings: Settings, name: str, version: str) -> deployments.DeploymentInfo:
    info = deployments.request_deployment(settings, name, version, "production", "tester")
    run_deployment(settings, info.id)
    return deployments.get_deployment(settings, info.id)


def test_required_suites_gate_the_deployment_and_show_in_its_record(
    base: Settings, tmp_path: Path
) -> None:
    settings = _settings_with(base, tmp_path, "default:\n  suites: [smoke]\n")
    name = copy_version(settings, "2")
    info = _deploy(settings, name, "1")
    assert info.status == "succeeded", info.error
    (suite_gate,) = [g for g in info.stages[0].gates if g.name == "suite:smoke"]
    assert suite_gate.passed and suite_gate.message == "3 of 3 tests passed"
    evaluation = records.get(settings, suite_gate.details["evaluation_id"])
    assert evaluation.requested_by == f"deployment {info.id}"
    assert [t["name"] for t in suite_gate.details["tests"]] == [
        "accuracy_floor", "log_loss_ceiling", "batch_latency"
    ]  # fmt: skip
    run = mlflow_backend.client(settings).get_run(suite_gate.details["mlflow_run_id"])
    assert run.data.tags["model_name"] == name and run.info.status == "FINISHED"


def test_a_failing_suite_stops_the_deployment_in_validate(base: Settings, tmp_path: Path) -> None:
    settings = _settings_with(base, tmp_path, "default:\n  suites: [smoke, impossible]\n")
    name = copy_version(settings, "2")
    info = _deploy(settings, name, "1")
    assert info.status == "failed" and info.failed_stage == "validate"
    gates = {g.name: g for g in info.stages[0].gates}
    assert gates["suite:smoke"].passed and not gates["suite:impossible"].passed
    assert "near_perfect failed: accuracy = " in gates["suite:impossible"].message
    assert [s.status for s in info.stages[1:]] == ["skipped", "skipped"]
    assert mlflow_backend.client(settings).get_registered_model(name).aliases == {}


def test_unknown_required_suite_fails_the_gate_with_the_reason(
    base: Settings, tmp_path: Path
) -> None:
    settings = _settings_with(base, tmp_path, "default:\n  suites: [no-such-suite]\n")
    info = _deploy(settings, copy_version(settings, "1"), "1")
    assert info.status == "failed"
    assert "No benchmark suite 'no-such-suite'" in (info.error or "")


def test_nightly_schedule_evaluates_the_production_version(base: Settings) -> None:
    from flows.evaluate import evaluate_flow

    from mlops.serve_flows import deployments as scheduled
    from mlops.serve_flows import load_schedules

    (nightly,) = [s for s in load_schedules(base) if s.flow == "evaluate"]
    assert nightly.cron and nightly.parameters["suites"] == ["standard"]
    assert nightly.parameters["models"] == [{"name": "direction-model", "alias": "production"}]
    assert "nightly-evaluation" in [d.name for d in scheduled(base)]

    name = copy_version(base, "1")
    add_version(base, name, "2")
    mlflow_backend.client(base).set_registered_model_alias(name, "production", "2")
    parameters = {**nightly.parameters, "models": [{"name": name, "alias": "production"}]}
    evaluate_flow(**parameters, settings=base, return_state=True)  # a failed test fails it
    info = records.get(base, records.list_evaluations(base, limit=1)[0].id)
    assert info.requested_by == "nightly-evaluation" and info.status == "succeeded"
    assert info.models == [{"name": name, "version": "2"}]
    assert [r.suite for r in info.results] == ["standard"] and info.explained == [f"{name} v2"]


def _cli(settings: Settings, *args: str) -> Any:
    env = {"MLOPS_HOME": str(settings.home), "MLOPS_CONFIG_DIR": str(settings.config_dir)}
    env.update({"MLOPS_DEMO_TICKERS": "5", "MLOPS_DEMO_START": "2024-01-02"})
    return CliRunner().invoke(app, list(args), env=env)


def test_cli_runs_shows_compares_and_explains(base: Settings, tmp_path: Path) -> None:
    settings = _settings_with(base, tmp_path, "default: {}\n")
    name = copy_version(settings, "1")
    add_version(settings, name, "2")
    listed = _cli(settings, "eval", "suites", "--json")
    assert listed.exit_code == 0, listed.output
    assert {"smoke", "standard", "stress", "impossible"} <= {
        s["name"] for s in json.loads(listed.stdout)
    }

    ran = _cli(settings, "eval", "run", "-s", "smoke", "-m", f"{name}:1", "-m", f"{name}:2",
               "--rows", "60")  # fmt: skip
    assert ran.exit_code in (0, EVALUATION_FAILED_EXIT), ran.output
    assert f"{name} v1 · smoke" in ran.stdout and f"{name} v2 · smoke" in ran.stdout
    latest = records.list_evaluations(settings, limit=1)[0]
    info = records.get(settings, latest.id)
    assert ran.exit_code == (0 if info.verdict == "passed" else EVALUATION_FAILED_EXIT)

    shown = _cli(settings, "eval", "show", latest.id[:8], "--json")
    assert json.loads(shown.stdout)["id"] == latest.id
    compared = _cli(settings, "eval", "compare", "--suite", "smoke")
    assert compared.exit_code == 0 and "★" in compared.stdout and "accuracy" in compared.stdout
    explained = _cli(settings, "eval", "explain", "-m", f"{name}:2")
    assert explained.exit_code == 0, explained.output
    assert "Top drivers of P(up)" in explained.stdout and "Mean |SHAP|" in explained.stdout

    failed = _cli(settings, "eval", "run", "-s", "impossible", "-m", f"{name}:1", "--no-explain")
    assert failed.exit_code == EVALUATION_FAILED_EXIT
    assert "✗ fail" in failed.stdout and "near_perfect" in failed.stdout


def test_cli_bad_input_exit_codes(base: Settings) -> None:
    name = copy_version(base, "1")
    spec = _cli(base, "eval", "run", "-s", "smoke", "-m", name)
    assert spec.exit_code == InvalidInputError.exit_code and "name:version" in spec.output
    unknown = _cli(base, "eval", "run", "-s", "nope", "-m", f"{name}:1")
    assert unknown.exit_code == NotFoundError.exit_code and "No benchmark suite" in unknown.output
    rows = _cli(base, "eval", "run", "-s", "smoke", "-m", f"{name}:1", "--rows", "9000")
    assert rows.exit_code == InvalidInputError.exit_code
    missing = _cli(base, "eval", "show", "not-a-run")
    assert missing.exit_code == NotFoundError.exit_code
