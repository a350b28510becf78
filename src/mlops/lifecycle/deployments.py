"""Deployment records: one row of the metadata store per deployment or rollback, with one
record per stage (status, timings, gate results). What the stages do is in `promotion.py`.

Rules the records enforce:
- one deployment per model at a time: a unique column holds the model's name while a
  deployment is pending or running, so a second one gets 409, whichever process asks;
- only the process that runs a deployment writes to it (its owner: host, pid and process
  start time), one read-modify-write per stage transition (`run_records.py`); a record
  whose owner died, or whose heartbeat stopped, is closed by the reaper from what the
  registry shows, so nothing stays "running" forever;
- the production history (which versions production had, through which deployments) is
  replayed from the succeeded records, and is what a rollback follows;
- a deployment whose gate config asks for `approvals: N` stops after staging in
  `awaiting_approval`, with no process running it and the model's lock kept; N distinct
  approvers other than the requester open it again (`decide`: the one whose approval makes
  N starts its production stage), one rejection or the expiry ends it as `rejected`, and
  production is untouched until then.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from mlops import approvals, run_records
from mlops.approvals import Decision, DecisionInfo
from mlops.db import Deployment, locked_scope, session_scope, utcnow
from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.fields import UtcDatetime, as_utc
from mlops.lifecycle import registry
from mlops.lifecycle.gates import GateResult
from mlops.lifecycle.stage_records import StageRecord
from mlops.roles import Principal
from mlops.run_records import RunKind, Statuses
from mlops.runs import runner_of
from mlops.settings import Settings

log = logging.getLogger(__name__)

STAGE_NAMES = ("validate", "staging", "production")
TARGETS = ("staging", "production")
AWAITING = "awaiting_approval"
APPROVAL_KIND = "deployment"
"""How the approvals table names a deployment's decisions."""


class DeploymentInfo(BaseModel):
    id: str
    model_name: str
    version: str
    target_stage: str
    kind: Literal["deploy", "rollback"]
    status: Literal["pending", "running", "awaiting_approval", "succeeded", "failed", "rejected"]
    stages: list[StageRecord]
    previous_production: str | None
    failed_stage: str | None
    error: str | None
    requested_by: str
    reason: str
    flow_run_id: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    approvals_required: int = 0
    """Approvals production waits for (0: none asked)."""
    approvals: list[DecisionInfo] = []
    """The approvers' decisions, oldest first."""
    approval_expires_at: UtcDatetime | None = None

    def pending_stages(self) -> list[str]:
        """The stages still to run, in order."""
        return [s.name for s in self.stages if s.status == "pending"]

    @property
    def approvals_given(self) -> int:
        return approvals.approved(self.approvals)

    @property
    def approved(self) -> bool:
        """Whether the approvals it waited for were all given."""
        return self.approvals_required > 0 and self.approvals_given >= self.approvals_required


def _stages(row: Deployment) -> list[StageRecord]:
    return [StageRecord.model_validate(s) for s in row.stages]


def _store_stages(row: Deployment, stages: list[StageRecord]) -> None:
    row.stages = [s.model_dump(mode="json") for s in stages]


def _info(row: Deployment) -> DeploymentInfo:
    session = object_session(row)
    decided = (
        approvals.decisions(session, APPROVAL_KIND, row.id)
        if row.approvals_required and session is not None
        else []
    )
    return DeploymentInfo(
        id=row.id,
        model_name=row.model_name,
        version=row.version,
        target_stage=row.target_stage,
        kind=row.kind,
        status=row.status,
        stages=_stages(row),
        previous_production=row.previous_production,
        failed_stage=row.failed_stage,
        error=row.error,
        requested_by=row.requested_by,
        reason=row.reason,
        flow_run_id=row.flow_run_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        approvals_required=row.approvals_required or 0,
        approvals=decided,
        approval_expires_at=row.approval_expires_at,
    )


def _initial_stages(target: str, kind: str) -> list[StageRecord]:
    skipped = (
        {"staging"} if kind == "rollback" else {"production"} if target == "staging" else set()
    )
    return [
        StageRecord(
            name=name,
            status="skipped" if name in skipped else "pending",
            message="not part of this deployment" if name in skipped else "",
        )
        for name in STAGE_NAMES
    ]


