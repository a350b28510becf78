"""Evaluation records in the metadata store: a run (who asked for which suites and
versions, its status) and one row per finished (model version, suite) result or explanation,
so results appear while the run goes on and concurrent tasks never overwrite each other.

The run's lifecycle is `run_records.py`'s; an evaluation has no heartbeat, so its runner is
gone when its owner died on this host. The reaper fails such a run and its MLflow runs
left RUNNING, and marks plots a dead process was drawing as failed."""

from __future__ import annotations

import uuid
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select

from mlops import run_records
from mlops.db import Evaluation, EvaluationResult, session_scope
from mlops.errors import NotFoundError
from mlops.evaluation.comparison import SuiteComparison, compare
from mlops.evaluation.results import SuiteResult
from mlops.evaluation.runner import Plan
from mlops.fields import UtcDatetime
from mlops.run_records import RunKind, Statuses
from mlops.runs import runner_of
from mlops.settings import Settings

Status = Literal["pending", "running", "succeeded", "failed"]
SUITE, EXPLANATION = "suite", "explanation"


class Progress(BaseModel):
    done: int
    total: int


class EvaluationInfo(BaseModel):
    id: str
    status: Status
    verdict: Literal["passed", "failed", "error"] | None = Field(
        description="passed when every (model, suite) passed; None until the run has results"
    )
    suites: list[str]
    models: list[dict[str, str]]
    explain: bool
    requested_by: str
    reason: str
    progress: Progress
    data: dict[str, Any] = Field(description="Per suite: the rows it ran on.")
    results: list[SuiteResult]
    comparison: list[SuiteComparison]
    explained: list[str] = Field(description="Versions with an explanation, as 'name vN'.")
    plots: str = Field(
        description="pending (drawn after the results are recorded), done, skipped, or "
        "failed: <why>"
    )
    error: str | None
    flow_run_id: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class EvaluationSummary(BaseModel):
    id: str
    status: Status
    suites: list[str]
    models: list[dict[str, str]]
    requested_by: str
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


def _total(row: Evaluation) -> int:
    return len(row.models) * (len(row.suites) + (1 if row.explain else 0))


def create(settings: Settings, plan: Plan, explain: bool, caller: str, reason: str) -> str:
    """A pending record of a checked plan (its suites and versions, deduplicated)."""
    row = Evaluation(
        id=uuid.uuid4().hex,
        suites=list(plan.suites),
        models=[{"name": c.name, "version": c.version} for c in plan.candidates],
        explain=explain,
        requested_by=caller[:200],
        reason=reason,
        plan=plan.describe(),
    )
    with session_scope(settings.metadata_url) as session:
        session.add(run_records.opened(EVALUATIONS, row))
    return row.id


def begin(settings: Settings, evaluation_id: str, flow_run_id: str | None) -> None:
    """Mark the run running in this process (which may not be the one that recorded it)."""

    def start(row: Evaluation) -> None:
        row.flow_run_id = flow_run_id

    run_records.begin(settings, EVALUATIONS, evaluation_id, start)


def keep_alive(settings: Settings, evaluation_id: str) -> AbstractContextManager[None]:
    """Beat the run's heartbeat while the block runs it (its plots included)."""
    return run_records.keep_alive(settings, EVALUATIONS, evaluation_id)


def add_result(settings: Settings, evaluation_id: str, result: SuiteResult) -> None:
    with session_scope(settings.metadata_url) as session:
        session.add(
            EvaluationResult(
                evaluation_id=evaluation_id,
                kind=SUITE,
                model_name=result.model_name,
                version=result.version,
                suite=result.suite,
                status=result.status,
                payload=result.model_dump(mode="json"),
                mlflow_run_id=result.mlflow_run_id,
            )
        )


def add_explanation(
    settings: Settings, evaluation_id: str, model: str, version: str, payload: dict[str, Any]
) -> None:
    with session_scope(settings.metadata_url) as session:
        session.add(
            EvaluationResult(
                evaluation_id=evaluation_id,
                kind=EXPLANATION,
                model_name=model,
                version=version,
                suite="",
                status="error" if "importance" not in payload else "passed",
                payload={"model_name": model, "version": version, **payload},
                mlflow_run_id=payload.get("mlflow_run_id"),
            )
        )


