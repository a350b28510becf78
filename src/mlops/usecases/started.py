"""A handle on long work that was recorded and started: in a background thread of this
process, or on a worker of the Prefect work pool (the cluster profile)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

RecordT = TypeVar("RecordT")
POLL_SECONDS = 0.25
"""How often the record of work on a worker is read again while waiting for it."""


@dataclass(frozen=True)
class Started(Generic[RecordT]):
    """Started work and its record.

    `record()` reads the record as it is now; `wait()` returns it once the work has done
    what a caller waits for: `finished` (defaults to the thread's end) for work in this
    process; for work on a worker (`thread` None), until `done` says so of the record."""

    id: str
    thread: threading.Thread | None
    read: Callable[[str], RecordT]
    finished: Callable[[float | None], None] | None = None
    done: Callable[[RecordT], bool] | None = None

    def record(self) -> RecordT:
        return self.read(self.id)

    @property
    def running(self) -> bool:
        if self.thread is not None:
            return self.thread.is_alive()
        return self.done is not None and not self.done(self.record())

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the work to end (for a progress display)."""
        if self.thread is not None:
            self.thread.join(timeout)
        elif self.running:
            time.sleep(timeout)

    def wait(self, timeout: float | None = None) -> RecordT:
        if self.thread is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.running and (deadline is None or time.monotonic() < deadline):
                time.sleep(POLL_SECONDS)
        elif self.finished is not None:
            self.finished(timeout)
        else:
            self.thread.join(timeout)
        return self.record()
