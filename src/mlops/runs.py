"""Who runs a piece of long work, and whether it still runs.

A run record names its owner (host, pid and process start time, so a reused pid is another
owner) and beats a heartbeat while it works. The reaper (`reaper.py`) closes a record whose
owner is dead, or whose heartbeat stopped: nothing stays "running" forever after a kill -9.
Run records use these through `run_records.py`; the Prefect server, `mlops up` and the
offline store's temp files use them directly.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from mlops.db import utcnow

HEARTBEAT_SECONDS = 15.0
STALE_AFTER = timedelta(minutes=2)
"""A running record whose heartbeat is older than this has lost its runner (on any host)."""


def _process_start(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


QUEUED_PREFIX = "prefect-flow-run:"
"""The owner of a record submitted to a work pool until a worker's process begins it."""


def queued_owner(flow_run_id: str) -> str:
    return f"{QUEUED_PREFIX}{flow_run_id}"


def queued_flow_run(owner: str | None) -> str | None:
    """The flow run a queued record waits for, if `owner` is one (see `work_pool.py`)."""
    if owner and owner.startswith(QUEUED_PREFIX):
        return owner.removeprefix(QUEUED_PREFIX)
    return None


def runner_of(owner: str | None, process: str = "the process running it") -> str:
    """Who runs a record, for messages: a process (`process` names its part), or the flow
    run on the work pool it waits for."""
    flow_run_id = queued_flow_run(owner)
    if flow_run_id is not None:
        return f"its flow run {flow_run_id} on the work pool"
    return f"{process} ({owner or 'unknown'})"


def current_owner() -> str:
    """This process: host, pid and start time."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> str:
    """Process `pid` of this host as an owner string (see `owner_alive`)."""
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def owner_alive(owner: str | None) -> bool | None:
    """Whether the owning process still runs; None when it runs on another host."""
    host, _, rest = (owner or "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname():
        return None
    if not pid.isdigit():
        return False
    return str(_process_start(int(pid))) == started


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives datetimes back without their zone; they were stored in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=utcnow().tzinfo)
    return value


def runner_gone(owner: str | None, heartbeat_at: datetime | None, now: datetime) -> bool:
    """The owner died (same host), or the heartbeat stopped (any host)."""
    beat = aware(heartbeat_at)
    return owner_alive(owner) is False or beat is None or now - beat > STALE_AFTER


@contextmanager
def heartbeat(beat: Callable[[], None], every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Call `beat` every `every` seconds in a daemon thread while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                beat()
            except Exception:  # a missed beat is retried; the work itself goes on
                continue

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