def finish(settings: Settings, evaluation_id: str, error: str | None = None) -> None:
    """Close the run (failed with `error`); a run that ended already is left as it is."""

    def close(row: Evaluation) -> str:
        row.error = error
        if error:
            row.plots = "skipped"
        return "failed" if error else "succeeded"

    run_records.finish(settings, EVALUATIONS, evaluation_id, close, lambda _: None)


def set_plots(settings: Settings, evaluation_id: str, outcome: str) -> None:
    """Record how drawing the plots of a finished run ended."""
    with session_scope(settings.metadata_url) as session:
        _row(session, evaluation_id).plots = outcome


def _row(session: Any, evaluation_id: str) -> Evaluation:
    row = session.get(Evaluation, evaluation_id)
    if row is None:
        raise NotFoundError(
            f"No evaluation run '{evaluation_id}'.", {"evaluation_id": evaluation_id}
        )
    return row


class EvaluationRequest(BaseModel):
    suites: list[str]
    models: list[dict[str, str]]
    explain: bool
    plan: dict[str, Any]


def request_of(settings: Settings, evaluation_id: str) -> EvaluationRequest:
    """What a recorded run asked for, and the description of its checked plan."""
    with session_scope(settings.metadata_url) as session:
        row = _row(session, evaluation_id)
        return EvaluationRequest(
            suites=row.suites, models=row.models, explain=row.explain, plan=row.plan or {}
        )


