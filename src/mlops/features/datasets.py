"""Training datasets: chosen features (or a feature service) joined point-in-time
correct onto (ticker, day) rows by Feast, persisted as parquet with their metadata."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mlops.db import Dataset, session_scope
from mlops.errors import ConflictError, InvalidInputError, NotFoundError, UnsafePathError
from mlops.features.catalog import active_definitions
from mlops.features.offline import (
    BARS_FILE,
    remove_dead_temp_files,
    temp_path,
    utc_connection,
)
from mlops.features.offline_state import open_snapshot
from mlops.features.store import open_store
from mlops.features.versions import active_versions
from mlops.fields import DateInRange, UtcDatetime
from mlops.names import DATASET_NAME, SafeName, Ticker, check_name
from mlops.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureService

DEFAULT_SERVICE = "model_features"
LABEL_REF = "training_labels:label_next_day_up"
CSV_BATCH_ROWS = 50_000


class DatasetRequest(BaseModel):
    name: SafeName = Field(description="File-safe name: letters, digits, '_', '-', '.'.")
    features: list[SafeName] = Field(default_factory=list, description="'view:feature' or names.")
    feature_service: SafeName | None = None
    tickers: list[Ticker] = Field(default_factory=list, description="Empty: every ticker.")
    start: DateInRange | None = None
    end: DateInRange | None = None
    include_label: bool = True


class DatasetInfo(BaseModel):
    name: str
    features: list[str]
    feature_versions: dict[str, int]
    tickers: list[str]
    start: UtcDatetime
    end: UtcDatetime
    rows: int
    label: bool
    size_bytes: int
    created_by: str
    created_at: UtcDatetime


def dataset_path(settings: Settings, name: str) -> Path:
    """The file of a dataset; names that could leave the datasets folder are refused.

    Whitespace at the ends or control characters: ``InvalidInputError`` (422); other
    characters outside ``DATASET_NAME``, or ``..``: ``UnsafePathError`` (400).
    """
    check_name(name, DATASET_NAME.kind)
    if DATASET_NAME.problem(name) is not None or ".." in name:
        raise UnsafePathError(
            f"Invalid dataset name '{name}': use letters, digits, '_', '-' and '.' only.",
            {"name": name},
        )
    root = settings.datasets_dir.resolve()
    path = (root / f"{name}.parquet").resolve()
    if path.parent != root:
        raise UnsafePathError(f"Dataset name '{name}' leaves the datasets folder.")
    return path


def _info(row: Dataset) -> DatasetInfo:
    return DatasetInfo.model_validate(row, from_attributes=True)


def resolve_feature_refs(
    settings: Settings,
    request: DatasetRequest,
    definitions: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """'view:feature' references for the request; unknown names are a 404.

    `definitions` (from `active_definitions`) saves a query when the caller has them.
    """
    if not request.features:
        name = request.feature_service or DEFAULT_SERVICE
        try:
            service = open_store(settings).get_feature_service(name)
        except Exception as exc:
            raise NotFoundError(f"Unknown feature service '{name}'.") from exc
        return service_refs(service)
    if definitions is None:
        definitions = active_definitions(settings)
    features = {name: [f["name"] for f in view["features"]] for name, view in definitions.items()}
    return match_feature_names(request.features, features)


def service_refs(service: FeatureService) -> list[str]:
    """The 'view:feature' references a feature service serves, in its order."""
    return [
        f"{projection.name}:{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def match_feature_names(wanted: list[str], features: dict[str, list[str]]) -> list[str]:
    """'view:feature' references of names given as 'view:feature' or as a bare name that
    one view only has (`features`: view name -> its feature names); others are refused."""
    by_name: dict[str, list[str]] = {}
    for view_name, names in features.items():
        for feature in names:
            by_name.setdefault(feature, []).append(view_name)
            by_name.setdefault(f"{view_name}:{feature}", []).append(view_name)
    refs = []
    for name in wanted:
        views = by_name.get(name)
        if not views:
            raise NotFoundError(f"Unknown feature '{name}'.", {"feature": name})
        if len(views) > 1:
            raise InvalidInputError(f"Feature name '{name}' is ambiguous: {views}.")
        refs.append(name if ":" in name else f"{views[0]}:{name}")
    return refs


def _refuse_duplicates(refs: list[str]) -> None:
    """Feast cannot join one feature twice: a feature named twice (or by its name and its
    'view:feature' reference, or the label with `include_label`) is the caller's mistake."""
    twice = sorted({ref for ref in refs if refs.count(ref) > 1})
    if twice:
        raise InvalidInputError(
            f"Features requested more than once: {', '.join(twice)}.", {"features": twice}
        )


