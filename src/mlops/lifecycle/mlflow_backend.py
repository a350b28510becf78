"""The platform's MLflow backend: one tracking and registry URI from the settings, a client,
experiment creation with artifacts under the state folder, and a SQLAlchemy engine on the
tracking database for the summary queries the client API cannot answer in one call.

MLflow is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import functools
import os
import threading
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mlops.db import SCHEMA_LOCK, forget_store_use, record_store_use, store_use
from mlops.errors import ConfigError, ConflictError, InvalidInputError, StoreUnavailableError
from mlops.settings import Settings
from mlops.stores import (
    MLFLOW_STORE,
    describe_url,
    guard_engine,
    outages_as_store_errors,
    sqlite_path,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from sqlalchemy.engine import Engine

ARTIFACTS_DIR = "mlartifacts"
DESCRIPTION_TAG = "mlflow.note.content"
"""The tag the MLflow UI shows as an experiment's or run's description."""


_import_lock = threading.Lock()


def import_mlflow() -> None:
    """Import MLflow under a lock. Two threads importing it at once (the API's warm-up and a
    request) can meet its circular imports half-initialized and fail with ImportError."""
    with _import_lock:
        import mlflow.pyfunc
        import mlflow.store.model_registry.dbmodels.models
        import mlflow.store.tracking.dbmodels.models
        import mlflow.tracking  # noqa: F401


def ms_to_datetime(value: int | None) -> datetime | None:
    """MLflow's epoch milliseconds as an aware datetime."""
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


