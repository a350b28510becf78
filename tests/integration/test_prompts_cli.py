"""`mlops prompts ...` on a real prompt repository: output, JSON, $EDITOR, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.prompt_git import git, repo_snapshot
from typer.testing import CliRunner

from mlops.cli import app

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_PROMPTS_MLFLOW_REGISTRY", "false")
    monkeypatch.setenv("MLOPS_AUTHOR", "cli-user")
    return tmp_path / "home"


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["prompts", *args])
    return result.exit_code, result.output


def _stdout(*args: str) -> tuple[int, str]:
    """Exit code and stdout only: JSON and rendered text, without the log lines that
    background threads (MLflow set-up) may write to stderr meanwhile."""
    result = runner.invoke(app, ["prompts", *args])
    return result.exit_code, result.stdout


def _editor(tmp_path: Path, body: str) -> str:
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def _create_greet(tmp_path: Path) -> None:
    (tmp_path / "greet.j2").write_text("Hello {{ who }}\n")
    (tmp_path / "greet.yaml").write_text(
        "description: greeting\nvariables:\n  who: {type: string}\n"
        "examples:\n  - name: desk\n    variables: {who: desk}\n    expected: Hello desk\n"
    )
    code, out = _run("create", "greet", "-t", str(tmp_path / "greet.j2"),
                     "--metadata", str(tmp_path / "greet.yaml"), "-m", "add greet")  # fmt: skip
    assert code == 0 and "greet v1" in out, out


def test_list_show_history_and_json(home: Path) -> None:
    code, out = _run("list")
    assert code == 0 and "Prompt templates (5)" in out and "market_summary" in out
    items = json.loads(_stdout("list", "--json")[1])
    assert {i["name"] for i in items} >= {"risk_report", "trade_rationale"}
    code, out = _run("show", "risk_report")
    assert code == 0 and "risk_report" in out and "exposures: object" in out
    assert '{% include "compliance_footer" %}' in out
    history = json.loads(_stdout("history", "risk_report", "--json")[1])
    assert history[0]["version"] == 1 and history[0]["author"] == "cli-user"
    assert _run("show", "nope")[0] == 4
    assert _run("show", "../etc")[0] == 2


def test_create_edit_diff_publish_render_rollback(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create_greet(tmp_path)
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "sed -i 's/Hello/Howdy/' \"$1\""))
    code, out = _run("edit", "greet", "-m", "howdy")
    assert code == 0 and "greet v2" in out, out
    code, out = _run("diff", "greet", "1", "2")
    assert "-Hello {{ who }}" in out and "+Howdy {{ who }}" in out and "(metadata unchanged)" in out
    code, out = _run("publish", "greet", "1", "-m", "go")
    assert code == 0 and "greet v1 is live" in out
    code, out = _stdout("render", "greet", "--var", "who=desk")
    assert code == 0 and out == "Hello desk\n"
    rendered = json.loads(
        _stdout("render", "greet", "-v", "who=a", "--label", "latest", "--json")[1]
    )
    assert rendered["output"] == "Howdy a\n" and rendered["version"] == 2
    code, out = _run("test", "greet")
    assert code == 2 and "FAIL greet v2 desk" in out
    assert _run("publish", "greet")[0] == 2
    code, out = _run("test", "greet", "--version", "1")
    assert code == 0 and "PASS greet v1 desk" in out
    code, out = _run("rollback", "greet", "3")
    assert code == 4
    code, out = _run("history", "greet")
    assert "howdy" in out and "v2" in out
    report = json.loads(_stdout("usage", "greet", "--json")[1])
    assert report["total"]["calls"] == 2 and [v["version"] for v in report["versions"]] == [1, 2]
    code, out = _run("usage", "greet", "--bucket", "hour")
    assert code == 0 and "2 calls" in out and "Per hour" in out
    code, out = _run("usage", "greet")
    assert code == 0 and "Per hour" in out  # the API's default bucket
    assert _run("usage", "greet", "--bucket", "week")[0] == 2
    subjects = git(home / "prompts", "log", "--format=%an|%s", "-3").splitlines()
    assert subjects == ["cli-user|publish greet v1", "cli-user|howdy", "cli-user|add greet"]


def test_help_describes_version_arguments_and_json_output(home: Path) -> None:
    rollback_help = _run("rollback", "--help")[1]
    assert "earlier published version" in rollback_help
    assert "instead of a table" not in rollback_help
    diff_help = _run("diff", "--help")[1]
    assert "version to diff from" in diff_help and "version to diff to" in diff_help
    assert "hour" in _run("usage", "--help")[1]


def test_edit_without_changes_a_failing_editor_and_bad_yaml_change_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create_greet(tmp_path)
    before = repo_snapshot(home / "prompts")
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "true"))
    code, out = _run("edit", "greet")
    assert code == 0 and "No changes" in out
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "exit 3"))
    assert _run("edit", "greet")[0] == 2
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "echo 'variables: [' >> \"$1\""))
    code, out = _run("edit", "greet", "--metadata")
    assert code == 2 and "not valid YAML" in out and "Your edit is kept in" in out
    kept = list((home / "prompt-edits").glob("greet.*.prompt.yaml"))
    assert len(kept) == 1 and kept[0].read_text().endswith("variables: [\n")
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "echo '{{ undeclared }}' >> \"$1\""))
    code, out = _run("edit", "greet")
    assert code == 2 and "undeclared" in out
    assert repo_snapshot(home / "prompts") == before


def test_render_errors_and_archive(home: Path) -> None:
    code, out = _run("render", "risk_report", "--label", "latest", "-v", "portfolio=1")
    assert code == 2 and "portfolio" in out
    code, out = _run("render", "risk_report")
    assert code == 5 and "no published version" in out
    assert _run("render", "risk_report", "-v", "bad")[0] == 2
    (home.parent / "vars.yaml").write_text("a: [")
    code, out = _run("render", "risk_report", "--vars", str(home.parent / "vars.yaml"))
    assert code == 2 and "not valid YAML" in out
    code, out = _run("archive", "risk_report", "-m", "retired")
    assert code == 0 and "archived" in out
    assert "risk_report" not in _run("list")[1]
    assert "risk_report" in _run("list", "--archived")[1]
    assert _run("archive", "risk_report", "--restore")[0] == 0


def test_test_command_runs_every_shipped_example(home: Path) -> None:
    code, out = _run("test")
    assert code == 0 and out.count("PASS") == 6


def test_help_does_not_import_git_jinja_or_sqlalchemy() -> None:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, mlops.cli; print(any(m in sys.modules for m in ('git', 'jinja2', 'sqlalchemy', 'mlflow')))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "False"
    result = subprocess.run(
        [sys.executable, "-m", "mlops", "prompts", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in (
        "list",
        "show",
        "create",
        "edit",
        "history",
        "diff",
        "publish",
        "rollback",
        "render",
        "usage",
        "test",
    ):
        assert command in result.stdout


def test_refused_edits_in_the_same_second_are_all_kept(tmp_path: Path) -> None:
    """Twenty edits refused at once (e.g. twenty terminals) leave twenty saved copies."""
    from concurrent.futures import ThreadPoolExecutor

    from mlops.cli.prompts import _keep_edit

    texts = [f"edit number {i}\n" for i in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        paths = list(pool.map(lambda t: _keep_edit(tmp_path, "greet", "template.j2", t), texts))
    assert len(set(paths)) == 20
    assert sorted(p.read_text() for p in paths) == sorted(texts)
    assert all(p.name.startswith("greet.") and p.name.endswith(".template.j2") for p in paths)
