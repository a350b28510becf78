"""The platform's Feast offline store: point-in-time joins as DuckDB ASOF JOINs over one
snapshot of the offline store.

Feast's DuckDB store (ibis) joins each feature view with an inequality join on time and
then keeps the newest row per entity row with a window function: every feature row older
than an entity row is a candidate first. An ASOF JOIN finds that newest row directly, so a
1M-row dataset over 2M feature rows takes seconds instead of tens of seconds. The rows and
values are Feast's (a test compares the two stores on the same request):

- the feature row is the newest one with `timestamp <= entity time`; ties on the timestamp
  go to the newest `created_timestamp_column`, as Feast breaks them;
- with a ttl, that row counts only while `timestamp + ttl >= entity time` (else nulls);
- entity rows without a match get nulls, duplicate entity rows are kept;
- the entity columns come first, then the features as `feature`, or `view__feature`
  with `full_feature_names`.

Configured in `feature_store.yaml` (`store.OFFLINE_STORE_TYPE`), so Feast's SDK and CLI use
it. It is Feast's DuckDB store (it derives from it) in everything else:
materialization reads, writes, logging, monitoring, and the joins it does not take over
(on-demand views, field mappings, `filter_by_created_timestamp`, non-parquet or remote
sources). The entity rows may also be a DuckDB SQL query, which is how datasets are
joined without ever holding them in Python (`AsofRetrievalJob.write_parquet`).

A source path under the offline store's `current` link is read from the snapshot that
link names, resolved once per request: every view of one join sees the same state even if
an ingest commits a new snapshot meanwhile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from feast import FeatureView, FileSource
from feast.data_format import ParquetFormat
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

from mlops.errors import ConfigError
from mlops.features.offline import CURRENT, utc_connection
from mlops.features.store import OFFLINE_STORE_TYPE

ENTITY_VIEW = "entity_df"
"""The name an entity DataFrame is registered under in the join's DuckDB connection."""
_MATCH_TIME = "__asof_time"


class SnapshotOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Feast's DuckDB settings (staging location); only the `type` differs."""

    type: StrictStr = OFFLINE_STORE_TYPE


@dataclass
class _SourceJoin:
    """One ASOF JOIN: the rows of one source, shared by every view that reads them the same
    way (the match does not depend on the view; each view's ttl is applied to it)."""

    alias: str
    path: str
    timestamp_field: str
    created_field: str | None
    join_keys: tuple[tuple[str, str], ...]
    """(source column, entity column) pairs."""
    columns: list[str] = field(default_factory=list)

    def sql(self, entity_time: str) -> str:
        keys = [_name(source) for source, _ in self.join_keys]
        time = _name(self.timestamp_field)
        extra = [self.created_field] if self.created_field else []
        wanted = ", ".join(dict.fromkeys([*keys, *map(_name, [*self.columns, *extra])]))
        rows = (
            f"SELECT {wanted}, CAST({time} AS TIMESTAMPTZ) AS {_MATCH_TIME} "
            f"FROM read_parquet({_literal(self.path)}, hive_partitioning = false) "
            f"WHERE {time} IS NOT NULL"
        )
        if self.created_field:  # of rows with equal keys and timestamp, Feast takes the newest
            rows += (
                f" QUALIFY row_number() OVER (PARTITION BY {', '.join([*keys, time])} "
                f"ORDER BY {_name(self.created_field)} DESC NULLS LAST) = 1"
            )
        on = [f"e.{_name(e)} = {self.alias}.{_name(s)}" for s, e in self.join_keys]
        on.append(f"e.{_name(entity_time)} >= {self.alias}.{_MATCH_TIME}")
        return f"ASOF LEFT JOIN ({rows}) AS {self.alias} ON {' AND '.join(on)}"


class SnapshotOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB offline store with point-in-time joins done by ASOF JOINs."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        joinable = asof_joinable(feature_views, feature_refs, entity_df)
        if joinable and not filter_by_created_timestamp:
            return AsofRetrievalJob(entity_df, feature_views, feature_refs, full_feature_names)
        if isinstance(entity_df, str):
            raise ConfigError(
                "Entity rows given as a query need the ASOF JOIN, which does not cover this "
                "request (on-demand views, field mappings, filter_by_created_timestamp or "
                "sources other than local parquet): pass the entity rows as a DataFrame."
            )
        return DuckDBOfflineStore.get_historical_features(
            config,
            feature_views,
            feature_refs,
            entity_df,
            registry,
            project,
            full_feature_names,
            filter_by_created_timestamp,
        )


def asof_joinable(
    feature_views: list[FeatureView], feature_refs: list[str], entity_df: object
) -> bool:
    """Whether the ASOF JOIN covers this request; what it does not is left to Feast."""
    if not isinstance(entity_df, pd.DataFrame | str):
        return False
    prefixes = {view.projection.name_to_use() for view in feature_views}
    if any(ref.split(":")[0] not in prefixes for ref in feature_refs):
        return False  # an on-demand view's feature
    return all(_plain_parquet(view.batch_source) for view in feature_views)


def _plain_parquet(source: object) -> bool:
    return (
        isinstance(source, FileSource)
        and isinstance(source.file_format, ParquetFormat | None)
        and "://" not in source.path
        and not source.field_mapping
    )


