"""The feature catalog: every feature of the Feast registry with its version, metadata,
statistics and sample rows (statistics come from ingest; nothing is computed here)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from mlops.db import FeatureStatistics, FeatureViewVersion, session_scope
from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.versions import active_row, active_versions, view_rows
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


# Built once, with parameters: composing a statement per call cost more than running it.
_DATA_UPDATED = select(func.max(FeatureStatistics.computed_at)).where(
    FeatureStatistics.view_name == bindparam("view"),
    FeatureStatistics.version == bindparam("version"),
)
_STATISTICS = select(FeatureStatistics).where(
    FeatureStatistics.view_name == bindparam("view"),
    FeatureStatistics.version == bindparam("version"),
    FeatureStatistics.feature_name == bindparam("feature"),
)


def _view_data_updated(session: Session, view: str, version: int) -> datetime | None:
    """When statistics of one view version were last computed (its data last changed)."""
    at = session.scalar(_DATA_UPDATED, {"view": view, "version": version})
    return _aware(at) if at else None


def _definition(row: FeatureViewVersion) -> dict[str, Any]:
    return {**row.definition, "version": row.version, "updated": _aware(row.created_at)}


def active_definitions(settings: Settings) -> dict[str, dict[str, Any]]:
    """The active definition of every feature view, as applied to Feast.

    Every apply and rollback made through the platform writes the definition it
    applied, so reading it here costs one query instead of rebuilding every view
    from the Feast registry's protobufs on each request.
    """
    with session_scope(settings.metadata_url) as session:
        return {name: _definition(row) for name, row in active_versions(session).items()}


def _feature_summary(
    view_name: str, view: dict[str, Any], field: dict[str, Any], data: datetime | None
) -> FeatureSummary:
    """One feature of an active view definition (from `_definition`)."""
    return FeatureSummary(
        name=field["name"],
        feature_view=view_name,
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


def all_features(settings: Settings) -> list[FeatureSummary]:
    """Every feature of every active feature view, with its version and update times."""
    updated = _data_updated(settings)
    return [
        _feature_summary(name, view, field, updated.get((name, view["version"])))
        for name, view in sorted(active_definitions(settings).items())
        for field in view["features"]
    ]


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


def _unknown(name: str) -> NotFoundError:
    return NotFoundError(f"Unknown feature '{name}'.", {"feature": name})


def _field(definition: dict[str, Any], feature_name: str) -> dict[str, Any] | None:
    return next((f for f in definition["features"] if f["name"] == feature_name), None)


def _view_of(session: Session, name: str) -> tuple[str, str]:
    """(view, feature) that `name` means: 'view:feature' as given, a bare feature name
    in the one view whose active definition has it (only then are all views read)."""
    view_name, _, feature_name = name.rpartition(":")
    if view_name:
        return view_name, feature_name
    holding = [
        view
        for view, row in sorted(active_versions(session).items())
        if _field(row.definition, feature_name) is not None
    ]
    if not holding:
        raise _unknown(name)
    if len(holding) > 1:
        views = ", ".join(f"{view}:{feature_name}" for view in holding)
        raise InvalidInputError(f"Feature name '{name}' is ambiguous; use one of {views}.")
    return holding[0], feature_name


def _active_feature(
    session: Session, active: FeatureViewVersion | None, feature_name: str, name: str
) -> tuple[FeatureSummary, dict[str, Any]]:
    """The feature in its view's active row (404 when either is missing), with the time
    that view's data was last updated; and the view's active definition."""
    field = _field(active.definition, feature_name) if active is not None else None
    if active is None or field is None:
        raise _unknown(name)
    view = _definition(active)
    data = _view_data_updated(session, active.view_name, active.version)
    return _feature_summary(active.view_name, view, field, data), view


def find_feature(settings: Settings, name: str) -> FeatureSummary:
    """A feature by 'view:feature' or by its bare name when that is unambiguous."""
    with session_scope(settings.metadata_url) as session:
        view_name, feature_name = _view_of(session, name)
        return _active_feature(session, active_row(session, view_name), feature_name, name)[0]


def _version_entry(row: FeatureViewVersion, feature_name: str) -> dict[str, Any]:
    return {
        "version": row.version,
        "change_kind": row.change_kind,
        "origin": row.origin,
        "author": row.author,
        "message": row.message,
        "created_at": _aware(row.created_at),
        "has_feature": _field(row.definition, feature_name) is not None,
    }


def feature_detail(settings: Settings, name: str, version: int | None = None) -> FeatureDetail:
    """Metadata, stored statistics and samples of a feature (at a view version), read in
    one session: for 'view:feature', from the rows of that view alone."""
    with session_scope(settings.metadata_url) as session:
        view_name, feature_name = _view_of(session, name)
        rows = view_rows(session, view_name)  # oldest first: the newest is the active one
        summary, active = _active_feature(session, rows[-1] if rows else None, feature_name, name)
        wanted = version or summary.latest_version
        if not any(r.version == wanted for r in rows):
            raise NotFoundError(
                f"Feature view '{view_name}' has no version {wanted}.",
                {"view": view_name, "version": wanted},
            )
        stats = session.scalar(
            _STATISTICS, {"view": view_name, "version": wanted, "feature": feature_name}
        )
        return FeatureDetail(
            **summary.model_dump(),
            view_description=active["description"],
            entities=active["entities"],
            source=active["source"],
            ttl_seconds=active["ttl_seconds"],
            statistics_version=wanted if stats else None,
            statistics=stats.stats if stats else None,
            samples=stats.samples if stats else [],
            versions=[_version_entry(r, feature_name) for r in rows],
        )