def _new_record(
    settings: Settings, model: str, version: str, target: str, kind: str, caller: str, reason: str
) -> DeploymentInfo:
    """Insert a pending record holding the model's lock: 409 while another live deployment
    holds it; a holder whose runner is gone is closed first, which releases the lock."""
    run_records.reap(settings, DEPLOYMENTS, Deployment.active_model == model)
    row = Deployment(
        id=uuid.uuid4().hex,
        model_name=model,
        version=str(version),
        target_stage=target,
        kind=kind,
        requested_by=caller,
        reason=reason,
        active_model=model,
    )
    _store_stages(row, _initial_stages(target, kind))
    try:
        with session_scope(settings.metadata_url) as session:
            session.add(run_records.opened(DEPLOYMENTS, row))
    except IntegrityError as exc:
        with session_scope(settings.metadata_url) as session:
            active = session.scalars(
                select(Deployment).where(Deployment.active_model == model)
            ).first()
            active_id = active.id if active else None
            waiting = active is not None and active.status == AWAITING
        if waiting:
            raise ConflictError(
                f"Model '{model}' has a deployment awaiting approval ({active_id}): approvers "
                "approve or reject it first.",
                {"model": model, "active_deployment": active_id},
            ) from exc
        raise ConflictError(
            f"Model '{model}' already has a deployment in progress ({active_id}); wait for it "
            "to finish.",
            {"model": model, "active_deployment": active_id},
        ) from exc
    return _info(row)


def request_deployment(
    settings: Settings, model: str, version: str, target: str, caller: str, reason: str = ""
) -> DeploymentInfo:
    """Record a deployment of `model` version `version` towards `target` (not yet run)."""
    if target not in TARGETS:
        raise InvalidInputError(
            f"Unknown target stage '{target}': use one of {', '.join(TARGETS)}.",
            {"target_stage": target},
        )
    registry.get_version(settings, model, version)  # 404 for an unknown model or version
    return _new_record(settings, model, version, target, "deploy", caller, reason)


def production_history(settings: Settings, model: str) -> list[str]:
    """The versions production had through the platform, oldest first, rolled-back ones
    removed: replayed from the succeeded deployments to production and the rollbacks."""
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(
            select(Deployment)
            .where(
                Deployment.model_name == model,
                Deployment.status == "succeeded",
                Deployment.target_stage == "production",
            )
            .order_by(Deployment.finished_at.asc())
        ).all()
        changes = [(row.kind, row.version) for row in rows]
    history: list[str] = []
    for kind, version in changes:
        if kind == "rollback" and history:
            history.pop()
        if not history or history[-1] != version:
            history.append(version)
    return history


def rollback_target(
    settings: Settings, model: str, expected_current: str | None = None
) -> tuple[str, str]:
    """(version to restore, current production version).

    A production alias moved outside the platform is recorded in the ledger first, and
    blocks the rollback (409) until an approver acknowledges it; the rollback then
    restores the version the platform last put there. Also refused (409) when there is
    nothing to go back to, or when production is no longer `expected_current`.
    """
    from mlops.lifecycle import ledger

    registry.get_model(settings, model)  # 404 for an unknown model
    history = production_history(settings, model)
    ledger.detect_external_moves(
        settings, model, {registry.PRODUCTION_ALIAS: history[-1]} if history else None
    )
    moved = [c for c in ledger.unacknowledged(settings, model) if c.alias == "production"]
    if moved:
        change = moved[0]
        raise ConflictError(
            f"Production of '{model}' was moved outside the platform (v{change.from_version} "
            f"-> v{change.to_version}, seen {change.changed_at:%Y-%m-%d %H:%M} UTC): an "
            f"approver acknowledges it first (mlops models acknowledge {model} --comment ..., "
            "or the model's page); a rollback then restores "
            f"v{history[-1] if history else change.from_version}.",
            {"model": model, "alias": change.to_version, "recorded": change.from_version},
        )
    current = registry.alias_version(settings, model, registry.PRODUCTION_ALIAS)
    if expected_current is not None and current != expected_current:
        raise ConflictError(
            f"Production of '{model}' is now v{current}, not v{expected_current}.",
            {"model": model, "current": current, "expected": expected_current},
        )
    if history and current is not None and current != history[-1]:  # acknowledged
        return history[-1], current
    if len(history) < 2 or current is None:
        raise ConflictError(
            f"Model '{model}' has no previous production version to roll back to.",
            {"model": model},
        )
    return history[-2], current


