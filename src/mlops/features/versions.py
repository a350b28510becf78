"""Version history of feature views: what changed, who changed it, diff and rollback.

Feast 0.67 snapshots a view in its registry when its schema changes (v0, v1, ...),
but it does not record author or message, ignores description/tags/ttl/owner changes
and cannot diff. Each apply made through the platform therefore also writes one
`FeatureViewVersion` row with the full definition; the newest row of a view is the
active definition. Rollback applies an older definition again as a new version:
history is never rewritten.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from mlops.db import FeatureViewVersion, session_scope
from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.features.offline import dataset_name
from mlops.fields import UtcDatetime

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from mlops.settings import Settings

SCHEMA_KEYS = ("entities", "features", "source", "online")
METADATA_KEYS = ("description", "tags", "ttl_seconds", "owner")


class VersionInfo(BaseModel):
    view_name: str
    version: int
    origin: str
    change_kind: str
    author: str
    message: str
    feast_version: str | None
    created_at: UtcDatetime
    active: bool
    definition: dict[str, Any]


class FeatureChange(BaseModel):
    name: str
    change: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class VersionDiff(BaseModel):
    view_name: str
    from_version: int
    to_version: int
    features: list[FeatureChange]
    fields: dict[str, dict[str, Any]]
    unified: str


def view_definition(view: FeatureView) -> dict[str, Any]:
    """A JSON-safe, comparable description of a feature view."""
    source = view.batch_source
    if source is None:
        raise InvalidInputError(f"Feature view '{view.name}' has no batch source.")
    return {
        "name": view.name,
        "entities": sorted(view.entities),
        "features": [
            {
                "name": f.name,
                "dtype": str(f.dtype),
                "description": f.description,
                "tags": dict(sorted(f.tags.items())),
            }
            for f in view.features
        ],
        "source": {
            "name": source.name,
            "file": dataset_name(getattr(source, "path", "")),
            "timestamp_field": source.timestamp_field,
        },
        "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else 0,
        "tags": dict(sorted(view.tags.items())),
        "description": view.description,
        "owner": view.owner,
        "online": bool(view.online),
    }


def fingerprint(definition: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def change_kind(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """'created', 'schema' (features, entities, source) or 'metadata'."""
    if before is None:
        return "created"
    return "schema" if any(before[k] != after[k] for k in SCHEMA_KEYS) else "metadata"


def version_info(row: FeatureViewVersion, active_version: int) -> VersionInfo:
    return VersionInfo(
        view_name=row.view_name,
        version=row.version,
        origin=row.origin,
        change_kind=row.change_kind,
        author=row.author,
        message=row.message,
        feast_version=row.feast_version,
        created_at=row.created_at,
        active=row.version == active_version,
        definition=row.definition,
    )


def active_versions(session: Session) -> dict[str, FeatureViewVersion]:
    """The active (newest) version row of every view, in one query."""
    newest = (
        select(FeatureViewVersion.view_name, func.max(FeatureViewVersion.version).label("v"))
        .group_by(FeatureViewVersion.view_name)
        .subquery()
    )
    rows = session.scalars(
        select(FeatureViewVersion).join(
            newest,
            (FeatureViewVersion.view_name == newest.c.view_name)
            & (FeatureViewVersion.version == newest.c.v),
        )
    )
    return {row.view_name: row for row in rows}


# Built once, with the view as a parameter: composing a statement per call cost more than
# running it (these answer one feature's lookups).
_VIEW_ROWS = (
    select(FeatureViewVersion)
    .where(FeatureViewVersion.view_name == bindparam("view"))
    .order_by(FeatureViewVersion.version)
)
_ACTIVE_ROW = (
    select(FeatureViewVersion)
    .where(FeatureViewVersion.view_name == bindparam("view"))
    .order_by(FeatureViewVersion.version.desc())
    .limit(1)
)


def view_rows(session: Session, view_name: str) -> list[FeatureViewVersion]:
    """Every version row of a view, oldest first (none for an unknown view)."""
    return list(session.scalars(_VIEW_ROWS, {"view": view_name}))


def active_row(session: Session, view_name: str) -> FeatureViewVersion | None:
    """The active (newest) version row of a view, if the view is known."""
    return session.scalar(_ACTIVE_ROW, {"view": view_name})


def version_rows(session: Session, view_name: str) -> list[FeatureViewVersion]:
    rows = view_rows(session, view_name)
    if not rows:
        raise NotFoundError(f"Unknown feature view '{view_name}'.", {"view": view_name})
    return rows


def list_versions(session: Session, view_name: str) -> list[VersionInfo]:
    """Every version of a view, oldest first."""
    rows = version_rows(session, view_name)
    return [version_info(row, rows[-1].version) for row in rows]


def get_version(session: Session, view_name: str, version: int) -> FeatureViewVersion:
    for row in version_rows(session, view_name):
        if row.version == version:
            return row
    raise NotFoundError(
        f"Feature view '{view_name}' has no version {version}.",
        {"view": view_name, "version": version},
    )


def record_version(
    session: Session,
    definition: dict[str, Any],
    *,
    origin: str,
    author: str,
    message: str,
    feast_version: str | None,
    previous: FeatureViewVersion | None,
) -> FeatureViewVersion:
    row = FeatureViewVersion(
        view_name=definition["name"],
        version=(previous.version + 1) if previous else 1,
        definition=definition,
        fingerprint=fingerprint(definition),
        origin=origin,
        change_kind=change_kind(previous.definition if previous else None, definition),
        author=author,
        message=message,
        feast_version=feast_version,
    )
    session.add(row)
    session.flush()
    return row


def last_repo_fingerprint(session: Session, view_name: str) -> str | None:
    """Fingerprint of the definition last applied from `feature_repo/`."""
    return session.scalar(
        select(FeatureViewVersion.fingerprint)
        .where(FeatureViewVersion.view_name == view_name, FeatureViewVersion.origin == "repo")
        .order_by(FeatureViewVersion.version.desc())
        .limit(1)
    )


def views_to_apply(session: Session, views: list[FeatureView]) -> list[FeatureView]:
    """Views of the repository whose definition changed since it was last applied.

    A view rolled back through the platform stays rolled back until its declaration
    in `feature_repo/` changes again; re-applying an unchanged repository records nothing.
    """
    changed = []
    active = active_versions(session)
    for view in views:
        fp = fingerprint(view_definition(view))
        current = active.get(view.name)
        if current is None or fp not in (
            last_repo_fingerprint(session, view.name),
            current.fingerprint,
        ):
            changed.append(view)
    return changed


def feast_version_of(store: FeatureStore, view_name: str) -> str | None:
    """The newest snapshot name Feast keeps for a view ('v0', 'v1', ...), if any."""
    try:
        versions = store.registry.list_feature_view_versions(view_name, store.project)
    except (AttributeError, NotImplementedError):
        return None
    return str(versions[-1]["version"]) if versions else None


def diff_versions(session: Session, view_name: str, a: int, b: int) -> VersionDiff:
    """What changed from version a to version b of a view."""
    before = get_version(session, view_name, a).definition
    after = get_version(session, view_name, b).definition
    old = {f["name"]: f for f in before["features"]}
    new = {f["name"]: f for f in after["features"]}
    features = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            features.append(
                FeatureChange(name=name, change="removed", before=old[name], after=None)
            )
        elif name not in old:
            features.append(FeatureChange(name=name, change="added", before=None, after=new[name]))
        elif old[name]["dtype"] != new[name]["dtype"]:
            features.append(
                FeatureChange(name=name, change="retyped", before=old[name], after=new[name])
            )
        elif old[name] != new[name]:
            features.append(
                FeatureChange(name=name, change="changed", before=old[name], after=new[name])
            )
    fields = {
        key: {"before": before[key], "after": after[key]}
        for key in ("entities", "source", "ttl_seconds", "tags", "description", "owner", "online")
        if before[key] != after[key]
    }
    unified = "".join(
        difflib.unified_diff(
            yaml.safe_dump(before, sort_keys=True).splitlines(keepends=True),
            yaml.safe_dump(after, sort_keys=True).splitlines(keepends=True),
            fromfile=f"{view_name}@v{a}",
            tofile=f"{view_name}@v{b}",
        )
    )
    return VersionDiff(
        view_name=view_name,
        from_version=a,
        to_version=b,
        features=features,
        fields=fields,
        unified=unified,
    )


def build_view(store: FeatureStore, definition: dict[str, Any]) -> FeatureView:
    """A Feast feature view from a recorded definition (entities and source from the registry)."""
    from feast import FeatureView, Field

    return FeatureView(
        name=definition["name"],
        entities=[store.get_entity(name) for name in definition["entities"]],
        schema=[
            Field(
                name=f["name"],
                dtype=feast_type(f["dtype"]),
                description=f["description"],
                tags=f.get("tags", {}),
            )
            for f in definition["features"]
        ],
        source=store.get_data_source(definition["source"]["name"]),
        ttl=timedelta(seconds=definition["ttl_seconds"]),
        online=definition["online"],
        description=definition["description"],
        tags=definition["tags"],
        owner=definition["owner"],
    )


def feast_type(name: str) -> Any:
    """The Feast type object for a recorded dtype name such as 'Float64'."""
    from feast import types

    dtype = getattr(types, name, None)
    if dtype is None:
        raise InvalidInputError(f"Unknown Feast dtype '{name}'.")
    return dtype


def check_rollback_target(
    active: FeatureViewVersion, target: FeatureViewVersion, columns: set[str]
) -> None:
    """Refuse a rollback that changes nothing or needs columns the offline data lacks."""
    if target.fingerprint == active.fingerprint:
        raise ConflictError(
            f"Version {target.version} of '{target.view_name}' has the same definition as the "
            f"active version {active.version}; nothing to roll back.",
            {"view": target.view_name, "version": target.version},
        )
    missing = [f["name"] for f in target.definition["features"] if f["name"] not in columns]
    if missing:
        raise InvalidInputError(
            f"Cannot roll back '{target.view_name}' to version {target.version}: the offline "
            f"data has no column {', '.join(missing)}.",
            {"missing_columns": missing},
        )


# --------------------------------------------------------------------------- use cases
# What the API, the console and the CLI ask of the history, each in one call (they open no
# database session of their own).


class ViewSummary(BaseModel):
    """A feature view with its active version."""

    name: str
    version: int
    change_kind: str
    features: list[str]
    online: bool
    updated: UtcDatetime


class Comparison(BaseModel):
    """Two versions of a view and what changed between them."""

    before: VersionInfo
    after: VersionInfo
    diff: VersionDiff


def view_summaries(settings: Settings) -> list[ViewSummary]:
    """Every feature view with its active version, by name."""
    with session_scope(settings.metadata_url) as session:
        return [
            ViewSummary(
                name=name,
                version=row.version,
                change_kind=row.change_kind,
                features=[f["name"] for f in row.definition["features"]],
                online=row.definition["online"],
                updated=row.created_at,
            )
            for name, row in sorted(active_versions(session).items())
        ]


def history(settings: Settings, view_name: str) -> list[VersionInfo]:
    """Every version of a view, oldest first (404 for an unknown view)."""
    with session_scope(settings.metadata_url) as session:
        return list_versions(session, view_name)


def diff(settings: Settings, view_name: str, a: int, b: int) -> VersionDiff:
    """What changed from version ``a`` to version ``b`` of a view."""
    with session_scope(settings.metadata_url) as session:
        return diff_versions(session, view_name, a, b)


def compare(settings: Settings, view_name: str, a: int | None, b: int) -> Comparison:
    """Version ``a`` (None: the active one) and version ``b`` of a view, and their diff."""
    with session_scope(settings.metadata_url) as session:
        rows = version_rows(session, view_name)
        active = rows[-1].version
        before = rows[-1] if a is None else get_version(session, view_name, a)
        after = get_version(session, view_name, b)
        return Comparison(
            before=version_info(before, active),
            after=version_info(after, active),
            diff=diff_versions(session, view_name, before.version, b),
        )
