"""The steps of the ingest pipeline: load -> validate -> compute features -> write
offline data -> apply definitions -> materialize -> statistics -> record.

Each step is a plain function; `flows/ingest.py` wires them into a Prefect flow.
Nothing is written before validation has passed, so a rejected batch leaves the
offline store, the Feast registry and the online store as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import select

from mlops.db import IngestRun, session_scope, utcnow
from mlops.features.compute import compute_features, compute_labels
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import (
    BARS_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    consistency_problem,
    exclusive_write,
    remove_dead_temp_files,
    write_parquet_atomic,
)
from mlops.features.sources import BarsSource, load_layouts
from mlops.features.statistics import record_statistics
from mlops.features.store import load_repo_definitions, open_store
from mlops.features.validation import ValidationReport, ensure_valid
from mlops.features.vendor_files import LoadedBars, load_source
from mlops.features.versions import (
    VersionInfo,
    active_versions,
    feast_version_of,
    record_version,
    version_info,
    view_definition,
    views_to_apply,
)
from mlops.runs import current_owner, runner_gone
from mlops.settings import Settings

__all__ = [
    "BARS_FILE",
    "FEATURES_FILE",
    "LABELS_FILE",
    "BarsSource",
    "LoadedBars",
    "exclusive_write",
    "write_parquet_atomic",
]

DEMO_SOURCE = "demo"
INGEST_STEPS = (
    "load",
    "validate",
    "compute",
    "write_offline",
    "apply",
    "materialize",
    "statistics",
)
"""The steps the `ingest` flow records, in order (the CLI's progress bar counts them)."""


@dataclass
class OfflineFrames:
    bars: pd.DataFrame
    features: pd.DataFrame
    labels: pd.DataFrame


def load_batch(
    settings: Settings, source: str | BarsSource, date_format: str | None = None
) -> LoadedBars:
    """Read the files of a source (a path, or a ``BarsSource`` of vendor files), or generate
    the demo bars for 'demo'.

    ``date_format`` (strftime syntax) is how the files write their dates, over the
    source's own; without either, the one format that fits every date is used (see
    ``date_formats``).
    """
    if source == DEMO_SOURCE:
        demo = generate_ohlcv(
            n_tickers=settings.demo_tickers,
            start=settings.demo_start,
            end=settings.demo_end,
            seed=settings.demo_seed,
        )
        return LoadedBars(frame=demo, files=0)
    bars = source if isinstance(source, BarsSource) else BarsSource(paths=[str(source)])
    if date_format is not None:
        bars = bars.model_copy(update={"date_format": date_format})
    return load_source(bars, settings.ingest_max_bytes, load_layouts(settings))


def source_label(source: str | BarsSource) -> str:
    """How runs and validation reports name a source."""
    return source.describe() if isinstance(source, BarsSource) else source


def validate_batch(settings: Settings, bars: pd.DataFrame, source: str) -> ValidationReport:
    """Run the Great Expectations gate; raises DataValidationError with a stored report."""
    return ensure_valid(bars, source, settings.reports_dir)


def read_offline_bars(settings: Settings) -> pd.DataFrame | None:
    path = settings.data_dir / BARS_FILE
    return pd.read_parquet(path) if path.exists() else None


def merge_bars(settings: Settings, batch: pd.DataFrame) -> pd.DataFrame:
    """The offline bars with the batch's rows added (a batch row replaces the same day)."""
    batch = batch[["ticker", "date", "open", "high", "low", "close", "volume"]]
    existing = read_offline_bars(settings)
    if existing is None:
        merged = batch
    else:
        merged = pd.concat([existing, batch], ignore_index=True)
        merged = merged.drop_duplicates(["ticker", "date"], keep="last")
    return merged.sort_values(["ticker", "date"]).reset_index(drop=True)


def compute_offline_frames(bars: pd.DataFrame) -> OfflineFrames:
    """Features and labels for every bar (per ticker, no look-ahead in features)."""
    return OfflineFrames(bars=bars, features=compute_features(bars), labels=compute_labels(bars))


def write_offline(settings: Settings, frames: OfflineFrames) -> None:
    """Replace the offline parquet files (each written to a temp file, then renamed; bars
    first, see `offline.py` for what a kill between the renames leaves)."""
    settings.ensure_dirs()
    remove_dead_temp_files(settings.data_dir)
    write_parquet_atomic(frames.bars, settings.data_dir / BARS_FILE)
    write_parquet_atomic(frames.features, settings.data_dir / FEATURES_FILE)
    write_parquet_atomic(frames.labels, settings.data_dir / LABELS_FILE)


def apply_definitions(settings: Settings, author: str, message: str) -> list[VersionInfo]:
    """Apply the repository's definitions to Feast; record a version per changed view."""
    store = open_store(settings)
    repo = load_repo_definitions(settings)
    recorded = []
    with session_scope(settings.metadata_url) as session:
        changed = views_to_apply(session, repo.views)
        store.apply([*repo.entities, *repo.sources, *changed, *repo.services])
        active = active_versions(session)
        for view in changed:
            row = record_version(
                session,
                view_definition(view),
                origin="repo",
                author=author,
                message=message,
                feast_version=feast_version_of(store, view.name),
                previous=active.get(view.name),
            )
            recorded.append(row)
        infos = [version_info(r, active_version=r.version) for r in recorded]
    return infos


def online_view_names(settings: Settings) -> list[str]:
    store = open_store(settings)
    return [view.name for view in store.list_feature_views() if view.online]


def materialize(
    settings: Settings, start: datetime, end: datetime, views: list[str] | None = None
) -> list[str]:
    """Load the latest feature values in [start, end) into the online store."""
    store = open_store(settings)
    names = views if views is not None else online_view_names(settings)
    if names:
        store.materialize(start_date=start, end_date=end, feature_views=names)
    return names


def batch_window(
    batch: pd.DataFrame, ttl: timedelta = timedelta(days=7)
) -> tuple[datetime, datetime]:
    """The time window to materialize after ingesting a batch."""
    dates = pd.to_datetime(batch["date"])
    start = (dates.min() - ttl).to_pydatetime().replace(tzinfo=UTC)
    end = (dates.max() + timedelta(days=1)).to_pydatetime().replace(tzinfo=UTC)
    return start, end


def store_statistics(settings: Settings, frames: OfflineFrames) -> int:
    """Statistics and samples of every active view's features, stored per version."""
    with session_scope(settings.metadata_url) as session:
        return record_statistics(
            session,
            active_versions(session),
            {FEATURES_FILE: frames.features, LABELS_FILE: frames.labels},
        )


def start_run(settings: Settings, source: str, flow_run_id: str | None = None) -> int:
    settings.ensure_dirs()
    with session_scope(settings.metadata_url) as session:
        run = IngestRun(
            source=source,
            status="running",
            steps=[],
            flow_run_id=flow_run_id,
            owner=current_owner(),
            heartbeat_at=utcnow(),
        )
        session.add(run)
        session.flush()
        return run.id


def record_step(settings: Settings, run_id: int, name: str, seconds: float, status: str) -> None:
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        if run is not None:
            run.steps = [*run.steps, {"step": name, "seconds": round(seconds, 4), "status": status}]
            run.heartbeat_at = utcnow()


def beat(settings: Settings, run_id: int) -> None:
    """The run's heartbeat: readers close a `running` run whose heartbeat stopped."""
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        if run is not None and run.status == "running":
            run.heartbeat_at = utcnow()


def reap_interrupted(settings: Settings) -> int:
    """Close the runs whose process was killed (or lost its heartbeat) as `interrupted`."""
    now = utcnow()
    with session_scope(settings.metadata_url) as session:
        running = session.scalars(select(IngestRun).where(IngestRun.status == "running")).all()
        gone = [run for run in running if runner_gone(run.owner, run.heartbeat_at, now)]
        for run in gone:
            done = [s["step"] for s in run.steps if s.get("status") == "completed"]
            stopped_in = next((s for s in INGEST_STEPS if s not in done), INGEST_STEPS[-1])
            run.status, run.finished_at = "interrupted", now
            run.error = (
                f"The process running it ({run.owner or 'unknown'}) stopped during the "
                f"{stopped_in} step."
                + (
                    " The stores hold what the steps before it wrote."
                    if done
                    else " Nothing was written."
                )
            )
        return len(gone)


def finish_run(
    settings: Settings,
    run_id: int,
    status: str,
    *,
    rows: int | None = None,
    error: str | None = None,
    report_path: str | None = None,
) -> None:
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        if run is not None:
            run.status, run.rows, run.error, run.report_path = status, rows, error, report_path
            run.finished_at = utcnow()
            started = (
                run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
            )
            run.wall_seconds = (run.finished_at - started).total_seconds()


def latest_runs(settings: Settings, limit: int = 20) -> list[IngestRun]:
    reap_interrupted(settings)
    with session_scope(settings.metadata_url) as session:
        return list(session.scalars(select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)))


def store_is_empty(settings: Settings) -> bool:
    return not (settings.data_dir / FEATURES_FILE).exists()


def repair_offline(settings: Settings) -> str:
    """Make features and labels agree with the bars again (after an ingest was killed
    between its renames): recompute them from `bars.parquet`, write them, and load the
    last days into the online store. Bars are not touched; a consistent store is left as
    it is."""
    with exclusive_write(settings):
        removed = remove_dead_temp_files(settings.data_dir)
        problem = consistency_problem(settings)
        bars = read_offline_bars(settings)
        if problem is None or bars is None:
            return (
                "The offline store is consistent; nothing to repair "
                f"({len(removed)} leftover temp files removed)."
            )
        frames = compute_offline_frames(bars)
        write_parquet_atomic(frames.features, settings.data_dir / FEATURES_FILE)
        write_parquet_atomic(frames.labels, settings.data_dir / LABELS_FILE)
    last = pd.to_datetime(bars["date"]).max()
    materialize(settings, *batch_window(pd.DataFrame({"date": [last]})))
    store_statistics(settings, frames)
    return f"Repaired: {problem}. Features and labels were recomputed from {len(bars)} bars."