def request_rollback(
    settings: Settings,
    model: str,
    caller: str,
    reason: str = "",
    expected_current: str | None = None,
) -> DeploymentInfo:
    """Record a rollback of `model` to the production version before the current one."""
    version, current = rollback_target(settings, model, expected_current)
    reason = reason or f"roll back from v{current}"
    return _new_record(settings, model, version, "production", "rollback", caller, reason)


def get_deployment(settings: Settings, deployment_id: str) -> DeploymentInfo:
    with session_scope(settings.metadata_url) as session:
        row = session.get(Deployment, deployment_id)
        if row is None:
            raise NotFoundError(f"No deployment '{deployment_id}'.", {"id": deployment_id})
        return _info(row)


def resolve_deployment_id(settings: Settings, prefix: str) -> str:
    """The full id of the one deployment whose id starts with `prefix`."""
    with session_scope(settings.metadata_url) as session:
        ids = session.scalars(
            select(Deployment.id).where(Deployment.id.startswith(prefix.lower())).limit(2)
        ).all()
    if not ids:
        raise NotFoundError(f"No deployment '{prefix}'.", {"id": prefix})
    if len(ids) > 1:
        raise InvalidInputError(f"'{prefix}' matches several deployments: give more of the id.")
    return ids[0]


def list_deployments(
    settings: Settings, model: str | None = None, limit: int = 50, offset: int = 0
) -> list[DeploymentInfo]:
    """Deployments and rollbacks, newest first (the audit history)."""
    statement = select(Deployment).order_by(Deployment.created_at.desc())
    if model:
        statement = statement.where(Deployment.model_name == model)
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(statement.limit(limit).offset(offset)).all()
        return [_info(row) for row in rows]


_ALIAS_OF_STAGE = {"staging": registry.STAGING_ALIAS, "production": registry.PRODUCTION_ALIAS}


def _close_interrupted(settings: Settings, row: Deployment, now: datetime) -> bool:
    """Close the record of a gone runner from what the registry shows, not from how far
    the record got: a process can die after an alias moved and before it wrote that down.
    Succeeded when the target stage passed. When the registry cannot be read the record
    stays open for a later pass (never guessed)."""
    try:
        moved = {s.name for s in _stages(row) if _alias_moved(settings, row, s)}
    except Exception as exc:  # registry down: close it once the registry answers
        log.warning("deployment %s: runner gone, registry unreadable (%s)", row.id, exc)
        return False
    stages = [s.as_the_registry_shows(s.name in moved) for s in _stages(row)]
    _store_stages(row, stages)
    status = {s.name: s.status for s in stages}
    succeeded = status[row.target_stage] == "passed" and "failed" not in status.values()
    target = {_ALIAS_OF_STAGE[row.target_stage]} if succeeded else set()
    for alias in sorted({_ALIAS_OF_STAGE[name] for name in moved} | target):
        _record_unrecorded_move(settings, row, alias)
    failed_stage = next((s.name for s in stages if s.status == "failed"), None)
    row.status = "succeeded" if succeeded else "failed"
    row.failed_stage = None if succeeded else failed_stage
    passed = [s.name for s in stages if s.status == "passed"]
    when = (
        f"during the {failed_stage} stage"
        if failed_stage
        else f"after the {passed[-1]} stage"
        if passed
        else "before it started"
    )
    row.error = (
        None
        if succeeded
        else f"Interrupted: {runner_of(row.owner)} stopped {when}. "
        f"{row.target_stage.capitalize()} was not moved by it; deploy again to retry."
    )
    row.active_model = None
    row.finished_at = now
    return True