def get(settings: Settings, evaluation_id: str) -> EvaluationInfo:
    """A run with its results so far, the comparison and the overall verdict."""
    with session_scope(settings.metadata_url) as session:
        row = _row(session, evaluation_id)
        rows = session.scalars(
            select(EvaluationResult)
            .where(EvaluationResult.evaluation_id == evaluation_id)
            .order_by(EvaluationResult.id)
        ).all()
    results = [SuiteResult.model_validate(r.payload) for r in rows if r.kind == SUITE]
    statuses = {r.status for r in results}
    verdict = None
    if results:
        verdict = "failed" if "failed" in statuses else "error" if "error" in statuses else None
        if verdict is None and row.status == "succeeded":
            verdict = "passed"
    pairs = [(m["name"], m["version"], s) for m in row.models for s in row.suites]
    order = {pair: i for i, pair in enumerate(pairs)}
    results.sort(key=lambda r: order.get((r.model_name, r.version, r.suite), len(order)))
    return EvaluationInfo(
        id=row.id,
        status=row.status,
        verdict=verdict,
        suites=row.suites,
        models=row.models,
        explain=row.explain,
        requested_by=row.requested_by,
        reason=row.reason,
        progress=Progress(done=len(rows), total=_total(row)),
        data=(row.plan or {}).get("data", {}),
        results=results,
        comparison=compare(results),
        explained=[f"{r.model_name} v{r.version}" for r in rows if r.kind == EXPLANATION],
        plots=row.plots,
        error=row.error,
        flow_run_id=row.flow_run_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def explanations(settings: Settings, evaluation_id: str) -> list[dict[str, Any]]:
    """The explanations of a run (404 for an unknown run)."""
    with session_scope(settings.metadata_url) as session:
        _row(session, evaluation_id)
        rows = session.scalars(
            select(EvaluationResult)
            .where(
                EvaluationResult.evaluation_id == evaluation_id,
                EvaluationResult.kind == EXPLANATION,
            )
            .order_by(EvaluationResult.id)
        ).all()
        return [dict(r.payload) for r in rows]


def result_run_ids(settings: Settings, evaluation_id: str) -> dict[tuple[str, str, str], str]:
    """(model, version, suite or '') -> MLflow run id, for artifact downloads."""
    with session_scope(settings.metadata_url) as session:
        _row(session, evaluation_id)
        rows = session.execute(
            select(
                EvaluationResult.model_name,
                EvaluationResult.version,
                EvaluationResult.suite,
                EvaluationResult.mlflow_run_id,
            ).where(EvaluationResult.evaluation_id == evaluation_id)
        ).all()
    return {(r[0], r[1], r[2]): r[3] for r in rows if r[3]}


def list_evaluations(
    settings: Settings, limit: int = 50, offset: int = 0
) -> list[EvaluationSummary]:
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(
            select(Evaluation).order_by(Evaluation.created_at.desc()).limit(limit).offset(offset)
        ).all()
        return [
            EvaluationSummary(
                id=r.id,
                status=r.status,
                suites=r.suites,
                models=r.models,
                requested_by=r.requested_by,
                created_at=r.created_at,
                finished_at=r.finished_at,
            )
            for r in rows
        ]


class LastRun(BaseModel):
    evaluation_id: str
    at: UtcDatetime
    outcome: Literal["passed", "failed", "error"]
    models: list[str]


def last_runs(settings: Settings) -> dict[str, LastRun]:
    """Per suite, its latest evaluation with results: when, on what, and the outcome."""
    with session_scope(settings.metadata_url) as session:
        latest = (
            select(EvaluationResult.suite, func.max(EvaluationResult.id).label("last_id"))
            .where(EvaluationResult.kind == SUITE)
            .group_by(EvaluationResult.suite)
            .subquery()
        )
        last_eval = select(EvaluationResult.suite, EvaluationResult.evaluation_id).join(
            latest, EvaluationResult.id == latest.c.last_id
        )
        pairs = session.execute(last_eval).all()
        if not pairs:
            return {}
        rows = session.execute(
            select(
                EvaluationResult.suite,
                EvaluationResult.evaluation_id,
                EvaluationResult.model_name,
                EvaluationResult.version,
                EvaluationResult.status,
                EvaluationResult.created_at,
            ).where(
                EvaluationResult.kind == SUITE,
                EvaluationResult.evaluation_id.in_({p.evaluation_id for p in pairs}),
                EvaluationResult.suite.in_({p.suite for p in pairs}),
            )
        ).all()
    wanted = {(p.suite, p.evaluation_id) for p in pairs}
    runs: dict[str, LastRun] = {}
    for row in rows:
        if (row.suite, row.evaluation_id) not in wanted:
            continue
        entry = runs.setdefault(
            row.suite,
            LastRun(
                evaluation_id=row.evaluation_id, at=row.created_at, outcome="passed", models=[]
            ),
        )
        entry.at = max(entry.at, row.created_at)
        entry.models.append(f"{row.model_name} v{row.version}")
        if row.status == "failed" or (row.status == "error" and entry.outcome == "passed"):
            entry.outcome = row.status
    return runs


def _close_interrupted(_settings: Settings, row: Evaluation, now: datetime) -> bool:
    """Fail a run whose process is gone; plots it was drawing will not come."""
    row.plots = "failed: the process drawing them stopped"
    if row.status not in EVALUATIONS.statuses.open:
        return False
    row.status, row.finished_at = "failed", now
    row.error = f"Interrupted: {runner_of(row.owner)} stopped."
    return True


def _fail_mlflow_runs(settings: Settings, evaluation_ids: list[str]) -> None:
    from mlops.evaluation.tracking import EVALUATION_TAG, EXPERIMENT
    from mlops.lifecycle import mlflow_backend

    client = mlflow_backend.client(settings)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return
    for evaluation_id in evaluation_ids:  # ids are uuid hex: safe inside the quotes
        for run in client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{EVALUATION_TAG}` = '{evaluation_id}' "
            "AND attributes.status = 'RUNNING'",
        ):
            client.set_terminated(run.info.run_id, "FAILED")


EVALUATIONS = RunKind(
    label="evaluation run",
    table=Evaluation,
    statuses=Statuses(open=("pending", "running"), ends=("succeeded", "failed")),
    close_interrupted=_close_interrupted,
    also_open=lambda: Evaluation.plots == "pending",
    after_reap=_fail_mlflow_runs,
)
