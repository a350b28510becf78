"""The metadata store's schema is owned by Alembic: old state folders upgrade without
losing rows, processes that open one database at once do not trip over each other, and
the models never drift from the migrations."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from tests.support.postgres import postgres_databases
from typer.testing import CliRunner

from mlops.cli import app
from mlops.db import (
    SCHEMA_HEAD,
    VERSION_TABLE,
    Base,
    engine_for,
    migration_config,
    upgrade_database,
)
from mlops.settings import Settings

runner = CliRunner()


def _write_pre_alembic_database(url: str) -> None:
    """The schema `create_all` made before migrations (no version table), with one run."""
    old = create_engine(url)
    with old.begin() as connection:
        command.upgrade(migration_config(connection), "0001")
        connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(
            text(
                "INSERT INTO ingest_runs (source, status, steps, started_at) "
                "VALUES ('old.csv', 'succeeded', '[]', '2026-01-02 00:00:00')"
            )
        )
    old.dispose()


def test_a_state_folder_from_before_alembic_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    _write_pre_alembic_database(url)
    engine = engine_for(url)
    columns = {c["name"] for c in inspect(engine).get_columns("ingest_runs")}
    assert {"owner", "heartbeat_at", "summary"} <= columns
    with engine.connect() as connection:
        assert connection.execute(text("SELECT source FROM ingest_runs")).scalars().all() == [
            "old.csv"
        ]


def test_the_models_match_the_migrations(tmp_path: Path) -> None:
    """A model change without its migration fails here (write one with `alembic revision
    --autogenerate`, see src/mlops/migrations/env.py)."""
    engine = engine_for(f"sqlite:///{tmp_path / 'mlops.db'}")
    with engine.connect() as connection:
        assert (
            compare_metadata(
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
                Base.metadata,
            )
            == []
        )


def test_processes_opening_a_new_database_at_once_all_get_the_schema(tmp_path: Path) -> None:
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    name = f"mlops_migrate_{uuid.uuid4().hex[:8]}"
    with postgres_databases(name) as (pg_url,):
        urls = [f"sqlite:///{tmp_path / 'mlops.db'}", pg_url]
        script = (
            "import sys; from mlops.db import engine_for\n"
            "for url in sys.argv[1:]: engine_for(url)\n"
        )
        children = [
            subprocess.Popen([sys.executable, "-c", script, *urls], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        errors = [child.communicate(timeout=120)[1].decode() for child in children]
        assert [child.returncode for child in children] == [0] * 4, errors
        for url in urls:
            engine = create_engine(url)
            with engine.connect() as connection:
                heads = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                assert heads.scalars().all() == [head]
            engine.dispose()


def test_schema_head_names_the_newest_migration() -> None:
    """A database at SCHEMA_HEAD opens without Alembic: a new migration must move it."""
    assert ScriptDirectory.from_config(migration_config()).get_current_head() == SCHEMA_HEAD


def test_a_database_behind_the_head_is_upgraded_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    old = create_engine(url)
    with old.begin() as connection:
        command.upgrade(migration_config(connection), "0003")
    old.dispose()
    engine_for(url)
    with create_engine(url).connect() as connection:
        heads = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        assert heads.scalars().all() == [SCHEMA_HEAD]
        assert "alias_moves" in inspect(connection).get_table_names()


def test_opening_a_database_at_the_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    engine_for(url)  # creates it at the head
    script = (
        "import sys; from mlops.db import engine_for\n"
        "engine_for(sys.argv[1]); print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _rows(url: str) -> dict[str, list[dict[str, object]]]:
    """Every row of every table (column -> value), sorted, keyed by table."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: sorted(
                    (
                        dict(row._mapping)
                        for row in connection.execute(text(f'SELECT * FROM "{table}"'))
                    ),
                    key=lambda row: repr(sorted(row.items())),
                )
                for table in inspect(connection).get_table_names()
            }
    finally:
        engine.dispose()


def _kept(
    before: dict[str, list[dict[str, object]]], after: dict[str, list[dict[str, object]]]
) -> dict[str, list[dict[str, object]]]:
    """The rows of ``after`` in the tables and columns ``before`` had (columns a migration
    added are new, not lost)."""
    return {
        table: [{column: row[column] for column in rows[0]} for row in after[table]]
        if rows
        else after[table]
        for table, rows in before.items()
        if table != VERSION_TABLE
    }


