"""The metadata store's schema is owned by Alembic: old state folders upgrade without
losing rows, processes that open one database at once do not trip over each other, and
the models never drift from the migrations."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from tests.conftest import postgres_databases

from mlops.db import SCHEMA_HEAD, VERSION_TABLE, Base, engine_for


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", "mlops:migrations")
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def test_a_state_folder_from_before_alembic_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    old = create_engine(url)
    with old.begin() as connection:  # the schema `create_all` made before migrations
        command.upgrade(_config(connection), "0001")
        connection.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(
            text(
                "INSERT INTO ingest_runs (source, status, steps, started_at) "
                "VALUES ('old.csv', 'succeeded', '[]', '2026-01-02 00:00:00')"
            )
        )
    old.dispose()
    engine = engine_for(url)
    columns = {c["name"] for c in inspect(engine).get_columns("ingest_runs")}
    assert {"owner", "heartbeat_at"} <= columns
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
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
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
    assert ScriptDirectory.from_config(_config(None)).get_current_head() == SCHEMA_HEAD


def test_a_database_behind_the_head_is_upgraded_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    old = create_engine(url)
    with old.begin() as connection:
        command.upgrade(_config(connection), "0003")
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
