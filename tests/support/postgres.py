"""Databases of their own on the local PostgreSQL, for the production-profile tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_databases(*names: str) -> Iterator[list[str]]:
    """Fresh PostgreSQL databases on 127.0.0.1 (URLs), dropped afterwards."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for the production profile: {exc}")
    try:
        yield [f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
