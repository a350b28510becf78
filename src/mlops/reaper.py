"""The reaper: closes the records of runs whose process is gone, for every kind of run
(deployments, evaluation runs, ingest runs; how each closes is its kind's hook, see
`run_records.py`).

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
    """Close the records of every kind whose runner is gone; how many runs it ended. A kind
    whose store fails is logged and left for the next pass; the other kinds go on."""
    ended = 0
    for kind in KINDS:
        try:
            ended += len(run_records.reap(settings, kind))
        except Exception as exc:  # a store down: the next pass (or start) tries again
            log.warning("closing interrupted %ss failed: %s", kind.label, exc)
    return ended


class ScheduledReaper:
    """`reap_interrupted` at once and then every `every` seconds, in a worker thread (off
    the event loop), from `start` until `stop`: the API's lifespan."""

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
            await asyncio.to_thread(reap_interrupted, self.settings)
            self.passes += 1
            await asyncio.sleep(self.every)
