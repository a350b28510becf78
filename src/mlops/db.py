"""The platform's metadata store (SQLAlchemy): feature view versions, statistics,
datasets, ingest runs, model deployments, alias moves and the ledger of alias changes,
users and their API tokens. SQLite in the local profile, PostgreSQL in production."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from mlops.settings import without_password
from mlops.stores import BUSY_TIMEOUT_MS, PLATFORM_DB, guard_engine

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class FeatureViewVersion(Base):
    """One definition of a feature view; the newest row of a view is the active one."""

    __tablename__ = "feature_view_versions"
    __table_args__ = (UniqueConstraint("view_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    view_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(20))
    change_kind: Mapped[str] = mapped_column(String(20))
    author: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    feast_version: Mapped[str | None] = mapped_column(String(20), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeatureStatistics(Base):
    """Statistics and sample values of one feature, computed at ingest, per view version."""

    __tablename__ = "feature_statistics"
    __table_args__ = (UniqueConstraint("view_name", "version", "feature_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    view_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    feature_name: Mapped[str] = mapped_column(String(200), index=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    samples: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    features: Mapped[list[str]] = mapped_column(JSON)
    feature_versions: Mapped[dict[str, int]] = mapped_column(JSON)
    tickers: Mapped[list[str]] = mapped_column(JSON)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer)
    label: Mapped[bool] = mapped_column(Boolean, default=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IngestRun(Base):
    """One run of the ingest pipeline with the wall time of each step."""

    __tablename__ = "ingest_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="running")
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The code of the error (`MlopsError.code`) that ended a rejected or failed run."""
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """The process running it (host:pid:start); a dead owner means the run was killed."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """What a completed run did (`IngestSummary` without the run id)."""


class Deployment(Base):
    """One deployment (or rollback) of a registered model version through its stages.

    `active_model` holds the model's name while the deployment is pending or running and
    NULL afterwards; its unique constraint lets one deployment per model run at a time.
    """

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(250), index=True)
    version: Mapped[str] = mapped_column(String(20))
    target_stage: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20), default="deploy")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    previous_production: Mapped[str | None] = mapped_column(String(20), nullable=True)
    failed_stage: Mapped[str | None] = mapped_column(String(20), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    active_model: Mapped[str | None] = mapped_column(String(250), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    approvals_required: Mapped[int] = mapped_column(Integer, default=0)
    """How many approvers must approve before production moves (`config/gates.yaml`), set
    when the deployment stops to wait for them; 0: none asked."""
    approval_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class Evaluation(Base):
    """One evaluation run: suites x model versions, run by the Prefect flow `evaluate`."""

    __tablename__ = "evaluations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    suites: Mapped[list[str]] = mapped_column(JSON)
    models: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    explain: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    plots: Mapped[str] = mapped_column(Text, default="pending")
    flow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EvaluationResult(Base):
    """The result of one (model version, suite) pair, or one model's explanation."""

    __tablename__ = "evaluation_results"
    __table_args__ = (UniqueConstraint("evaluation_id", "kind", "model_name", "version", "suite"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    model_name: Mapped[str] = mapped_column(String(250))
    version: Mapped[str] = mapped_column(String(20))
    suite: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StoreUse(Base):
    """A store of another system (MLflow's tracking database) this platform has used.

    If such a store is later missing or empty, it was deleted or replaced rather than new:
    the platform refuses to recreate it silently until `mlops stores forget` is run.
    """

    __tablename__ = "store_uses"

    uri: Mapped[str] = mapped_column(String(1000), primary_key=True)
    store: Mapped[str] = mapped_column(String(100))
    experiments: Mapped[int] = mapped_column(Integer, default=0)
    first_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasMoves(Base):
    """How often the platform has moved an alias of a registered model (`alias_moves.py`).

    Serving processes compare it with the count they last saw instead of asking MLflow
    on every request."""

    __tablename__ = "alias_moves"

    model_name: Mapped[str] = mapped_column(String(250), primary_key=True)
    moves: Mapped[int] = mapped_column(Integer, default=0)
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AliasChange(Base):
    """One move of a registered model's `production` or `staging` alias, append-only
    (`lifecycle/ledger.py`): who moved it from which version to which, when, why, and the
    deployment it belongs to."""

    __tablename__ = "alias_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(250), index=True)
    alias: Mapped[str] = mapped_column(String(20))
    from_version: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_version: Mapped[str | None] = mapped_column(String(20), nullable=True)
    """None: the alias was removed."""
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    deployment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(20), default="platform")
    """`platform`: a move the platform made; `external`: a move made outside it (the MLflow
    UI), seen afterwards; `acknowledged`: an approver acknowledged the external move."""


class Approval(Base):
    """One approver's decision on a change waiting for approval (`mlops.approvals`): a
    deployment to production, or a prompt publication. One decision per approver and
    change."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("subject_kind", "subject_id", "approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(64))
    approver: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PublicationRequest(Base):
    """A publication of a prompt template's version that waits for approvers
    (`mlops.prompts.publications`). `active_template` holds the template's name while it
    waits, so one request per template waits at a time."""

    __tablename__ = "publication_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    template: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    approvals_required: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The published commit, once published."""
    publishing_since: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    """When the last approval came in and the publish began."""
    active_template: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)


