"""Prefect flow `ingest`: load -> validate -> compute -> write -> apply -> materialize
-> statistics, with each step a task and its wall time recorded on the ingest run."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from mlops.errors import DataValidationError, MlopsError
from mlops.features import ingest as steps
from mlops.features.offline import Snapshot
from mlops.features.sources import BarsSource
from mlops.settings import Settings, load_settings

T = TypeVar("T")


def _timed(
    settings: Settings,
    run_id: int,
    name: str,
    work: Callable[[], T],
    where: Callable[[T], str | None] | None = None,
) -> T:
    """Run a step and record its outcome and wall time (and where it ran, as `where` reads
    it from the step's result, when elsewhere than this process)."""
    started = time.perf_counter()
    try:
        result = work()
    except Exception:
        steps.record_step(settings, run_id, name, time.perf_counter() - started, "failed")
        raise
    ran_on = where(result) if where is not None else None
    steps.record_step(settings, run_id, name, time.perf_counter() - started, "completed", ran_on)
    return result


@task(name="load", cache_policy=NO_CACHE)
def load(settings: Settings, run_id: int, source: str | BarsSource, date_format: str | None) -> Any:
    return _timed(settings, run_id, "load", lambda: steps.load_batch(settings, source, date_format))


@task(name="validate", cache_policy=NO_CACHE)
def validate(settings: Settings, run_id: int, bars: Any, source: str) -> Any:
    return _timed(
        settings, run_id, "validate", lambda: steps.validate_batch(settings, bars, source)
    )


@task(name="compute-features", cache_policy=NO_CACHE)
def compute(settings: Settings, run_id: int, bars: Any) -> steps.OfflineChange:
    return _timed(
        settings,
        run_id,
        "compute",
        lambda: steps.compute_offline_frames(settings, bars),
        lambda change: change.computed_on,
    )


@task(name="write-offline", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def write(settings: Settings, run_id: int, change: steps.OfflineChange) -> Snapshot:
    return _timed(settings, run_id, "write_offline", lambda: steps.write_offline(settings, change))


@task(name="apply", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def apply(settings: Settings, run_id: int, author: str, message: str) -> list[Any]:
    return _timed(
        settings, run_id, "apply", lambda: steps.apply_definitions(settings, author, message)
    )


@task(name="materialize", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def materialize(
    settings: Settings, run_id: int, snapshot: Snapshot, tickers: list[str], changed: list[str]
) -> list[str]:
    return _timed(
        settings,
        run_id,
        "materialize",
        lambda: steps.materialize_after_ingest(settings, snapshot, tickers, changed),
    )


@task(name="statistics", cache_policy=NO_CACHE)
def statistics(settings: Settings, run_id: int, snapshot: Snapshot) -> int:
    return _timed(
        settings, run_id, "statistics", lambda: steps.store_statistics(settings, snapshot)
    )


@flow(name="ingest")
def ingest_flow(
    source: str | BarsSource = steps.DEMO_SOURCE,
    author: str | None = None,
    message: str = "ingest",
    settings: Settings | None = None,
    date_format: str | None = None,
    run_id: int | None = None,
    upload_dir: str | None = None,
) -> steps.IngestSummary:
    """Ingest a file of daily bars, vendor files (a ``BarsSource``: files, directories or
    globs with a column map and where tickers come from) or the demo data.

    ``date_format`` (strftime syntax, e.g. ``%d/%m/%Y``) is how the file writes its dates;
    by default the one format that fits every date of the file is used. ``run_id`` is a
    pending ingest run recorded by the caller (the API, which answered with its id); by
    default the flow records a run of its own. ``upload_dir``, the API's copy of uploaded
    files (a run on a work pool's worker), is removed when the flow ends.
    """
    settings = settings or load_settings()
    try:
        return _ingest(source, author, message, settings, date_format, run_id)
    finally:
        if upload_dir is not None:
            _remove_upload(settings, Path(upload_dir))


def _remove_upload(settings: Settings, folder: Path) -> None:
    """Remove an upload folder of the API's, and nothing else: the parameter comes from
    whoever starts the flow run (the Prefect UI too)."""
    uploads = (settings.home / "uploads").resolve()
    folder = folder.resolve()
    if folder.parent == uploads:
        shutil.rmtree(folder, ignore_errors=True)


def _ingest(
    source: str | BarsSource,
    author: str | None,
    message: str,
    settings: Settings,
    date_format: str | None,
    run_id: int | None,
) -> steps.IngestSummary:
    logger = get_run_logger()
    if run_id is None:
        label = steps.source_label(source)
        run_id = steps.start_run(settings, label, flow_run_id=str(flow_run.get_id() or ""))
    else:  # the caller named the source (an upload's folder is no name for the user)
        label = steps.begin_run(settings, run_id, flow_run_id=str(flow_run.get_id() or ""))
    try:
        with steps.keep_alive(settings, run_id):
            loaded: Any = load(settings, run_id, source, date_format)
            rows = len(loaded.frame)
            report: Any = validate(settings, run_id, loaded.frame, label)
            with steps.exclusive_write(settings):  # based on the latest snapshot
                change: steps.OfflineChange = compute(settings, run_id, loaded.frame)
                # Prefect keeps task results until the flow ends: let the batch and the
                # change go once they are written (a full ingest's largest frames).
                loaded.frame = loaded.frame.iloc[:0]
                snapshot: Snapshot = write(settings, run_id, change)
            tickers = change.starts.index.tolist()
            change.release()
            versions: list[Any] = apply(settings, run_id, author or settings.author, message)
            changed = sorted({v.view_name for v in versions})
            views: list[str] = materialize(settings, run_id, snapshot, tickers, changed)
            stats: int = statistics(settings, run_id, snapshot)
    except DataValidationError as exc:
        steps.finish_run(
            settings,
            run_id,
            "rejected",
            error=exc.message,
            error_code=exc.code,
            report_path=exc.details.get("report_path"),
        )
        logger.error("Batch rejected: %s", exc.message)
        raise
    except MlopsError as exc:
        steps.finish_run(settings, run_id, "failed", error=exc.message, error_code=exc.code)
        raise
    except Exception as exc:
        steps.finish_run(settings, run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    summary = steps.IngestSummary(
        run_id=run_id,
        rows=rows,
        files=loaded.files,
        ignored_columns=loaded.ignored_columns,
        new_versions=[f"{v.view_name}@v{v.version}" for v in versions],
        materialized=views,
        statistics=stats,
    )
    steps.finish_run(settings, run_id, "completed", rows=rows, summary=summary)
    if loaded.ignored_columns:
        logger.info("Columns not read: %s", ", ".join(loaded.ignored_columns))
    logger.info("Validation passed: %d expectations on %d rows", report.evaluated, rows)
    logger.info(
        "Ingested %d rows; %d new versions; materialized %s",
        rows,
        len(versions),
        ", ".join(views),
    )
    return summary