def _record_unrecorded_move(settings: Settings, row: Deployment, alias: str) -> None:
    """Put in the ledger a move the gone runner made and may not have recorded (it died
    between MLflow's move and the ledger's), so it is not taken for a move made outside
    the platform. Bookkeeping: a failure is logged."""
    from mlops.lifecycle import ledger

    try:
        last = next((c for c in ledger.history(settings, row.model_name) if c.alias == alias), None)
        if last is not None and last.to_version == row.version:
            return  # the runner recorded it before it stopped
        ledger.record(
            settings,
            row.model_name,
            alias,
            last.to_version if last else None,
            row.version,
            by=row.requested_by,
            reason=f"{row.reason} (recorded when the deployment was closed: its process "
            "stopped right after the move)".strip(),
            deployment_id=row.id,
        )
    except Exception as exc:
        log.warning("deployment %s: the %s move is not in the ledger (%s)", row.id, alias, exc)


def _alias_moved(settings: Settings, row: Deployment, stage: StageRecord) -> bool:
    """Whether the alias a running stage moves points at the deployment's version."""
    alias = _ALIAS_OF_STAGE.get(stage.name)
    if stage.status != "running" or alias is None:
        return False
    return registry.alias_version(settings, row.model_name, alias) == row.version


def _end_waiting(row: Deployment, now: datetime, error: str) -> None:
    """End a deployment awaiting approval as rejected: production was never touched."""
    run_records.check_change(DEPLOYMENTS, row.id, row.status, "rejected")
    _store_stages(
        row,
        [
            s.closed().model_copy(update={"message": "not moved: " + error})
            if s.status == "pending"
            else s.closed()
            for s in _stages(row)
        ],
    )
    row.status, row.error = "rejected", error
    row.active_model = None
    row.finished_at = now


def _expired(session: Session, row: Deployment, now: datetime) -> str | None:
    """Why a deployment awaiting approval has expired (None: it has not)."""
    expires = row.approval_expires_at
    if expires is None or as_utc(expires) > now:
        return None
    given = approvals.approved(approvals.decisions(session, APPROVAL_KIND, row.id))
    return (
        f"Expired at {expires:%Y-%m-%d %H:%M} UTC with {given} of {row.approvals_required} "
        "approvals; production unchanged."
    )


def _end_overdue(settings: Settings, where: ColumnElement[bool] | None, now: datetime) -> list[str]:
    """End the deployments that waited for their approvals past their expiry."""
    statement = select(Deployment.id).where(
        Deployment.status == AWAITING, Deployment.approval_expires_at <= now
    )
    if where is not None:
        statement = statement.where(where)
    with session_scope(settings.metadata_url) as session:
        overdue = session.scalars(statement).all()
    ended = []
    for deployment_id in overdue:
        with locked_scope(settings.metadata_url) as session:
            row = session.get(Deployment, deployment_id, with_for_update=True)
            if row is None or row.status != AWAITING:
                continue
            why = _expired(session, row, now)
            if why is not None:
                _end_waiting(row, now, why)
                ended.append(deployment_id)
    return ended


DEPLOYMENTS = RunKind(
    label="deployment",
    table=Deployment,
    statuses=Statuses(
        open=("pending", "running"), ends=("succeeded", "failed", "rejected"), waiting=(AWAITING,)
    ),
    close_interrupted=_close_interrupted,
    end_overdue=_end_overdue,
)


def await_approvals(
    settings: Settings, deployment_id: str, required: int, expiry_hours: float
) -> DeploymentInfo:
    """Stop the running deployment to wait for `required` approvals, for `expiry_hours`:
    this process lets go of it (no runner, no heartbeat) and it keeps the model's lock."""

    def wait(row: Deployment) -> DeploymentInfo:
        row.status, row.owner = AWAITING, ""
        row.approvals_required = required
        row.approval_expires_at = utcnow() + timedelta(hours=expiry_hours)
        return _info(row)

    return run_records.change(settings, DEPLOYMENTS, deployment_id, wait)


