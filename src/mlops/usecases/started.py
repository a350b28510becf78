"""A handle on long work that was recorded and started in this process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

RecordT = TypeVar("RecordT")


@dataclass(frozen=True)
class Started(Generic[RecordT]):
    """Work running in a background thread of this process, and its record.

    `record()` reads the record as it is now; `wait()` returns it once the work has done
    what a caller waits for (`finished`, which defaults to the thread's end)."""

    id: str
    thread: threading.Thread
    read: Callable[[str], RecordT]
    finished: Callable[[float | None], None] | None = None

    def record(self) -> RecordT:
        return self.read(self.id)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> RecordT:
        if self.finished is not None:
            self.finished(timeout)
        else:
            self.thread.join(timeout)
        return self.record()
