"""Requesting an evaluation: the request is checked completely and recorded, and the checked
plan (loaded versions, each suite's rows) is kept for the flow run that executes it."""

from __future__ import annotations

import threading

from mlops.evaluation import records
from mlops.evaluation.results import ModelRef
from mlops.evaluation.runner import EXPLAIN_ROWS, Plan, make_plan
from mlops.settings import Settings

_plans: dict[str, Plan] = {}
_finished: dict[str, threading.Event] = {}
_lock = threading.Lock()


def request_evaluation(
    settings: Settings,
    suites: list[str],
    models: list[ModelRef],
    explain: bool,
    caller: str,
    reason: str = "",
    explain_rows: int = EXPLAIN_ROWS,
) -> str:
    """Check and record an evaluation run (not yet run); 404/422 before anything is written."""
    plan = make_plan(settings, suites, models)
    plan.explain_rows = explain_rows
    evaluation_id = records.create(settings, plan, explain, caller, reason)
    with _lock:
        _plans[evaluation_id] = plan
        _finished[evaluation_id] = threading.Event()
    return evaluation_id


def mark_finished(evaluation_id: str) -> None:
    """The run's results are all recorded (its plots may still be drawn)."""
    with _lock:
        event = _finished.pop(evaluation_id, None)
    if event is not None:
        event.set()


def wait_finished(evaluation_id: str, timeout: float | None = None) -> None:
    """Wait until a run requested in this process has recorded all its results."""
    with _lock:
        event = _finished.get(evaluation_id)
    if event is not None:
        event.wait(timeout)


def discard_plan(evaluation_id: str) -> None:
    """Forget a plan whose run will not start (its frames and models are released)."""
    with _lock:
        _plans.pop(evaluation_id, None)


def take_plan(settings: Settings, evaluation_id: str) -> Plan:
    """The plan checked when the run was requested in this process, or checked again from
    the record (a run started elsewhere, e.g. from the Prefect UI)."""
    with _lock:
        plan = _plans.pop(evaluation_id, None)
    if plan is not None:
        return plan
    request = records.request_of(settings, evaluation_id)
    plan = make_plan(settings, request.suites, [ModelRef(**model) for model in request.models])
    plan.explain_rows = int(request.plan.get("explain_rows", EXPLAIN_ROWS))
    return plan