@dataclass(frozen=True)
class EntityRows:
    """The (ticker, day) rows of a dataset as a DuckDB query over one snapshot's bars,
    with what the dataset records of them."""

    query: str
    rows: int
    tickers: list[str]
    start: datetime
    end: datetime


def entity_rows(settings: Settings, request: DatasetRequest) -> EntityRows:
    """The rows of the offline bars in the requested tickers and range (unknown tickers,
    an empty store or range are refused). Only their summary is read here; the rows
    themselves stay a query that the join reads."""
    snapshot = open_snapshot(settings)
    if snapshot is None or not snapshot.has(BARS_FILE):
        raise NotFoundError("The offline store is empty: run `mlops ingest` first.")
    if request.start and request.end and request.start > request.end:
        raise InvalidInputError("start must not be after end.")
    where = ["TRUE"]
    if request.tickers:
        known = set(snapshot.tickers()["ticker"])
        unknown = sorted(set(request.tickers) - known)
        if unknown:
            raise NotFoundError(f"Unknown tickers: {', '.join(unknown)}.", {"tickers": unknown})
        where.append(f"ticker IN ({', '.join(map(_literal, sorted(set(request.tickers))))})")
    if request.start:
        where.append(f"date >= TIMESTAMP {_literal(request.start.isoformat())}")
    if request.end:
        where.append(f"date <= TIMESTAMP {_literal(request.end.isoformat())}")
    query = (
        "SELECT ticker, CAST(date AS TIMESTAMPTZ) AS event_timestamp "
        f"FROM read_parquet({_literal(snapshot.glob(BARS_FILE))}, hive_partitioning = false) "
        f"WHERE {' AND '.join(where)}"
    )
    summary = "SELECT count(*), list(DISTINCT ticker ORDER BY ticker), min(event_timestamp), "
    with utc_connection() as connection:
        rows, tickers, start, end = connection.execute(
            f"{summary}max(event_timestamp) FROM ({query})"
        ).fetchone() or (0, [], None, None)
    if not rows:
        raise InvalidInputError("No rows for these tickers in this time range.")
    return EntityRows(query, rows, tickers, start, end)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_dataset(settings: Settings, request: DatasetRequest, author: str) -> DatasetInfo:
    """Build, persist and record a training dataset.

    Feast plans the point-in-time join (our offline store, `offline_store.py`) and DuckDB
    writes its result straight into the dataset's file: the rows never pass through this
    process, so a large dataset leaves the API's memory as it found it. With the `ray`
    engine (Feast's Ray store) the entity rows and the result do pass through it."""
    path = dataset_path(settings, request.name)
    with session_scope(settings.metadata_url) as session:
        if session.scalar(select(Dataset.id).where(Dataset.name == request.name)) is not None:
            raise ConflictError(f"Dataset '{request.name}' already exists.")
    refs = resolve_feature_refs(settings, request)
    entities = entity_rows(settings, request)
    store = open_store(settings)
    all_refs = [*refs, LABEL_REF] if request.include_label else refs
    _refuse_duplicates(all_refs)
    if settings.dataset_engine == "ray":  # Feast's Ray store takes entity rows as a frame
        with utc_connection() as connection:
            entity_df: pd.DataFrame | str = connection.execute(entities.query).df()
    else:
        entity_df = entities.query
    job = store.get_historical_features(entity_df=entity_df, features=all_refs)
    # The file gets its final name only once the record is committed, so a concurrent
    # request for the same name can never overwrite or delete the winner's file.
    remove_dead_temp_files(path.parent)  # what a killed earlier request left
    staged = temp_path(path)
    try:
        rows = _write_join(job, staged)
        with session_scope(settings.metadata_url) as session:
            versions = active_versions(session)
            views = {ref.split(":")[0] for ref in all_refs}
            row = Dataset(
                name=request.name,
                features=refs,
                feature_versions={v: versions[v].version for v in sorted(views) if v in versions},
                tickers=entities.tickers,
                start=entities.start,
                end=entities.end,
                rows=rows,
                label=request.include_label,
                path=path.name,
                size_bytes=staged.stat().st_size,
                created_by=author,
            )
            session.add(row)
            session.flush()
            info = _info(row)
        os.replace(staged, path)
    except IntegrityError as exc:
        raise ConflictError(f"Dataset '{request.name}' already exists.") from exc
    finally:
        staged.unlink(missing_ok=True)
    return info


