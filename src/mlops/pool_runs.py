"""What Prefect knows of a flow run submitted to the work pool (`work_pool.py`), for the
reaper: whether a record that waits for its flow run may still be begun, and telling
Prefect that a run whose process the reaper found gone crashed."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mlops.errors import MlopsError, ServiceError, error_named
from mlops.settings import Settings

log = logging.getLogger(__name__)

WAITING_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})
"""Prefect state types of a flow run that may still run (a Late run is SCHEDULED)."""
MISSING = object()


def _read(flow_run_id: str) -> Any:
    """Prefect's flow run; MISSING when Prefect has no such run; None when Prefect cannot
    be asked (then nothing is decided from it)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(UUID(flow_run_id))
    except ObjectNotFound:
        return MISSING
    except Exception as exc:
        log.warning("Prefect could not be asked about flow run %s: %s", flow_run_id, exc)
        return None


def flow_run_state(settings: Settings, flow_run_id: str) -> tuple[str, str] | None:
    """(state type, state message or name) of a flow run; ("MISSING", ...) when Prefect
    has no such run; None when Prefect cannot be asked."""
    run = _read(flow_run_id)
    if run is None:
        return None
    if run is MISSING:
        return ("MISSING", f"Prefect has no flow run {flow_run_id}")
    if run.state is None:
        return ("SCHEDULED", "Scheduled")
    return (run.state.type.value, run.state.message or run.state.name or run.state.type.value)


def queued_run_gone(settings: Settings, flow_run_id: str, now: datetime) -> bool:
    """Whether a submitted flow run that has not begun its record can no longer do so:
    Prefect shows it ended (completed, failed, crashed, cancelled) or does not know it, or
    shows it running for longer than a heartbeat's grace (a flow begins its record first
    thing: its process died before it could). Unknown while Prefect is down: kept."""
    from mlops.runs import STALE_AFTER, aware

    run = _read(flow_run_id)
    if run is None:
        return False
    if run is MISSING or run.state is None:
        return run is MISSING
    state = run.state.type.value
    started = aware(run.start_time)
    stuck = state == "RUNNING" and started is not None and now - started > STALE_AFTER
    return state not in WAITING_STATES or stuck


def mark_crashed(settings: Settings, flow_run_id: str, message: str) -> None:
    """Tell Prefect that a flow run whose process is gone crashed (the platform's reaper
    found it; a worker killed with its flow-run process cannot say so). A run Prefect shows
    ended is left as it is."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    state = flow_run_state(settings, flow_run_id)
    if state is None or state[0] not in WAITING_STATES:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)
    except Exception as exc:  # Prefect's view lags; the platform's record is closed
        log.warning("Could not mark flow run %s crashed: %s", flow_run_id, exc)


def wait_ended(settings: Settings, flow_run_id: str, poll_s: float = 0.5) -> tuple[str, str]:
    """Block until Prefect shows the flow run ended (while Prefect is down, it waits for
    it to answer again); its final (state type, message)."""
    import time

    while True:
        state = flow_run_state(settings, flow_run_id)
        if state is not None and state[0] not in WAITING_STATES:
            return state
        time.sleep(poll_s)


def failure_of(state_type: str, message: str) -> MlopsError:
    """The error a failed flow run reported, as the platform's error class it names
    (Prefect words an exception as `<prefix>: <Class>: <message>`), so a submitter raises
    what a run in its own process would have raised, with the same exit code."""
    import re

    found = re.search(r"(\w+Error): (.*)$", message, flags=re.DOTALL)
    if found is None:
        return ServiceError(f"The flow run ended {state_type.lower()}: {message}")
    return error_named(found.group(1), found.group(2).strip())