def decide(
    settings: Settings, deployment_id: str, caller: Principal, decision: Decision, comment: str
) -> tuple[DeploymentInfo, bool]:
    """Record an approver's decision on a deployment awaiting approval: (the record then,
    whether this decision made it approved). The approval that completes the count opens
    the record again with this process as its owner, which then starts it (the production
    stage); a rejection ends it. Refused: not awaiting approval, or expired (409; an
    expired one is ended here), and what `approvals.decide` refuses."""
    now = utcnow()
    with locked_scope(settings.metadata_url) as session:
        row = session.get(Deployment, deployment_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"No deployment '{deployment_id}'.", {"id": deployment_id})
        if row.status != AWAITING:
            raise ConflictError(
                f"Deployment {deployment_id} is {row.status}: it is not awaiting approval.",
                {"id": deployment_id, "status": row.status},
            )
        expired = _expired(session, row, now)
        ready = False
        if expired is not None:
            _end_waiting(row, now, expired)
        else:
            what = f"deployment {deployment_id[:8]} of {row.model_name} v{row.version}"
            found = approvals.decide(
                session,
                APPROVAL_KIND,
                deployment_id,
                requester=row.requested_by,
                caller=caller,
                decision=decision,
                comment=comment,
                what=what,
            )
            if decision == "reject":
                _end_waiting(row, now, f"Rejected by {caller.name}: {comment}")
            elif approvals.approved(found) >= row.approvals_required:
                run_records.reopened(DEPLOYMENTS, row)
                row.flow_run_id = None  # the run that stopped to wait is over
                ready = True
        info = _info(row)
    if expired is not None:
        raise ConflictError(expired, {"id": deployment_id, "status": "rejected"})
    return info, ready


def keep_alive(settings: Settings, deployment_id: str) -> AbstractContextManager[None]:
    """Beat the deployment's heartbeat while the block runs it."""
    return run_records.keep_alive(settings, DEPLOYMENTS, deployment_id)


def begin(settings: Settings, deployment_id: str, flow_run_id: str | None) -> DeploymentInfo:
    """Mark the deployment running in this process; the record then."""

    def start(row: Deployment) -> DeploymentInfo:
        row.flow_run_id = flow_run_id
        return _info(row)

    return run_records.begin(settings, DEPLOYMENTS, deployment_id, start)


def start_stage(settings: Settings, deployment_id: str, stage: str) -> DeploymentInfo:
    """Mark `stage` running; the record then (what the stage runs on)."""

    def start(row: Deployment) -> DeploymentInfo:
        _store_stages(row, [s.started(utcnow()) if s.name == stage else s for s in _stages(row)])
        return _info(row)

    return run_records.change(settings, DEPLOYMENTS, deployment_id, start)


def record_replaced_version(settings: Settings, deployment_id: str, previous: str | None) -> None:
    """Write down the production version the deployment replaces, before `production`
    moves: a crash right after the move still leaves a record a rollback can follow."""

    def note(row: Deployment) -> None:
        row.previous_production = previous

    run_records.change(settings, DEPLOYMENTS, deployment_id, note)


def end_stage(
    settings: Settings, deployment_id: str, stage: str, gates: list[GateResult], message: str
) -> bool:
    """Record a running stage's gates; it passed when there are gates and every one passed."""

    def end(row: Deployment) -> bool:
        stages = [s.ended(gates, message, utcnow()) if s.name == stage else s for s in _stages(row)]
        _store_stages(row, stages)
        passed = next(s for s in stages if s.name == stage).status == "passed"
        if not passed:
            row.failed_stage, row.error = stage, f"{stage} failed: {message}"
        return passed

    return run_records.change(settings, DEPLOYMENTS, deployment_id, end)


def finish(settings: Settings, deployment_id: str, error: str | None = None) -> DeploymentInfo:
    """Close the deployment: succeeded when every stage it ran passed; release the model.

    A record this process no longer owns (closed by the reaper meanwhile) is left as it is.
    """

    def close(row: Deployment) -> str:
        stages = [s.closed() for s in _stages(row)]
        _store_stages(row, stages)
        if error and not row.error:
            row.error = error
        row.active_model = None
        failed = error is not None or any(s.status == "failed" for s in stages)
        return "failed" if failed else "succeeded"

    return run_records.finish(settings, DEPLOYMENTS, deployment_id, close, _info)
