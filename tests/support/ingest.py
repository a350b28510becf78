"""Data into the offline store through the real `ingest` flow, and read back from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.features.sources import BarsSource


def run_ingest_flow(
    settings: Settings,
    source: str | BarsSource = "demo",
    message: str = "test",
    date_format: str | None = None,
) -> Any:
    from flows.ingest import ingest_flow

    return ingest_flow(
        source=source,
        author="tester",
        message=message,
        settings=settings,
        date_format=date_format,
    )


def read_offline(settings: Settings, dataset: str) -> Any:
    """One dataset of the offline store's current snapshot, as a pandas frame."""
    from mlops.features.offline_state import open_snapshot

    snapshot = open_snapshot(settings)
    assert snapshot is not None, "nothing ingested"
    return snapshot.read(dataset)
