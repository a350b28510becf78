"""Access to Feast: `feature_store.yaml` generated from the active profile, the
declarations of `feature_repo/` loaded with their sources resolved, and one
`FeatureStore` per state folder."""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlalchemy.engine import Engine

from mlops.errors import ConfigError
from mlops.settings import Settings
from mlops.stores import CONNECT_TIMEOUT_S, FEATURE_REGISTRY, guard_engine, outages_as_store_errors

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, FileSource

FEATURE_REPO_MODULE = "features.py"
OFFLINE_STORE_TYPE = "mlops.features.offline_store.SnapshotOfflineStore"
"""Feast's DuckDB offline store with ASOF JOINs for datasets (`offline_store.py`); named
by its module path so that the `feast` command line imports it too."""
RAY_OFFLINE_STORE_TYPE = "mlops.features.offline_store_ray.SnapshotRayOfflineStore"
"""Feast's Ray offline store over the same snapshots (`dataset_engine: ray`)."""
ENGINES = ("write_engine", "read_engine")
"""The SQLAlchemy engines of Feast's SQL registry (production profile)."""

_stores: dict[tuple[str, str], FeatureStore] = {}
_stores_lock = threading.Lock()


@dataclass
class RepoDefinitions:
    """The objects declared in `feature_repo/`, sources pointing at the offline store."""

    entities: list[Entity] = field(default_factory=list)
    sources: list[FileSource] = field(default_factory=list)
    views: list[FeatureView] = field(default_factory=list)
    services: list[FeatureService] = field(default_factory=list)

    def view(self, name: str) -> FeatureView:
        return next(view for view in self.views if view.name == name)


def feature_store_config(settings: Settings, secrets_as_references: bool = False) -> dict[str, Any]:
    """The Feast configuration of the active profile.

    With `secrets_as_references`, the connection strings (which hold passwords) are
    `${MLOPS_...}` references that Feast expands from the environment when it reads the
    file; the platform itself hands Feast the resolved configuration in memory."""
    registry_url, redis_url = settings.feast_registry_url, settings.redis_url
    if secrets_as_references:
        registry_url, redis_url = "${MLOPS_FEAST_REGISTRY_URL}", "${MLOPS_REDIS_URL}"
    config: dict[str, Any] = {
        "project": settings.feast_project,
        "provider": "local",
        "offline_store": {"type": OFFLINE_STORE_TYPE},
        "entity_key_serialization_version": 3,
    }
    if settings.dataset_engine == "ray":
        config |= _ray_engine_config(settings)
    if settings.shared:
        config["registry"] = {
            "registry_type": "sql",
            "path": registry_url,
            "cache_ttl_seconds": 5,
            "sqlalchemy_config_kwargs": _registry_engine_options(settings.feast_registry_url),
        }
        config["online_store"] = {
            "type": "redis",
            "connection_string": _redis_connection_string(redis_url or ""),
        }
    else:
        config["registry"] = {
            "registry_type": "file",
            "path": str(settings.feast_dir / "registry.db"),
            "cache_ttl_seconds": 5,
        }
        config["online_store"] = {"type": "sqlite", "path": str(settings.feast_dir / "online.db")}
    return config


def _ray_engine_config(settings: Settings) -> dict[str, Any]:
    """Feast's Ray offline store (on the platform's snapshots) and Ray compute engine."""
    from mlops.ray_cluster import head_address

    ray = {"ray_address": head_address(settings), "enable_ray_logging": False}
    return {
        "offline_store": {
            "type": RAY_OFFLINE_STORE_TYPE,
            "storage_path": str(settings.home / "ray_storage"),
            **ray,
        },
        "batch_engine": {"type": "ray.engine", **ray},
    }


def _registry_engine_options(url: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"pool_pre_ping": True}
    if (url or "").startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return options


def _redis_connection_string(url: str) -> str:
    """Feast hands the `key=value` options of its connection string (JSON values) to
    redis-py: connect within seconds, and do not retry. redis-py's default three retries
    with backoff hold each lookup 7-11 s when Redis is down; the caller gets a 503 and
    may retry itself."""
    given = {part.split("=", 1)[0].strip() for part in url.split(",") if "=" in part}
    options = {"socket_connect_timeout": str(CONNECT_TIMEOUT_S), "retry": "null"}
    return ",".join([url, *(f"{k}={v}" for k, v in options.items() if k not in given)])


