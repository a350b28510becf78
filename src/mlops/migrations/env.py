"""Alembic environment of the metadata store. `mlops.db.engine_for` runs the
migrations with its own connection (passed in `config.attributes["connection"]`);
`alembic -c src/mlops/migrations/alembic.ini revision --autogenerate` writes new ones."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import mlops.prompts.usage  # noqa: F401  (its tables belong to the same metadata)
from mlops.db import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # the alembic command line
    connection = create_engine(config.get_main_option("sqlalchemy.url") or "").connect()
context.configure(
    version_table=config.get_main_option("version_table") or "mlops_alembic_version",
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite changes columns by copying the table
)
with context.begin_transaction():
    context.run_migrations()
