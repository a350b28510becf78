"""Store outages as StoreUnavailableError: what is an outage, what is not, and what a
message may show."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from mlops.errors import StoreUnavailableError
from mlops.stores import ONLINE_STORE, PLATFORM_DB, describe_url, guard_engine, store_outage


def test_a_corrupt_sqlite_file_names_the_store_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(b"garbage" * 1000)
    engine = guard_engine(create_engine(f"sqlite:///{path}"), PLATFORM_DB)
    with pytest.raises(StoreUnavailableError) as raised, engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM sqlite_master"))
    assert raised.value.http_status == 503 and raised.value.details == {"store": PLATFORM_DB}
    assert str(path) in raised.value.message and "corrupt" in raised.value.message


def test_a_constraint_violation_is_not_an_outage(tmp_path: Path) -> None:
    engine = guard_engine(create_engine(f"sqlite:///{tmp_path / 'ok.db'}"), PLATFORM_DB)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (name TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO t VALUES ('a')"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('a')"))


def test_mlflow_busy_timeout_is_shortened_on_guarded_engines(tmp_path: Path) -> None:
    engine = guard_engine(create_engine(f"sqlite:///{tmp_path / 'm.db'}"), PLATFORM_DB)
    with engine.connect() as conn:
        conn.execute(text("PRAGMA busy_timeout = 20000;"))  # what MLflow sets per session
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 5000


def test_messages_never_show_credentials() -> None:
    where = describe_url("postgresql+psycopg://admin:s3cret@db.internal:6543/mlflow")
    assert where == "db.internal:6543/mlflow"


def test_an_outage_is_found_anywhere_in_the_chain_of_causes() -> None:
    try:
        try:
            raise redis.exceptions.ConnectionError("Connection refused")
        except redis.exceptions.ConnectionError as exc:
            raise RuntimeError("feast failed") from exc
    except RuntimeError as wrapped:
        outage = store_outage(wrapped)
    assert outage is not None and outage.store == ONLINE_STORE
    assert store_outage(ValueError("a bug, not an outage")) is None


def test_processes_recording_one_store_at_once_leave_one_row(tmp_path: Path) -> None:
    """The API's warm-up and a first request both record the MLflow store they open."""
    from concurrent.futures import ThreadPoolExecutor

    from mlops.db import record_store_use, store_use

    url = f"sqlite:///{tmp_path / 'mlops.db'}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: record_store_use(url, "mlflow", "sqlite:///m.db", n), range(16)))
    used = store_use(url, "sqlite:///m.db")
    assert used is not None and used.experiments in range(16)
