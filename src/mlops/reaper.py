"""The reaper: closes the records of runs whose process is gone, for every kind of run
(deployments, evaluation runs, ingest runs; how each closes is its kind's hook, see
`run_records.py`), and rejects what waited for its approvers past its expiry.

Readers never reap, so a GET never writes. The reaper runs once when a process that
serves or starts work starts (the API's start-up, `mlops up`, the CLI commands that start
or show runs) and every `Settings.reap_every_s` inside the API: a run killed while the API
serves is closed within that interval (2 minutes more when only its heartbeat tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mlops import run_records
from mlops.evaluation.records import EVALUATIONS
from mlops.features.ingest import RUNS
from mlops.lifecycle.deployments import DEPLOYMENTS
from mlops.run_records import RunKind
from mlops.settings import Settings

log = logging.getLogger(__name__)

KINDS: tuple[RunKind[Any], ...] = (DEPLOYMENTS, EVALUATIONS, RUNS)


def reap_interrupted(settings: Settings) -> int:
    """Close the records of every kind whose runner is gone, and end what waited for its
    approvers past its expiry (deployments, prompt publications); how many it ended. A
    kind whose store fails is logged and left for the next pass; the other kinds go on."""
    from mlops.prompts import publications

    ended = 0
    for kind in KINDS:
        try:
            ended += len(run_records.reap(settings, kind))
        except Exception as exc:  # a store down: the next pass (or start) tries again
            log.warning("closing interrupted %ss failed: %s", kind.label, exc)
    try:
        ended += len(publications.end_overdue(settings))
        ended += len(publications.recover_publishing(settings))
    except Exception as exc:
        log.warning("settling publication requests failed: %s", exc)
    return ended


def watch_aliases(settings: Settings) -> int:
    """Record the alias moves made outside the platform since the last pass (one MLflow
    query for every model, `ledger.detect_external_moves`; one `git for-each-ref` for the
    prompts' live tags); how many it found. A store that does not answer is logged and
    tried at the next pass."""
    from mlops.lifecycle import ledger

    try:
        found = ledger.detect_external_moves(settings)
    except Exception as exc:
        log.warning("checking the aliases for moves made outside the platform failed: %s", exc)
        found = []
    for change in found:
        log.warning(
            "%s of %s was moved outside the platform: v%s -> v%s",
            change.alias,
            change.model_name,
            change.from_version,
            change.to_version,
        )
    return len(found) + _watch_live_tags(settings)


def _watch_live_tags(settings: Settings) -> int:
    """The same for the prompts' live tags (`git tag -f`), when the repository exists."""
    if not (settings.prompts_dir / ".git").exists():
        return 0
    from mlops.prompts import publishing
    from mlops.prompts.store import open_store

    try:
        moved = publishing.detect_label_moves(open_store(settings))
    except Exception as exc:
        log.warning("checking the prompts' live tags failed: %s", exc)
        return 0
    for name in moved:
        log.warning("the live tag of prompt %s was moved outside the platform", name)
    return len(moved)


def _scheduled_pass(settings: Settings) -> None:
    reap_interrupted(settings)
    watch_aliases(settings)


class ScheduledReaper:
    """`reap_interrupted` and `watch_aliases` at once and then every `every` seconds, in a
    worker thread (off the event loop), from `start` until `stop`: the API's lifespan."""

    def __init__(self, settings: Settings, every: float) -> None:
        self.settings, self.every = settings, every
        self.passes = 0
        """Passes completed, the first one at start-up."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reaper")

    async def stop(self) -> None:
        """Cancel the schedule; a pass under way finishes in its thread."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(_scheduled_pass, self.settings)
            self.passes += 1
            await asyncio.sleep(self.every)
