"""Ingests the API accepted, each run in a warm child process of its own.

Importing Great Expectations, Feast and Prefect and building GX's context cost about 5 s
of CPU on the 2-core machine, several times what a one-day batch costs, so a fresh process
per ingest pays mostly imports. The API keeps a fork server instead (`multiprocessing`'s
``forkserver``): a process started once, which imports `mlops.features.ingest_warm` and
then forks one child per ingest. Each child starts with those imports done, runs the
`ingest` flow for its pending run record, and exits:

- its memory goes back to the system when it ends (a full ingest of 5M rows peaks near
  2 GB), so the API stays at its own size;
- a crash ends the child, not the API; the record is closed by `_close_after_exit`
  (or by the reaper, as for any runner that stopped).

The fork server is a fresh interpreter (not a fork of the API with its threads); each
child reports to the Prefect server the API uses at the time (handed over, since the fork
server may have started with another environment).
"""

from __future__ import annotations

import logging
import multiprocessing
import shutil
import sys
import threading
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from pathlib import Path

from mlops.errors import MlopsError
from mlops.features.sources import BarsSource
from mlops.settings import Settings

__all__ = ["WARM_MODULE", "start", "warm"]

WARM_MODULE = "mlops.features.ingest_warm"
log = logging.getLogger("mlops.ingest")
_LOCK = threading.Lock()
_CONTEXT: list[ForkServerContext] = []


def _context() -> ForkServerContext:
    with _LOCK:
        if not _CONTEXT:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([WARM_MODULE])
            _CONTEXT.append(context)
        return _CONTEXT[0]


def warm() -> None:
    """Start the fork server now and let it import what ingests need (the API's warm-up),
    so that the first ingest does not wait for it."""
    _context()
    forkserver.ensure_running()


def start(
    settings: Settings,
    run_id: int,
    source: BarsSource,
    author: str,
    message: str,
    upload_dir: Path | None = None,
) -> threading.Thread:
    """Run the pending ingest run ``run_id`` in a child of the fork server; the returned
    thread ends when the child has. ``upload_dir`` (the uploaded files) is removed then."""
    thread = threading.Thread(
        target=_watch,
        args=(settings, run_id, source, author, message, upload_dir),
        name=f"ingest-{run_id}",
        daemon=True,
    )
    thread.start()
    return thread


def _watch(
    settings: Settings,
    run_id: int,
    source: BarsSource,
    author: str,
    message: str,
    upload_dir: Path | None,
) -> None:
    try:
        child = _context().Process(
            target=run_child,
            args=(settings, run_id, source, author, message, _prefect_api_url()),
            name=f"mlops-ingest-{run_id}",
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            _close_after_exit(settings, run_id, child.exitcode)
    except Exception as exc:  # the child could not start: the record says why
        log.exception("Ingest run %s could not start", run_id)
        _close_after_exit(settings, run_id, None, f"{type(exc).__name__}: {exc}")
    finally:
        if upload_dir is not None:
            shutil.rmtree(upload_dir, ignore_errors=True)


def _prefect_api_url() -> str | None:
    if "prefect.settings" not in sys.modules:
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def run_child(
    settings: Settings,
    run_id: int,
    source: BarsSource,
    author: str,
    message: str,
    prefect_api_url: str | None,
) -> None:
    """The child's work: the `ingest` flow for the pending run (which records its outcome;
    a refused or failed batch exits with code 1 without a traceback)."""
    from flows.ingest import ingest_flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    updates = {PREFECT_API_URL: prefect_api_url} if prefect_api_url else {}
    try:
        with temporary_settings(updates=updates):
            ingest_flow(
                source=source, author=author, message=message, settings=settings, run_id=run_id
            )
    except MlopsError:
        raise SystemExit(1) from None


def _close_after_exit(
    settings: Settings, run_id: int, exitcode: int | None, reason: str | None = None
) -> None:
    """Close a record its child left open: a child that began the run and died is gone
    (the reaper's message names the step); a run still pending never began."""
    from mlops import run_records
    from mlops.db import IngestRun
    from mlops.features.ingest import RUNS, finish_run

    run_records.reap(settings, RUNS, IngestRun.id == run_id)
    why = reason or f"the ingest process exited with code {exitcode}; see the API's log"
    finish_run(settings, run_id, "failed", error=f"The ingest did not begin: {why}.")