def escape_like(text: str) -> str:
    """`text` for a SQL LIKE pattern with `\\` as the escape character."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow (tracking and registry) at this platform's backend.

    The models the platform loads are the ones it trained and registered itself (the
    sklearn flavour stores them with skops); MLflow 3.17 refuses to load them unless
    pickle deserialization is allowed, which the settings decide. The store is opened
    (and checked) first, so fluent calls meet the same outage errors as the client.
    """
    import mlflow

    client(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the platform's backend (the schema is created on first use).

    Its calls raise StoreUnavailableError when the tracking store is down; a database the
    platform used before and is now missing or empty is refused, not recreated.
    """
    os.environ.update(settings.mlflow_environment())
    settings.home.mkdir(parents=True, exist_ok=True)
    import_mlflow()
    _refuse_deleted_file(settings.tracking_uri)
    with SCHEMA_LOCK:  # MLflow creates or migrates a new store's tables with Alembic
        return _client(settings.tracking_uri, settings.metadata_url)


def is_database(uri: str) -> bool:
    return uri.startswith(("sqlite:", "postgresql", "mysql"))


def public_uri(uri: str) -> str:
    """The tracking URI without its password (how the platform records the store)."""
    return make_url(uri).render_as_string(hide_password=True) if is_database(uri) else uri


FORGET_COMMAND = "mlops stores forget mlflow"
_opened_files: set[Path] = set()
"""SQLite tracking databases this process opened: one deleted under it is refused."""


def _refuse_deleted_file(uri: str) -> None:
    path = sqlite_path(uri) if is_database(uri) else None
    if path is not None and path in _opened_files and not path.exists():
        raise StoreUnavailableError(
            MLFLOW_STORE,
            f"{path} was deleted while the platform was using it",
            f"Restore it from a backup, or run `{FORGET_COMMAND}` to start a new empty "
            "store; then restart the platform.",
        )


def tracking_store_experiments(uri: str, metadata_url: str) -> int | None:
    """The number of experiments in MLflow's database; None when it has no MLflow tables
    yet (a new store). Raises StoreUnavailableError when it is unreachable, locked or
    corrupt, or missing or empty although the platform used it before."""
    path = sqlite_path(uri)
    count: int | None = None
    if path is None or path.exists():  # connecting would create a missing SQLite file
        engine = guard_engine(create_engine(uri, poolclass=NullPool), MLFLOW_STORE)
        try:
            with engine.connect() as conn:
                if inspect(conn).has_table("experiments"):
                    count = conn.execute(text("SELECT count(*) FROM experiments")).scalar_one()
        finally:
            engine.dispose()
    if count is None and (used := store_use(metadata_url, public_uri(uri))) is not None:
        raise StoreUnavailableError(
            MLFLOW_STORE,
            f"{describe_url(uri)} is missing or empty, but this platform used it until "
            f"{used.last_used_at:%Y-%m-%d %H:%M} UTC (experiments: {used.experiments})",
            f"Restore it from a backup, or run `{FORGET_COMMAND}` to start a new empty store.",
        )
    return count


def forget_tracking_store(settings: Settings) -> bool:
    """Accept a new empty tracking store in place of the one the platform used; False
    when there was no record of one."""
    return forget_store_use(settings.metadata_url, public_uri(settings.tracking_uri))


@lru_cache(maxsize=8)
def _client(uri: str, metadata_url: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    if is_database(uri):
        tracking_store_experiments(uri, metadata_url)
    mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if is_database(uri):
        with outages_as_store_errors(MLFLOW_STORE, uri):
            _open_database_stores(mlflow_client, uri, metadata_url)
    return cast("MlflowClient", _OutagesAsStoreErrors(mlflow_client))


def _open_database_stores(mlflow_client: Any, uri: str, metadata_url: str) -> None:
    """MLflow opens (and creates) its stores lazily, each with an engine of its own: open
    them now to give those engines the platform's timeouts and error mapping, and record
    that the platform uses this store."""
    stores = (mlflow_client._tracking_client.store, mlflow_client._get_registry_client().store)
    for store in stores:
        guard_engine(store.engine, MLFLOW_STORE)
    with stores[0].engine.connect() as conn:
        experiments = conn.execute(text("SELECT count(*) FROM experiments")).scalar_one()
    record_store_use(metadata_url, MLFLOW_STORE, public_uri(uri), experiments)
    if (path := sqlite_path(uri)) is not None:
        _opened_files.add(path)


class _OutagesAsStoreErrors:
    """An MlflowClient whose calls raise StoreUnavailableError for a store outage.

    MLflow wraps every error of its stores in MlflowException, and the platform catches
    MlflowException to mean "no such run/alias"; an outage must not read as that.
    """

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._wrapped, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with outages_as_store_errors(MLFLOW_STORE):
                return value(*args, **kwargs)

        return call


def model_version_location(settings: Settings, name: str, version: str) -> str:
    """Where a registered version's files are, as a URI that needs no process-wide MLflow
    setting: a tracking server's `mlflow-artifacts:` location becomes the server's HTTP
    address of it (so a worker with several settings loads from the right server)."""
    uri = str(client(settings).get_model_version_download_uri(name, version))
    if uri.startswith("mlflow-artifacts:") and not is_database(settings.tracking_uri):
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        return str(MlflowArtifactsRepository.resolve_uri(uri, settings.tracking_uri))
    return uri


def forget_clients() -> None:
    """Drop the cached clients and engines (tests that drop their databases call this)."""
    _client.cache_clear()
    _engine.cache_clear()
    _opened_files.clear()


def tracking_engine(settings: Settings) -> Engine:
    """A SQLAlchemy engine on MLflow's tracking database (SQLite or PostgreSQL): the
    tracking URI, or the database behind the tracking server (`mlflow_database_url`)."""
    uri = settings.tracking_database_url
    if not is_database(uri):
        raise ConfigError(
            f"The tracking URI {uri} is not a database: the platform reads experiment "
            "summaries from MLflow's database, so set MLOPS_MLFLOW_DATABASE_URL to the "
            "database of the tracking server.",
            {"tracking_uri": uri},
        )
    client(settings)  # creates or migrates MLflow's schema before the first query
    return _engine(uri)


@lru_cache(maxsize=8)
def _engine(uri: str) -> Engine:
    return guard_engine(create_engine(uri, pool_pre_ping=True), MLFLOW_STORE)


def safe_dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def create_experiment(
    settings: Settings, name: str, description: str = "", tags: dict[str, str] | None = None
) -> str:
    """Create an experiment whose artifacts live under MLOPS_HOME/mlartifacts (through a
    tracking server: where the server keeps them); 409 if taken."""
    from mlflow.exceptions import MlflowException

    location = (settings.home / ARTIFACTS_DIR / safe_dir_name(name)).resolve()
    served = not is_database(settings.tracking_uri)  # the server proxies the artifacts
    all_tags: dict[str, Any] = dict(tags or {})
    if description:
        all_tags[DESCRIPTION_TAG] = description
    mlflow_client = client(settings)
    try:
        experiment_id = mlflow_client.create_experiment(
            name, artifact_location=None if served else location.as_uri(), tags=all_tags or None
        )
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            existing = mlflow_client.get_experiment_by_name(name)
            where = (
                f" (id {existing.experiment_id}, {existing.lifecycle_stage})" if existing else ""
            )
            raise ConflictError(
                f"An experiment named '{name}' already exists{where}.", {"name": name}
            ) from exc
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise InvalidInputError(f"Invalid experiment: {exc.message}", {"name": name}) from exc
        raise
    if not served:
        location.mkdir(parents=True, exist_ok=True)
    return str(experiment_id)


def experiment_id_for(settings: Settings, name: str) -> str:
    """The id of the named experiment, created (with platform artifacts) when missing."""
    experiment = client(settings).get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return create_experiment(settings, name)
    except ConflictError:  # created by another process in between
        found = client(settings).get_experiment_by_name(name)
        assert found is not None
        return str(found.experiment_id)