def _write_join(job: object, path: Path) -> int:
    """Stream the join into `path`, sorted by ticker and time; the number of rows.

    Our ASOF store has DuckDB write the file; any other store's result (Feast's Ray store)
    is written from its Arrow table."""
    from feast.infra.offline_stores.offline_store import RetrievalJob

    from mlops.features.offline_store import AsofRetrievalJob

    order_by = ["ticker", "event_timestamp"]
    if isinstance(job, AsofRetrievalJob):
        return job.write_parquet(path, order_by=order_by)
    assert isinstance(job, RetrievalJob)
    table = job.to_arrow().sort_by([(column, "ascending") for column in order_by])
    pq.write_table(table, path)
    return table.num_rows


def list_datasets(settings: Settings) -> list[DatasetInfo]:
    with session_scope(settings.metadata_url) as session:
        return [_info(r) for r in session.scalars(select(Dataset).order_by(Dataset.id.desc()))]


def get_dataset(settings: Settings, name: str) -> tuple[DatasetInfo, Path]:
    path = dataset_path(settings, name)
    with session_scope(settings.metadata_url) as session:
        row = session.scalar(select(Dataset).where(Dataset.name == name))
        if row is None or not path.exists():
            raise NotFoundError(f"Unknown dataset '{name}'.", {"dataset": name})
        return _info(row), path


_NULLABLE_INTEGERS = {pa.int64(): pd.Int64Dtype()}
"""Integer columns with nulls (the label of a ticker's last bar) stay integers in every
batch, instead of floats in the batches that happen to hold a null."""


def iter_csv(path: Path) -> Iterator[bytes]:
    """A parquet dataset as CSV, in batches, so large files stream in constant memory."""
    with pq.ParquetFile(path) as parquet:
        header = True
        for batch in parquet.iter_batches(batch_size=CSV_BATCH_ROWS):
            frame = batch.to_pandas(types_mapper=_NULLABLE_INTEGERS.get)
            yield frame.to_csv(index=False, header=header).encode()
            header = False


def export_dataset(
    settings: Settings, name: str, target: Path, fmt: Literal["parquet", "csv"] = "parquet"
) -> Path:
    """Copy a dataset to a file of the user's choosing (CLI download), atomically."""
    _, path = get_dataset(settings, name)
    target = target / f"{name}.{fmt}" if target.is_dir() else target
    if not target.parent.is_dir():
        raise NotFoundError(f"Folder {target.parent} does not exist.")
    partial = target.with_name(f".{target.name}.partial")
    try:
        if fmt == "csv":
            with open(partial, "wb") as out:
                for chunk in iter_csv(path):
                    out.write(chunk)
        else:
            shutil.copyfile(path, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
