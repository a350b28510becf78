"""What Prefect knows of a flow run submitted to the work pool (`work_pool.py`), for the
reaper: whether a record that waits for its flow run may still be begun, and telling
Prefect that a run whose process the reaper found gone crashed."""

from __future__ import annotations

import logging

from mlops.errors import MlopsError, ServiceError, error_named
from mlops.settings import Settings

log = logging.getLogger(__name__)

WAITING_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})
"""Prefect state types of a flow run that may still run (a Late run is SCHEDULED)."""


def flow_run_state(settings: Settings, flow_run_id: str) -> tuple[str, str] | None:
    """(state type, state message or name) of a flow run; ("MISSING", ...) when Prefect
    has no such run; None when Prefect cannot be asked (then nothing is decided from it)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except ObjectNotFound:
        return ("MISSING", f"Prefect has no flow run {flow_run_id}")
    except Exception as exc:
        log.warning("Prefect could not be asked about flow run %s: %s", flow_run_id, exc)
        return None
    if run.state is None:
        return ("SCHEDULED", "Scheduled")
    return (run.state.type.value, run.state.message or run.state.name or run.state.type.value)


def queued_run_gone(settings: Settings, flow_run_id: str) -> bool:
    """Whether a submitted flow run that has not begun its record can no longer do so:
    Prefect shows it ended (completed, failed, crashed, cancelled) or does not know it.
    Unknown while Prefect is down: then it is kept."""
    state = flow_run_state(settings, flow_run_id)
    return state is not None and state[0] not in WAITING_STATES


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
