"""Rollback of a feature view: an older definition becomes the active one, is
re-materialized and gets its statistics; the history only grows."""

from __future__ import annotations

from mlops.db import session_scope
from mlops.features.ingest import materialize, store_statistics
from mlops.features.offline_state import open_snapshot
from mlops.features.store import open_store
from mlops.features.versions import (
    VersionInfo,
    build_view,
    check_rollback_target,
    feast_version_of,
    get_version,
    list_versions,
    record_version,
    version_rows,
)
from mlops.settings import Settings


def rollback_view(
    settings: Settings, view_name: str, to_version: int, author: str, message: str = ""
) -> VersionInfo:
    """Make version `to_version` of a view active again, as a new version."""
    snapshot = open_snapshot(settings)  # read everything of the rollback from one state
    store = open_store(settings)
    with session_scope(settings.metadata_url) as session:
        active = version_rows(session, view_name)[-1]
        target = get_version(session, view_name, to_version)
        dataset = target.definition["source"]["file"]
        columns = set(snapshot.columns(dataset)) if snapshot is not None else set()
        check_rollback_target(active, target, columns)

        previous_view = store.get_feature_view(view_name)
        view = build_view(store, target.definition)
        store.apply([view])
        try:
            if view.online:
                materialize(settings, snapshot, None, [view_name])
            record_version(
                session,
                target.definition,
                origin="rollback",
                author=author,
                message=message or f"Roll back to version {to_version}",
                feast_version=feast_version_of(store, view_name),
                previous=active,
            )
        except Exception:
            store.apply([previous_view])
            raise
    store_statistics(settings, snapshot)
    with session_scope(settings.metadata_url) as session:
        return list_versions(session, view_name)[-1]
