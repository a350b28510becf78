"""Feast's Ray offline store over the platform's offline snapshots (`dataset_engine: ray`).

Feast's `RayOfflineStore` reads a `FileSource` with Ray Data, which takes files and
folders but not globs. The platform's sources name every partition of the current snapshot
as a glob (`current/<dataset>/month=*/part.parquet`, which DuckDB expands), so this store
hands Ray the dataset's folder instead, in the snapshot the `current` link names when the
request starts: every view of one request reads the same state, as with the DuckDB store
(`offline_store.pinned_path`). Everything else is Feast's store.

Configured in `feature_store.yaml` (`store.RAY_OFFLINE_STORE_TYPE`) with Feast's Ray
compute engine (`batch_engine: ray.engine`), both on `settings.ray_address`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from feast import FeatureView, FileSource
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.ray_offline_store.ray import (
    RayOfflineStore,
    RayOfflineStoreConfig,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from pydantic import StrictStr

from mlops.features.offline import PARTITION_KEY
from mlops.features.offline_store import pinned_path
from mlops.features.store import RAY_OFFLINE_STORE_TYPE
from mlops.ray_cluster import ensure_reachable


class SnapshotRayOfflineStoreConfig(RayOfflineStoreConfig):
    """Feast's Ray offline store settings; only the `type` differs."""

    type: StrictStr = RAY_OFFLINE_STORE_TYPE  # type: ignore[assignment]


def ray_readable(path: str, snapshots: dict[Path, Path]) -> str:
    """The folder Ray Data reads for a platform source path (pinned to one snapshot); any
    other path as it is."""
    pinned = pinned_path(path, snapshots)
    marker = f"/{PARTITION_KEY}=*/"
    return pinned.split(marker, 1)[0] if marker in pinned else pinned


def _readable_source(source: DataSource, snapshots: dict[Path, Path]) -> DataSource:
    if not isinstance(source, FileSource):
        return source
    readable = copy.deepcopy(source)
    readable.file_options.uri = ray_readable(source.path, snapshots)
    return readable


def _readable_view(view: FeatureView, snapshots: dict[Path, Path]) -> FeatureView:
    readable = copy.copy(view)
    if view.batch_source is not None:
        readable.batch_source = _readable_source(view.batch_source, snapshots)
    return readable


class SnapshotRayOfflineStore(RayOfflineStore):
    """Feast's Ray offline store reading the snapshot current when a request starts."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        ensure_reachable(config.offline_store.ray_address)
        snapshots: dict[Path, Path] = {}
        views = [_readable_view(view, snapshots) for view in feature_views]
        return RayOfflineStore.get_historical_features(
            config,
            views,
            feature_refs,
            entity_df,
            registry,
            project,
            full_feature_names,
            **kwargs,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return _pulled(
            RayOfflineStore.pull_latest_from_table_or_query,
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return _pulled(
            RayOfflineStore.pull_all_from_table_or_query,
            config,
            data_source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            created_timestamp_column,
            start_date,
            end_date,
        )


def _pulled(
    pull: Callable[..., RetrievalJob], config: RepoConfig, source: DataSource, *args: Any
) -> RetrievalJob:
    """Feast's `pull` (latest or all rows of a source) on the readable folder of `source`."""
    ensure_reachable(config.offline_store.ray_address)
    return pull(config, _readable_source(source, {}), *args)
