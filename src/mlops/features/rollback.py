"""Rollback of a feature view: an older definition becomes the active one, is
re-materialized and gets its statistics; the history only grows."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq

from mlops.db import session_scope
from mlops.features.ingest import OfflineFrames, store_statistics
from mlops.features.offline import FEATURES_FILE, LABELS_FILE, checked_path
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


def _offline_frames(settings: Settings) -> OfflineFrames:
    features = pd.read_parquet(checked_path(settings, FEATURES_FILE))
    labels = pd.read_parquet(checked_path(settings, LABELS_FILE))
    return OfflineFrames(bars=pd.DataFrame(), features=features, labels=labels)


def rollback_view(
    settings: Settings, view_name: str, to_version: int, author: str, message: str = ""
) -> VersionInfo:
    """Make version `to_version` of a view active again, as a new version."""
    checked_path(settings, FEATURES_FILE)  # refused before anything changes
    store = open_store(settings)
    with session_scope(settings.metadata_url) as session:
        active = version_rows(session, view_name)[-1]
        target = get_version(session, view_name, to_version)
        source_file = settings.data_dir / target.definition["source"]["file"]
        columns = set(pq.read_schema(source_file).names) if source_file.exists() else set()
        check_rollback_target(active, target, columns)

        previous_view = store.get_feature_view(view_name)
        view = build_view(store, target.definition)
        store.apply([view])
        try:
            if view.online:
                times = pd.read_parquet(source_file, columns=["event_timestamp"])["event_timestamp"]
                store.materialize(
                    start_date=times.min().to_pydatetime(),
                    end_date=(times.max() + timedelta(days=1)).to_pydatetime(),
                    feature_views=[view_name],
                )
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
    store_statistics(settings, _offline_frames(settings))
    with session_scope(settings.metadata_url) as session:
        return list_versions(session, view_name)[-1]