class User(Base):
    """A person (or a service) using the platform, with one role (`mlops.users`)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    role: Mapped[str] = mapped_column(String(20))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="")


class ApiToken(Base):
    """A personal API token: only its SHA-256 is kept (the token is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(20))
    """The token's first characters, to tell tokens apart in a list."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


SCHEMA_LOCK = threading.RLock()
"""Held while this process opens a database whose schema it may create or migrate: ours
(`engine_for`) and MLflow's (`mlflow_backend.client`). Alembic keeps its migration context
in module globals, so two migrations in one process must never run at once, and both
MLflow and this module migrate with Alembic. One lock for all, so no two locks can be
taken in opposite orders."""
VERSION_TABLE = "mlops_alembic_version"
"""Alembic's bookkeeping table, named so it never meets MLflow's in a shared database."""


def engine_for(url: str) -> Engine:
    """One engine per database URL, with the schema migrated to the newest on first use;
    its outages raise StoreUnavailableError naming the platform database. Made under
    `SCHEMA_LOCK`, so threads asking at once share one engine."""
    with SCHEMA_LOCK:
        return _new_engine(url)


def _platform_engine(url: str, **options: Any) -> Engine:
    """An engine on the platform database: outages raise StoreUnavailableError naming it,
    and SQLite connections get the platform's pragmas."""
    engine = guard_engine(create_engine(url, **options), PLATFORM_DB)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@lru_cache(maxsize=8)
def _new_engine(url: str) -> Engine:
    engine = _platform_engine(url, pool_pre_ping=True)
    upgrade_schema(engine)
    return engine


SCHEMA_HEAD = "0010"
"""The newest migration in src/mlops/migrations/versions (test_migrations checks that it is
Alembic's head). A database already there opens without importing Alembic, which is about
1 s of every `mlops` command and flow run on the 2-core test machine."""


def upgrade_schema(engine: Engine) -> None:
    """Run the Alembic migrations (src/mlops/migrations) up to head.

    Other processes may do the same at the same moment: SQLite files are upgraded under a
    file lock beside them, PostgreSQL under a transaction-scoped advisory lock.
    """
    if _schema_versions(engine) == [SCHEMA_HEAD]:
        return
    from alembic import command

    with SCHEMA_LOCK, _cross_process_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('mlops-schema'))"))
        command.upgrade(migration_config(connection), "head")


def migration_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic's configuration for the platform's migrations, run on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "mlops:migrations")
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class Migration:
    revision: str
    message: str
    applied: bool


@dataclass(frozen=True)
class SchemaState:
    """Where a metadata database stands against the platform's migrations."""

    url: str
    revision: str | None
    """The newest migration applied; None before the first (an empty database)."""
    migrations: list[Migration]
    """Every migration, oldest first, with whether this database has it."""

    @property
    def head(self) -> str:
        return self.migrations[-1].revision

    @property
    def pending(self) -> list[Migration]:
        return [m for m in self.migrations if not m.applied]


