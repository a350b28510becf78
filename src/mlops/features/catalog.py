"""The feature catalog: every feature of the Feast registry with its version, metadata,
statistics and sample rows (statistics come from ingest; nothing is computed here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select

from mlops.db import FeatureStatistics, FeatureViewVersion, session_scope
from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.versions import active_versions
from mlops.fields import PageNumber, TimeInRange, UtcDatetime
from mlops.settings import Settings

T = TypeVar("T")
DTYPES = ("Float64", "Float32", "Int64", "Int32", "String", "Bool", "UnixTimestamp")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class FeatureFilter(BaseModel):
    """Filters of the catalog listing; invalid values are a 422."""

    dtype: str | None = None
    view: str | None = None
    q: str | None = Field(default=None, max_length=200)
    updated_after: TimeInRange | None = None
    updated_before: TimeInRange | None = None
    page: PageNumber = 1
    page_size: int = Field(default=50, ge=1, le=500)

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for dtype in DTYPES:
            if dtype.lower() == value.lower():
                return dtype
        raise ValueError(f"unknown type '{value}'; expected one of {', '.join(DTYPES)}")

    @field_validator("updated_after", "updated_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value


class FeatureSummary(BaseModel):
    name: str
    feature_view: str
    dtype: str
    description: str
    tags: dict[str, str]
    owner: str
    online: bool
    latest_version: int
    definition_updated: UtcDatetime
    data_updated: UtcDatetime | None
    last_updated: UtcDatetime


class FeatureDetail(FeatureSummary):
    view_description: str
    entities: list[str]
    source: dict[str, Any]
    ttl_seconds: int
    statistics_version: int | None
    statistics: dict[str, Any] | None
    samples: list[dict[str, Any]]
    versions: list[dict[str, Any]]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _data_updated(settings: Settings) -> dict[tuple[str, int], datetime]:
    with session_scope(settings.metadata_url) as session:
        rows = session.execute(
            select(
                FeatureStatistics.view_name,
                FeatureStatistics.version,
                func.max(FeatureStatistics.computed_at),
            ).group_by(FeatureStatistics.view_name, FeatureStatistics.version)
        )
        return {(view, version): _aware(at) for view, version, at in rows}


def active_definitions(settings: Settings) -> dict[str, dict[str, Any]]:
    """The active definition of every feature view, as applied to Feast.

    Every apply and rollback made through the platform writes the definition it
    applied, so reading it here costs one query instead of rebuilding every view
    from the Feast registry's protobufs on each request.
    """
    with session_scope(settings.metadata_url) as session:
        return {
            name: {**row.definition, "version": row.version, "updated": _aware(row.created_at)}
            for name, row in active_versions(session).items()
        }


def all_features(settings: Settings, only: str | None = None) -> list[FeatureSummary]:
    """Every feature of every active feature view (or only those named `only`),
    with its version and update times."""
    updated = _data_updated(settings)
    features = []
    for name, view in sorted(active_definitions(settings).items()):
        data = updated.get((name, view["version"]))
        for field in view["features"]:
            if only is not None and field["name"] != only:
                continue
            features.append(
                FeatureSummary(
                    name=field["name"],
                    feature_view=name,
                    dtype=field["dtype"],
                    description=field["description"],
                    tags={**view["tags"], **field.get("tags", {})},
                    owner=view["owner"],
                    online=view["online"],
                    latest_version=view["version"],
                    definition_updated=view["updated"],
                    data_updated=data,
                    last_updated=max(view["updated"], data) if data else view["updated"],
                )
            )
    return features


def _matches(feature: FeatureSummary, filters: FeatureFilter) -> bool:
    if filters.dtype and feature.dtype != filters.dtype:
        return False
    if filters.view and feature.feature_view != filters.view:
        return False
    if filters.q:
        needle = filters.q.lower()
        haystack = f"{feature.name} {feature.feature_view} {feature.description}".lower()
        if needle not in haystack:
            return False
    if filters.updated_after and feature.last_updated < filters.updated_after:
        return False
    return not (filters.updated_before and feature.last_updated > filters.updated_before)


def list_features(settings: Settings, filters: FeatureFilter) -> Page[FeatureSummary]:
    """One page of the catalog, filtered and searched."""
    if (
        filters.updated_after
        and filters.updated_before
        and filters.updated_after > filters.updated_before
    ):
        raise InvalidInputError("updated_after must not be later than updated_before.")
    matching = [f for f in all_features(settings) if _matches(f, filters)]
    first = (filters.page - 1) * filters.page_size
    return Page[FeatureSummary](
        items=matching[first : first + filters.page_size],
        total=len(matching),
        page=filters.page,
        page_size=filters.page_size,
    )


def find_feature(settings: Settings, name: str) -> FeatureSummary:
    """A feature by 'view:feature' or by its bare name when that is unambiguous."""
    view_name, _, feature_name = name.rpartition(":")
    candidates = [
        f
        for f in all_features(settings, only=feature_name)
        if not view_name or f.feature_view == view_name
    ]
    if not candidates:
        raise NotFoundError(f"Unknown feature '{name}'.", {"feature": name})
    if len(candidates) > 1:
        views = ", ".join(f"{c.feature_view}:{c.name}" for c in candidates)
        raise InvalidInputError(f"Feature name '{name}' is ambiguous; use one of {views}.")
    return candidates[0]


def feature_detail(settings: Settings, name: str, version: int | None = None) -> FeatureDetail:
    """Metadata, stored statistics and samples of a feature (at a view version)."""
    summary = find_feature(settings, name)
    with session_scope(settings.metadata_url) as session:
        rows = list(
            session.scalars(
                select(FeatureViewVersion)
                .where(FeatureViewVersion.view_name == summary.feature_view)
                .order_by(FeatureViewVersion.version)
            )
        )
        wanted = version or summary.latest_version
        if not any(r.version == wanted for r in rows):
            raise NotFoundError(
                f"Feature view '{summary.feature_view}' has no version {wanted}.",
                {"view": summary.feature_view, "version": wanted},
            )
        stats = session.scalar(
            select(FeatureStatistics).where(
                FeatureStatistics.view_name == summary.feature_view,
                FeatureStatistics.version == wanted,
                FeatureStatistics.feature_name == summary.name,
            )
        )
        active = rows[-1].definition
        versions = [
            {
                "version": r.version,
                "change_kind": r.change_kind,
                "origin": r.origin,
                "author": r.author,
                "message": r.message,
                "created_at": _aware(r.created_at),
                "has_feature": any(f["name"] == summary.name for f in r.definition["features"]),
            }
            for r in rows
        ]
        return FeatureDetail(
            **summary.model_dump(),
            view_description=active["description"],
            entities=active["entities"],
            source=active["source"],
            ttl_seconds=active["ttl_seconds"],
            statistics_version=wanted if stats else None,
            statistics=stats.stats if stats else None,
            samples=stats.samples if stats else [],
            versions=versions,
        )
