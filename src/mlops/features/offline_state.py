"""The committed state of the offline store, as every reader and writer opens it.

A store of the previous release is migrated on first open (`offline_changes.py`), so this
sits above the code that recomputes features and labels, and `offline.py` below it.
"""

from __future__ import annotations

import os

from mlops.features.offline import CURRENT, FEATURES_FILE, Snapshot, legacy_files
from mlops.features.offline_changes import migrate_legacy_store
from mlops.settings import Settings


def open_snapshot(settings: Settings) -> Snapshot | None:
    """The committed state (resolved once: read everything of one request from it), or
    None when nothing was ever ingested. Migrates a previous release's files first."""
    if legacy_files(settings.data_dir):
        migrate_legacy_store(settings)
    current = settings.data_dir / CURRENT
    try:
        target = os.readlink(current)
    except FileNotFoundError:
        return None
    return Snapshot((settings.data_dir / target).resolve())


def store_is_empty(settings: Settings) -> bool:
    snapshot = open_snapshot(settings)
    return snapshot is None or not snapshot.has(FEATURES_FILE)