def test_mlops_db_upgrades_a_database_of_the_previous_release_keeping_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The metadata database of the 0.1 state folder (tests/data, written by that release,
    at migration 0003) is shown as behind, upgraded by `mlops db upgrade`, and keeps every
    row of every table."""
    with tarfile.open(Path(__file__).parents[1] / "data" / "legacy-store-0.1.tar.gz") as archive:
        archive.extract("./mlops.db", tmp_path, filter="data")
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    before = _rows(url)
    assert before["feature_view_versions"] and before["ingest_runs"]  # a real store's rows

    current = runner.invoke(app, ["db", "current"])
    assert current.exit_code == 0, current.output
    assert "at 0003, 7 migrations behind 0010" in current.output
    for revision in ("0004", "0005", "0006", "0007", "0008", "0009", "0010"):
        assert f"would apply {revision}" in current.output
    assert _rows(url) == before  # looking changes nothing

    upgraded = runner.invoke(app, ["db", "upgrade", "--json"])
    assert upgraded.exit_code == 0, upgraded.output
    assert json.loads(upgraded.output) == {
        "url": url,
        "from": "0003",
        "to": SCHEMA_HEAD,
        "applied": ["0004", "0005", "0006", "0007", "0008", "0009", "0010"],
    }
    after = _rows(url)
    assert _kept(before, after) == {t: r for t, r in before.items() if t != VERSION_TABLE}
    assert [tuple(row.values()) for row in after[VERSION_TABLE]] == [(SCHEMA_HEAD,)]
    assert "alias_moves" in after

    again = runner.invoke(app, ["db", "upgrade"])
    assert again.exit_code == 0 and "already at 0010, the newest migration" in again.output
    history = json.loads(runner.invoke(app, ["db", "history", "--json"]).output)
    assert [(m["revision"], m["applied"]) for m in history] == [
        ("0001", True),
        ("0002", True),
        ("0003", True),
        ("0004", True),
        ("0005", True),
        ("0006", True),
        ("0007", True),
        ("0008", True),
        ("0009", True),
        ("0010", True),
    ]


def test_mlops_db_current_does_not_create_a_missing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert "empty (no migration applied; the newest is 0010)" in result.output
    assert not (tmp_path / "mlops.db").exists()


def test_a_postgresql_database_from_before_alembic_upgrades_keeping_its_rows() -> None:
    name = f"mlops_old_{uuid.uuid4().hex[:8]}"
    with postgres_databases(name) as (url,):
        _write_pre_alembic_database(url)
        before, after = upgrade_database(url)
        assert (before.revision, after.revision) == (None, SCHEMA_HEAD)
        assert not after.pending
        rows = _rows(url)["ingest_runs"]
        assert [(r["source"], r["status"]) for r in rows] == [("old.csv", "succeeded")]


def _deployment_at_0009(url: str) -> None:
    """A database at 0009 holding one finished deployment, written with that schema's
    columns (the ORM class has the newer ones)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migration_config(connection), "0009")
        connection.execute(
            text(
                "INSERT INTO deployments (id, model_name, version, target_stage, kind, status,"
                " stages, requested_by, reason, owner, created_at) VALUES ('d' || :n, 'm', '1',"
                " 'production', 'deploy', 'succeeded', :stages, 'ana', 'old', '', :at)"
            ),
            {"n": "0" * 31, "stages": json.dumps([]), "at": "2026-01-02 03:04:05"},
        )
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_deployments_recorded_before_approvals_read_the_same_after_0010(
    tmp_path: Path, backend: str
) -> None:
    """0010 adds approvals: a deployment made before it needs none and reads as it was."""
    from mlops.lifecycle import deployments

    def check(url: str) -> None:
        _deployment_at_0009(url)
        before, after = upgrade_database(url)
        assert (before.revision, after.revision) == ("0009", SCHEMA_HEAD)
        settings = Settings.model_validate({"home": tmp_path, "metadata_db_url": url})
        info = deployments.get_deployment(settings, "d" + "0" * 31)
        assert (info.status, info.requested_by, info.reason) == ("succeeded", "ana", "old")
        assert (info.approvals_required, info.approvals, info.approved) == (0, [], False)

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'mlops.db'}")
        return
    with postgres_databases(f"mlops_0009_{uuid.uuid4().hex[:8]}") as (url,):
        check(url)