class AsofRetrievalJob(RetrievalJob):
    """The ASOF JOIN of one request, run when its result is asked for."""

    def __init__(
        self,
        entity_df: pd.DataFrame | str,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        full_feature_names: bool,
    ) -> None:
        super().__init__()
        self._entity_df = entity_df
        self._feature_refs = feature_refs
        self._full_feature_names = full_feature_names
        columns = self._entity_columns()
        self._entity_time = infer_event_timestamp_from_entity_df(columns)
        if isinstance(entity_df, pd.DataFrame):
            self._entity_df = _utc_times(entity_df, self._entity_time)
        self._keys = [c for c in columns if c != self._entity_time]
        self.query = _join_query(
            self._entity_sql(), self._entity_time, feature_views, feature_refs, full_feature_names
        )

    def _entity_columns(self) -> dict[str, Any]:
        if isinstance(self._entity_df, pd.DataFrame):
            return dict(zip(self._entity_df.columns, self._entity_df.dtypes, strict=True))
        with self._connect() as connection:
            described = connection.execute(f"DESCRIBE ({self._entity_df})").fetchall()
        return {name: _pandas_dtype(kind) for name, kind, *_ in described}

    def _entity_sql(self) -> str:
        return (
            self._entity_df if isinstance(self._entity_df, str) else f"SELECT * FROM {ENTITY_VIEW}"
        )

    def _connect(self) -> duckdb.DuckDBPyConnection:
        connection = utc_connection()
        if isinstance(self._entity_df, pd.DataFrame):
            connection.register(ENTITY_VIEW, self._entity_df)
        return connection

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        with self._connect() as connection:
            return connection.execute(self.query).to_arrow_table()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def write_parquet(self, path: Path, order_by: list[str]) -> int:
        """Write the result, sorted by `order_by`, to a parquet file; the number of rows.

        DuckDB joins and writes in its own memory (spilling to disk if it must), so the
        Python process never holds the rows."""
        order = ", ".join(_name(column) for column in order_by)
        copy = f"COPY ({self.query} ORDER BY {order}) TO {_literal(str(path))} (FORMAT parquet)"
        with self._connect() as connection:
            written = connection.execute(copy).fetchone()
        return int(written[0]) if written else 0

    def to_sql(self) -> str:
        return self.query

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []

    @property
    def metadata(self) -> RetrievalMetadata:
        time = _name(self._entity_time)
        with self._connect() as connection:
            first, last = connection.execute(
                f"SELECT min({time}), max({time}) FROM ({self._entity_sql()})"
            ).fetchone() or (None, None)
        return RetrievalMetadata(self._feature_refs, self._keys, first, last)

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Save the result as Feast's DuckDB store saves one (a Feast saved dataset)."""
        import ibis
        from feast.infra.offline_stores.duckdb import _write_data_source

        table = ibis.memtable(self.to_arrow())
        _write_data_source(table, storage.to_data_source(), "", "overwrite", allow_overwrite)


def _join_query(
    entities: str,
    entity_time: str,
    feature_views: list[FeatureView],
    feature_refs: list[str],
    full_feature_names: bool,
) -> str:
    """`SELECT entity columns, features FROM entities ASOF LEFT JOIN source ...`."""
    snapshots: dict[Path, Path] = {}
    joins: dict[tuple[object, ...], _SourceJoin] = {}
    selected = []
    for view in feature_views:
        source = view.batch_source
        assert isinstance(source, FileSource)  # checked by asof_joinable
        keys = view.projection.join_key_map or {c.name: c.name for c in view.entity_columns}
        key = (
            source.path,
            source.timestamp_field,
            source.created_timestamp_column,
            tuple(keys.items()),
        )
        if key not in joins:
            joins[key] = _SourceJoin(
                alias=f"j{len(joins)}",
                path=pinned_path(source.path, snapshots),
                timestamp_field=source.timestamp_field,
                created_field=source.created_timestamp_column or None,
                join_keys=tuple(keys.items()),
            )
        join = joins[key]
        prefix = view.projection.name_to_use()
        base = view.projection.name_alias or view.name
        for ref in feature_refs:
            view_name, _, feature = ref.partition(":")
            if view_name != prefix:
                continue
            join.columns.append(feature)
            output = f"{base}__{feature}" if full_feature_names else feature
            selected.append(
                f"{_ttl_checked(join, feature, entity_time, view.ttl)} AS {_name(output)}"
            )
    time = _name(entity_time)
    entity_rows = (
        f"(SELECT * REPLACE (CAST({time} AS TIMESTAMPTZ) AS {time}) FROM ({entities})) AS e"
    )
    return (
        f"SELECT e.*{''.join(', ' + column for column in selected)} FROM {entity_rows} "
        + " ".join(join.sql(entity_time) for join in joins.values())
    )


def _ttl_checked(join: _SourceJoin, feature: str, entity_time: str, ttl: timedelta | None) -> str:
    value = f"{join.alias}.{_name(feature)}"
    if not ttl:  # Feast: no ttl (or 0) means features never expire
        return value
    micros = ttl // timedelta(microseconds=1)
    expires = f"{join.alias}.{_MATCH_TIME} + to_microseconds({micros})"
    return f"CASE WHEN {expires} >= e.{_name(entity_time)} THEN {value} END"


def pinned_path(path: str, snapshots: dict[Path, Path]) -> str:
    """`path` with the offline store's `current` link replaced by the snapshot it names;
    `snapshots` remembers each link read, so one request reads one snapshot."""
    target = Path(path)
    for parent in target.parents:
        if parent.name == CURRENT and parent.is_symlink():
            if parent not in snapshots:
                snapshots[parent] = parent.parent / os.readlink(parent)
            return str(snapshots[parent] / target.relative_to(parent))
    return path


def _utc_times(entity_df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Entity times given as text become UTC datetimes, as Feast's DuckDB store takes them."""
    values = entity_df[column].infer_objects()
    if pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values):
        return entity_df.assign(**{column: pd.to_datetime(values, utc=True)})
    return entity_df


def _pandas_dtype(duckdb_type: str) -> Any:
    return "datetime64[ns, UTC]" if duckdb_type.startswith("TIMESTAMP") else "object"


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