def schema_state(url: str) -> SchemaState:
    """The revision of the database at ``url`` and the migrations it lacks (it is not
    upgraded: every other way of opening it, `engine_for`, upgrades it first)."""
    from alembic.script import ScriptDirectory

    versions = [] if _missing_sqlite_file(url) else _versions_at(url)
    script = ScriptDirectory.from_config(migration_config())
    applied = {r.revision for v in versions for r in script.iterate_revisions(v, "base")}
    oldest_first = reversed(list(script.walk_revisions()))
    return SchemaState(
        url=without_password(url),
        revision=versions[0] if versions else None,
        migrations=[
            Migration(r.revision, " ".join(r.doc.split()), r.revision in applied)
            for r in oldest_first
        ],
    )


def _missing_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database or ":memory:"
    return (
        parsed.get_backend_name() == "sqlite"
        and database != ":memory:"
        and not Path(database).exists()
    )


def _versions_at(url: str) -> list[str]:
    engine = _platform_engine(url)
    try:
        return _schema_versions(engine)
    finally:
        engine.dispose()


def upgrade_database(url: str) -> tuple[SchemaState, SchemaState]:
    """Migrate the database at ``url`` to the newest schema; its state before and after."""
    before = schema_state(url)
    engine = _platform_engine(url)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()
    return before, schema_state(url)


def _schema_versions(engine: Engine) -> list[str]:
    """The revisions Alembic recorded in this database; [] before its first migration."""
    if VERSION_TABLE not in inspect(engine).get_table_names():
        return []
    with engine.connect() as connection:
        return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def _cross_process_lock(engine: Engine) -> AbstractContextManager[object]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return nullcontext()
    from filelock import FileLock

    return FileLock(f"{database}.schema.lock")


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed when the block ends, rolled back on error."""
    with _session_factory(engine_for(url))() as session, session.begin():
        yield session


@contextmanager
def locked_scope(url: str) -> Iterator[Session]:
    """A transaction that writes back what it reads (a read-modify-write): its rows are
    read with SELECT ... FOR UPDATE, which locks them in PostgreSQL. SQLite has no row
    locks, and Python's sqlite3 starts a transaction only at the first write, so there
    the transaction takes the database's write lock before its first read (BEGIN
    IMMEDIATE; others wait up to the busy timeout). Two such transactions on one record
    then run one after the other, and neither overwrites the other's change."""
    with _session_factory(engine_for(url))() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE"))
        yield session


@lru_cache(maxsize=8)
def _session_factory(engine: Engine) -> sessionmaker[Session]:
    """One factory per engine: making one builds a new Session class, which cost more than
    a short read's queries when it was made for every session."""
    return sessionmaker(engine, expire_on_commit=False)


def store_use(url: str, uri: str) -> StoreUse | None:
    """The record of the platform's use of the store at `uri`, if it used it before."""
    with session_scope(url) as session:
        return session.get(StoreUse, uri)


def record_store_use(url: str, store: str, uri: str, experiments: int) -> None:
    """Remember that the platform uses the store at `uri` (holding `experiments`).

    Two processes (or threads) can record the same store at once: the insert of the
    second meets the first's row and becomes an update."""
    from sqlalchemy.exc import IntegrityError

    for _ in range(2):
        try:
            with session_scope(url) as session:
                found = session.get(StoreUse, uri)
                if found is None:
                    session.add(StoreUse(uri=uri, store=store, experiments=experiments))
                else:
                    found.experiments, found.last_used_at = experiments, utcnow()
            return
        except IntegrityError:
            continue  # another writer inserted it meanwhile: update it on the next pass


def forget_store_use(url: str, uri: str) -> bool:
    """Forget the platform's use of the store at `uri`; False if there was none."""
    with session_scope(url) as session:
        found = session.get(StoreUse, uri)
        if found is not None:
            session.delete(found)
        return found is not None
