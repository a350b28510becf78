"""The feature catalog: every feature of the Feast registry with its version, metadata,
statistics and sample rows (statistics come from ingest; nothing is computed here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, field_validator
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from mlops.db import FeatureStatistics, FeatureViewVersion, engine_for, session_scope
from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.versions import active_row, active_versions
from mlops.fields import PageNumber, TimeInRange, UtcDatetime, as_utc
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


class VersionEntry(BaseModel):
    """One version of the feature's view, and whether that version had the feature."""

    version: int
    change_kind: str
    origin: str
    author: str
    message: str
    created_at: Annotated[UtcDatetime, AfterValidator(as_utc)]
    has_feature: bool


_VERSION_ENTRIES = TypeAdapter(list[VersionEntry])  # one validation for the whole list


class FeatureDetail(FeatureSummary):
    view_description: str
    entities: list[str]
    source: dict[str, Any]
    ttl_seconds: int
    statistics_version: int | None
    statistics: dict[str, Any] | None
    samples: list[dict[str, Any]]
    versions: list[VersionEntry]


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


def _view_data_updated(session: Session, view: str, version: int) -> datetime | None:
    """When statistics of one view version were last computed (its data last changed)."""
    at = session.scalar(_DATA_UPDATED, {"view": view, "version": version})
    return _aware(at) if at else None


def _definition(definition: dict[str, Any], version: int, applied_at: datetime) -> dict[str, Any]:
    """A view definition as `_feature_summary` reads it: with its version and when it was
    applied."""
    return {**definition, "version": version, "updated": _aware(applied_at)}


def active_definitions(settings: Settings) -> dict[str, dict[str, Any]]:
    """The active definition of every feature view, as applied to Feast.

    Every apply and rollback made through the platform writes the definition it
    applied, so reading it here costs one query instead of rebuilding every view
    from the Feast registry's protobufs on each request.
    """
    with session_scope(settings.metadata_url) as session:
        return {
            name: _definition(row.definition, row.version, row.created_at)
            for name, row in active_versions(session).items()
        }


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
    view = _definition(active.definition, active.version, active.created_at)
    data = _view_data_updated(session, active.view_name, active.version)
    return _feature_summary(active.view_name, view, field, data), view


def find_feature(settings: Settings, name: str) -> FeatureSummary:
    """A feature by 'view:feature' or by its bare name when that is unambiguous."""
    with session_scope(settings.metadata_url) as session:
        view_name, feature_name = _view_of(session, name)
        return _active_feature(session, active_row(session, view_name), feature_name, name)[0]


_ROWS = FeatureViewVersion.__table__
_STATS = FeatureStatistics.__table__
# The version rows of one view without their definitions, oldest first (the newest is the
# active one); definitions are read by fingerprint only when not in `_DEFINITIONS` yet.
_VERSION_ROWS = (
    select(
        _ROWS.c.version,
        _ROWS.c.fingerprint,
        _ROWS.c.change_kind,
        _ROWS.c.origin,
        _ROWS.c.author,
        _ROWS.c.message,
        _ROWS.c.created_at,
    )
    .where(_ROWS.c.view_name == bindparam("view"))
    .order_by(_ROWS.c.version)
)
_DEFINITIONS_OF = select(_ROWS.c.fingerprint, _ROWS.c.definition).where(
    _ROWS.c.view_name == bindparam("view"),
    _ROWS.c.fingerprint.in_(bindparam("fingerprints", expanding=True)),
)


def _of_feature(column: Any) -> Any:
    return (
        select(column)
        .where(
            _STATS.c.view_name == bindparam("view"),
            _STATS.c.version == bindparam("version"),
            _STATS.c.feature_name == bindparam("feature"),
        )
        .scalar_subquery()
    )


# In one statement: when the active version's data last changed, and the feature's
# statistics and samples at the wanted version (NULL when none were stored).
_STATISTICS_AND_UPDATED = select(
    select(func.max(_STATS.c.computed_at))
    .where(_STATS.c.view_name == bindparam("view"), _STATS.c.version == bindparam("active"))
    .scalar_subquery()
    .label("updated"),
    _of_feature(_STATS.c.stats).label("stats"),
    _of_feature(_STATS.c.samples).label("samples"),
)


@dataclass(frozen=True)
class _Definition:
    """A decoded view definition and the names of its features."""

    content: dict[str, Any]
    features: frozenset[str]


# Decoded definitions by fingerprint (the sha256 of the definition): a version row never
# changes, so an entry is never stale; it only saves decoding the same JSON per request.
_DEFINITIONS: dict[str, _Definition] = {}
_MAX_DEFINITIONS = 4096


def _definitions(conn: Connection, view: str, fingerprints: set[str]) -> dict[str, _Definition]:
    missing = fingerprints - _DEFINITIONS.keys()
    if missing:
        if len(_DEFINITIONS) + len(missing) > _MAX_DEFINITIONS:
            _DEFINITIONS.clear()
        rows = conn.execute(_DEFINITIONS_OF, {"view": view, "fingerprints": sorted(missing)})
        _DEFINITIONS.update(
            {
                fp: _Definition(content, frozenset(f["name"] for f in content["features"]))
                for fp, content in rows
            }
        )
    return {fp: _DEFINITIONS[fp] for fp in fingerprints}


def feature_detail(settings: Settings, name: str, version: int | None = None) -> FeatureDetail:
    """Metadata, stored statistics and samples of a feature (at a view version): for
    'view:feature', two small queries on the rows of that view alone (and one more for
    definitions this process has not decoded yet)."""
    with engine_for(settings.metadata_url).connect() as conn:
        with Session(conn) as session:  # a query only for a bare feature name
            view_name, feature_name = _view_of(session, name)
        rows = conn.execute(_VERSION_ROWS, {"view": view_name}).all()
        if not rows:
            raise _unknown(name)
        definitions = _definitions(conn, view_name, {row.fingerprint for row in rows})
        newest = rows[-1]
        content = definitions[newest.fingerprint].content
        active = _definition(content, newest.version, newest.created_at)
        field = _field(active, feature_name)
        if field is None:
            raise _unknown(name)
        wanted = version or newest.version
        if not any(row.version == wanted for row in rows):
            raise NotFoundError(
                f"Feature view '{view_name}' has no version {wanted}.",
                {"view": view_name, "version": wanted},
            )
        found = conn.execute(
            _STATISTICS_AND_UPDATED,
            {
                "view": view_name,
                "active": newest.version,
                "version": wanted,
                "feature": feature_name,
            },
        ).one()
    data = _aware(found.updated) if found.updated else None
    summary = _feature_summary(view_name, active, field, data)
    return FeatureDetail(
        **summary.model_dump(),
        view_description=active["description"],
        entities=active["entities"],
        source=active["source"],
        ttl_seconds=active["ttl_seconds"],
        statistics_version=wanted if found.stats is not None else None,
        statistics=found.stats,
        samples=found.samples or [],
        versions=_VERSION_ENTRIES.validate_python(
            [
                {
                    **row._mapping,
                    "has_feature": feature_name in definitions[row.fingerprint].features,
                }
                for row in rows
            ]
        ),
    )
