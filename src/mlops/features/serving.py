"""Online feature lookup from the Feast online store.

A lookup names a feature service or features; which 'view:feature' references that means,
and which views are offline only, depends on the registry alone. It is worked out once per
state of Feast's registry (`ServingCatalog`) instead of on every request, and from the
same registry state Feast serves the lookup with, so the two never disagree:

- Feast's cache of the registry is the key. Asking it for the entities
  (`allow_cache=True`) runs Feast's own freshness check: the file registry (local
  profile) is re-read when its file changed, so an `apply` or rollback of another process
  is seen by the next lookup; the SQL registry (production) is re-read when its cache is
  older than `cache_ttl_seconds` (see `store.py`), as Feast does for its own lookups.
- The catalog is rebuilt only when that cached registry is another object or got
  another version id (an `apply` in this process replaces it). Otherwise Feast's lookup
  also finds its views already built from that registry, instead of rebuilding them
  from protobuf as it did after each uncached `get_feature_service`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.datasets import (
    DEFAULT_SERVICE,
    DatasetRequest,
    match_feature_names,
    service_refs,
)
from mlops.features.store import open_store, store_is_open
from mlops.settings import Settings
from mlops.stores import FEATURE_REGISTRY, ONLINE_STORE, outages_as_store_errors

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

MAX_TICKERS = 1000
INLINE_MAX_TICKERS = 100
"""Lookups of up to this many tickers on local files are answered on the API's event loop
(`answers_inline`); larger ones take a worker thread rather than hold the loop."""


@dataclass(frozen=True)
class ServingCatalog:
    """What online lookups need from one state of the registry."""

    registry: RegistryProto
    """Feast's cached registry it was read from; holding it keeps the object's id unique."""
    version_id: str
    services: dict[str, list[str]]
    """Feature service -> the 'view:feature' references it serves."""
    features: dict[str, list[str]]
    """Feature view -> its feature names."""
    offline_only: frozenset[str]

    def refs(self, features: list[str], feature_service: str | None) -> list[str]:
        """References for a lookup: the named features, else the (default) service."""
        if features:
            refs = match_feature_names(features, self.features)
        else:
            name = feature_service or DEFAULT_SERVICE
            if name not in self.services:
                raise NotFoundError(f"Unknown feature service '{name}'.")
            refs = self.services[name]
        blocked = [ref for ref in refs if ref.split(":")[0] in self.offline_only]
        if blocked:
            raise NotFoundError(f"Not served online: {', '.join(blocked)}.")
        return refs


_catalogs: dict[tuple[str, str], ServingCatalog] = {}
_catalogs_lock = threading.Lock()


def serving_catalog(settings: Settings) -> ServingCatalog:
    """The catalog of the registry state Feast's next lookup will use, rebuilt only when
    that state changed."""
    store = open_store(settings)
    key = (str(settings.home), settings.feast_project)
    with outages_as_store_errors(FEATURE_REGISTRY, settings.feast_registry_url):
        store.registry.list_entities(store.project, allow_cache=True)  # Feast's freshness check
        # Kept by the file registry (`Registry`) and the SQL one (`CachingRegistry`) alike.
        registry: RegistryProto = store.registry.cached_registry_proto  # type: ignore[attr-defined]
        cached = _catalogs.get(key)
        if cached is not None and _same_state(cached, registry):
            return cached
        with _catalogs_lock:  # concurrent first lookups build it once
            cached = _catalogs.get(key)
            if cached is None or not _same_state(cached, registry):
                cached = _build_catalog(store, registry)
                _catalogs[key] = cached
        return cached


def _same_state(catalog: ServingCatalog, registry: RegistryProto) -> bool:
    return catalog.registry is registry and catalog.version_id == registry.version_id


def _build_catalog(store: FeatureStore, registry: RegistryProto) -> ServingCatalog:
    """Read services and views from Feast's cache. Should that be refreshed meanwhile,
    the catalog is newer than its key and is simply rebuilt at the next lookup."""
    services = store.registry.list_feature_services(store.project, allow_cache=True)
    views = store.registry.list_feature_views(store.project, allow_cache=True)
    return ServingCatalog(
        registry=registry,
        version_id=registry.version_id,
        services={service.name: service_refs(service) for service in services},
        features={view.name: [f.name for f in view.features] for view in views},
        offline_only=frozenset(view.name for view in views if not view.online),
    )


def answers_inline(settings: Settings, n_tickers: int) -> bool:
    """Whether the API answers a lookup of `n_tickers` on its event loop.

    In the local profile the online store, the registry and the platform's database are
    files of the state folder: a small lookup never waits on the network and takes well
    under a millisecond, less than handing it to a worker thread and back (FastAPI's
    thread pool: one hand-off for the endpoint, another for its response). Lookups that
    may wait on Redis or PostgreSQL (production profile) are left to a worker thread, so
    a slow or unreachable store never holds the event loop; so is the first lookup of the
    process, which opens the store (imports Feast, reads the registry)."""
    database = settings.metadata_db_url or "sqlite"  # `metadata_url` without formatting a path
    local = not settings.shared and database.startswith("sqlite")
    return local and n_tickers <= INLINE_MAX_TICKERS and store_is_open(settings)


def online_features(
    settings: Settings, tickers: list[str], features: list[str], feature_service: str | None
) -> dict[str, list[Any]]:
    """Latest serving values per ticker, column-wise ({'ticker': [...], 'ret_1d': [...]})."""
    if not tickers:
        raise InvalidInputError("Give at least one ticker.")
    if len(tickers) > MAX_TICKERS:
        raise InvalidInputError(f"At most {MAX_TICKERS} tickers per lookup.")
    request = DatasetRequest(name="online", features=features, feature_service=feature_service)
    refs = serving_catalog(settings).refs(request.features, request.feature_service)
    store = open_store(settings)
    with outages_as_store_errors(ONLINE_STORE):
        response = store.get_online_features(
            features=refs, entity_rows=[{"ticker": t} for t in tickers]
        )
    return dict(response.to_dict())
