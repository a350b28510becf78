"""`mlops experiments`, `mlops models` and `mlops predict` over the trained test store."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from tests.support.ingest import read_offline
from tests.support.registered_models import LIFECYCLE_EXPERIMENT, copy_version
from typer.testing import CliRunner

from mlops.cli import app
from mlops.cli.experiments import sparkline
from mlops.db import Deployment, session_scope
from mlops.lifecycle import deployments
from mlops.settings import Settings

runner = CliRunner()


@pytest.fixture()
def cli_env(lifecycle: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings: Settings = lifecycle["settings"]
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("MLOPS_PREFECT_API_URL", str(PREFECT_API_URL.value()))
    return settings


def _json(args: list[str]) -> Any:
    """A command's JSON (stdout: log lines of MLflow or Prefect go to stderr)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_experiments_list_show_create_compare(cli_env: Settings, lifecycle: dict[str, Any]) -> None:
    listed = _json(["experiments", "list", "--search", LIFECYCLE_EXPERIMENT, "--json"])
    assert [e["name"] for e in listed["items"]] == [LIFECYCLE_EXPERIMENT]
    assert listed["items"][0]["run_count"] == 2
    table = runner.invoke(app, ["experiments", "list", "-s", LIFECYCLE_EXPERIMENT])
    assert LIFECYCLE_EXPERIMENT in table.output and "best roc_auc" in table.output
    shown = runner.invoke(app, ["experiments", "show", LIFECYCLE_EXPERIMENT])
    assert shown.exit_code == 0
    assert all(r.run_id[:8] in shown.output for r in lifecycle["runs"].values())
    detail = _json(["experiments", "show", LIFECYCLE_EXPERIMENT, "--json"])
    assert {r["params"]["kind"] for r in detail["runs"]} == set(lifecycle["runs"])

    created = runner.invoke(app, ["experiments", "create", "cli-made", "-d", "by cli", "-t", "a=b"])
    assert created.exit_code == 0 and "Created experiment cli-made" in created.output
    again = runner.invoke(app, ["experiments", "create", "cli-made"])
    assert again.exit_code == 5 and "already exists" in again.output
    bad = runner.invoke(app, ["experiments", "create", "bad;name"])
    assert bad.exit_code == 2
    bad_tag = runner.invoke(app, ["experiments", "create", "ok-name", "-t", "novalue"])
    assert bad_tag.exit_code == 2 and "key=value" in bad_tag.output

    runs = [r.run_id for r in lifecycle["runs"].values()]
    compared = runner.invoke(
        app, ["experiments", "compare", "cv_roc_auc", "-r", runs[0], "-r", runs[1]]
    )
    assert compared.exit_code == 0 and "higher is better" in compared.output
    assert runner.invoke(app, ["experiments", "compare", "roc_auc"]).exit_code == 2


def test_sparkline_follows_the_values() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([2.0, 2.0]) == "▁▁" and sparkline([]) == ""


def test_models_deploy_status_rollback_and_predict(cli_env: Settings) -> None:
    name = copy_version(cli_env, "1")
    deployed = runner.invoke(app, ["models", "deploy", name, "1"])
    assert deployed.exit_code == 0, deployed.output
    assert "succeeded" in deployed.output and "threshold:accuracy" in deployed.output
    listed = _json(["models", "list", "--search", name, "--json"])
    assert listed["items"][0]["versions"][0]["stage"] == "Production"
    shown = runner.invoke(app, ["models", "show", name])
    assert "production v1" in shown.output

    ticker = str(read_offline(cli_env, "bars.parquet")["ticker"].iloc[0])
    predicted = _json(["predict", ticker, "--model", name, "--json"])
    assert predicted["version"] == "1" and predicted["predictions"][0]["ticker"] == ticker
    unknown = runner.invoke(app, ["predict", "NOPE", "--model", name])
    assert unknown.exit_code == 4 and "NOPE" in unknown.output

    history = _json(["models", "status", "--model", name, "--json"])
    assert [d["status"] for d in history] == ["succeeded"]
    status = runner.invoke(app, ["models", "status", history[0]["id"][:8]])  # a prefix
    assert "validate" in status.output and "passed" in status.output

    refused = runner.invoke(app, ["models", "rollback", name, "--yes"])
    assert refused.exit_code == 5 and "no previous production" in refused.output
    failed = runner.invoke(app, ["models", "deploy", name, "1", "--target", "canary"])
    assert failed.exit_code == 2 and "Unknown target stage" in failed.output
    missing = runner.invoke(app, ["models", "deploy", name, "7"])
    assert missing.exit_code == 4

    ledger = _json(["models", "history", name, "--at", "2999-01-01T00:00:00Z", "--json"])
    assert ledger["production_at"] == "1" and ledger["staging_at"] is None
    assert [(c["alias"], c["to_version"]) for c in ledger["changes"]] == [
        ("staging", None),
        ("production", "1"),
        ("staging", "1"),
    ]
    shown = runner.invoke(app, ["models", "history", name])
    assert "Alias changes of" in shown.output and "production" in shown.output
    assert runner.invoke(app, ["models", "history", "no-such-model"]).exit_code == 4
    assert runner.invoke(app, ["models", "history", name, "--at", "soon"]).exit_code == 2


def test_models_status_first_closes_the_deployment_of_a_dead_process(cli_env: Settings) -> None:
    """Like every command that starts or shows runs, it closes those of dead processes."""
    name = copy_version(cli_env, "1")
    info = deployments.request_deployment(cli_env, name, "1", "production", "t")
    deployments.begin(cli_env, info.id, None)
    with session_scope(cli_env.metadata_url) as session:
        session.get(Deployment, info.id).owner = f"{socket.gethostname()}:999999999:0"
    assert deployments.get_deployment(cli_env, info.id).status == "running"
    shown = _json(["models", "status", info.id[:8], "--json"])
    assert shown["status"] == "failed" and "Interrupted" in shown["error"]


def test_a_failed_gate_exits_10_and_leaves_production(
    cli_env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(cli_env.config_dir, config)
    (config / "gates.yaml").write_text(
        'default: {thresholds: {accuracy: {op: ">=", value: 0.99}}}\n'
    )
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(config))
    name = copy_version(cli_env, "1")
    result = runner.invoke(app, ["models", "deploy", name, "1"])
    assert result.exit_code == 10, result.output
    assert "threshold:accuracy" in result.output and "needs >= 0.99" in result.output
    assert (
        _json(["models", "list", "--search", name, "--json"])["items"][0]["versions"][0]["stage"]
        == "None"
    )