def write_feature_store_yaml(settings: Settings) -> Path:
    """Write `feature_store.yaml` into the Feast folder, for the `feast` command line.

    It names no secret (see `feature_store_config`) and is readable by its owner only."""
    settings.ensure_dirs()
    path = settings.feast_dir / "feature_store.yaml"
    text = yaml.safe_dump(
        feature_store_config(settings, secrets_as_references=True), sort_keys=False
    )
    if not path.exists() or path.read_text() != text:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    path.chmod(0o600)
    return path


def open_store(settings: Settings) -> FeatureStore:
    """The `FeatureStore` of this state folder and project (created once per process)."""
    key = (str(settings.home), settings.feast_project)
    with _stores_lock:
        if key not in _stores:
            from feast import FeatureStore
            from feast.repo_config import RepoConfig

            write_feature_store_yaml(settings)
            config = RepoConfig(**feature_store_config(settings))
            config.repo_path = settings.feast_dir
            with outages_as_store_errors(FEATURE_REGISTRY, settings.feast_registry_url):
                store = FeatureStore(repo_path=str(settings.feast_dir), config=config)
                for name in ENGINES:  # the registry is opened here, on first access
                    if isinstance(engine := getattr(store.registry, name, None), Engine):
                        guard_engine(engine, FEATURE_REGISTRY)
                _repoint_sources(store, settings)
            _stores[key] = store
        return _stores[key]


def store_is_open(settings: Settings) -> bool:
    """Whether `open_store` has made this state folder's store in this process already."""
    return (str(settings.home), settings.feast_project) in _stores


def _repoint_sources(store: FeatureStore, settings: Settings) -> None:
    """Point the registry's file sources (and the copies its views hold) at the offline
    datasets of this state folder: a store of the previous release (single files) or a
    state folder moved elsewhere gets its paths fixed once, on first open."""
    from feast import FileSource

    from mlops.features.offline import OFFLINE_FILES, dataset_name, source_path

    def stale(source: object) -> bool:
        if not isinstance(source, FileSource) or dataset_name(source.path) not in OFFLINE_FILES:
            return False
        wanted = source_path(settings, dataset_name(source.path))
        if source.path == wanted:
            return False
        source.file_options.uri = wanted
        return True

    sources = [s for s in store.list_data_sources() if stale(s)]
    views = [v for v in store.list_feature_views() if stale(v.batch_source)]
    if sources or views:
        store.apply([*sources, *views])


def forget_store(settings: Settings) -> None:
    """Drop the cached store (tests and shutdown)."""
    with _stores_lock:
        _stores.pop((str(settings.home), settings.feast_project), None)


def load_repo_definitions(settings: Settings) -> RepoDefinitions:
    """Import `feature_repo/features.py` afresh and resolve its sources' paths."""
    from feast import Entity, FeatureService, FeatureView, FileSource

    path = settings.feature_repo_dir / FEATURE_REPO_MODULE
    if not path.exists():
        raise ConfigError(f"Feature repository not found: {path}")
    spec = importlib.util.spec_from_file_location("mlops_feature_repo", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Cannot import the feature repository at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    repo = RepoDefinitions()
    for value in vars(module).values():
        if isinstance(value, Entity):
            repo.entities.append(value)
        elif isinstance(value, FileSource):
            _resolve_source(value, settings)
            repo.sources.append(value)
        elif isinstance(value, FeatureView):
            repo.views.append(value)
        elif isinstance(value, FeatureService):
            repo.services.append(value)
    for view in repo.views:
        source = view.batch_source
        if isinstance(source, FileSource):
            _resolve_source(source, settings)
    return repo


def _resolve_source(source: FileSource, settings: Settings) -> None:
    """Point a declared file source (a dataset name such as `daily_features.parquet`) at
    that dataset's partitions in the offline store of the active profile."""
    from mlops.features.offline import source_path

    if not Path(source.path).is_absolute():
        source.file_options.uri = source_path(settings, source.path)
