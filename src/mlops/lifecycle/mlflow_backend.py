"""The platform's MLflow backend: one tracking and registry URI from the settings, a client,
experiment creation with artifacts under the state folder, and a SQLAlchemy engine on the
tracking database for the summary queries the client API cannot answer in one call.

MLflow is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlops.errors import ConfigError, ConflictError, InvalidInputError
from mlops.settings import Settings

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


def _allow_pickle(settings: Settings) -> None:
    if settings.mlflow_allow_pickle:
        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"


def configure_mlflow(settings: Settings) -> None:
    """Point MLflow (tracking and registry) at this platform's backend.

    The models the platform loads are the ones it trained and registered itself (the
    sklearn flavour stores them with skops); MLflow 3.17 refuses to load them unless
    pickle deserialization is allowed, which the settings decide.
    """
    import_mlflow()
    import mlflow

    settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    _allow_pickle(settings)


def client(settings: Settings) -> MlflowClient:
    """An MlflowClient on the platform's backend (the schema is created on first use)."""
    _allow_pickle(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    import_mlflow()
    return _client(settings.tracking_uri)


@lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def forget_clients() -> None:
    """Drop the cached clients and engines (tests that drop their databases call this)."""
    _client.cache_clear()
    _engine.cache_clear()


def tracking_engine(settings: Settings) -> Engine:
    """A SQLAlchemy engine on MLflow's tracking database (SQLite or PostgreSQL)."""
    uri = settings.tracking_uri
    if not uri.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(
            f"The tracking URI {uri} is not a database: the platform reads experiment "
            "summaries from MLflow's database, so set MLOPS_MLFLOW_TRACKING_URI to its URL.",
            {"tracking_uri": uri},
        )
    client(settings)  # creates or migrates MLflow's schema before the first query
    return _engine(uri)


@lru_cache(maxsize=8)
def _engine(uri: str) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(uri, pool_pre_ping=True)


def safe_dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def create_experiment(
    settings: Settings, name: str, description: str = "", tags: dict[str, str] | None = None
) -> str:
    """Create an experiment whose artifacts live under MLOPS_HOME/mlartifacts; 409 if taken."""
    from mlflow.exceptions import MlflowException

    location = (settings.home / ARTIFACTS_DIR / safe_dir_name(name)).resolve()
    all_tags: dict[str, Any] = dict(tags or {})
    if description:
        all_tags[DESCRIPTION_TAG] = description
    mlflow_client = client(settings)
    try:
        experiment_id = mlflow_client.create_experiment(
            name, artifact_location=location.as_uri(), tags=all_tags or None
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
