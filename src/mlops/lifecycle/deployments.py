"""Staged deployment of registered model versions: validate -> staging -> production.

A deployment is a row of the metadata store with one record per stage (status, timings, the
gate results). The `deploy` Prefect flow runs one task per stage through the functions
below. Safety rules:
- an alias moves only after the gates of its stage passed, and `production` only in a
  deployment whose validate and staging stages passed (a rollback re-validates a version
  that passed them before);
- one deployment per model at a time (a unique column holds the model's name while a
  deployment is pending or running), a second one gets 409;
- a deployment whose process died is marked failed ("interrupted") by the next reader.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from mlops.db import Deployment, session_scope, utcnow
from mlops.errors import ConflictError, InvalidInputError, MlopsError, NotFoundError
from mlops.lifecycle import registry
from mlops.lifecycle.gates import GateResult
from mlops.settings import Settings

STAGE_NAMES = ("validate", "staging", "production")
TARGETS = ("staging", "production")
StageStatus = Literal["pending", "running", "passed", "failed", "skipped"]
STALE_AFTER = timedelta(minutes=10)
"""A running deployment whose heartbeat is older than this (on another host) is interrupted."""


class StageRecord(BaseModel):
    name: str
    status: StageStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    message: str = ""
    gates: list[GateResult] = []


class DeploymentInfo(BaseModel):
    id: str
    model_name: str
    version: str
    target_stage: str
    kind: Literal["deploy", "rollback"]
    status: Literal["pending", "running", "succeeded", "failed"]
    stages: list[StageRecord]
    previous_production: str | None
    failed_stage: str | None
    error: str | None
    requested_by: str
    reason: str
    flow_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str


def _info(row: Deployment) -> DeploymentInfo:
    return DeploymentInfo(
        id=row.id,
        model_name=row.model_name,
        version=row.version,
        target_stage=row.target_stage,
        kind=row.kind,
        status=row.status,
        stages=[StageRecord.model_validate(s) for s in row.stages],
        previous_production=row.previous_production,
        failed_stage=row.failed_stage,
        error=row.error,
        requested_by=row.requested_by,
        reason=row.reason,
        flow_run_id=row.flow_run_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status_url=f"/api/v1/ml/deployments/{row.id}",
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool | None:
    """Whether the owning process runs; None when it runs on another host (unknowable)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------- requests


def _initial_stages(target: str, kind: str) -> list[dict[str, Any]]:
    skipped = {"production"} if target == "staging" else set()
    if kind == "rollback":
        skipped = {"staging"}
    return [
        StageRecord(
            name=name,
            status="skipped" if name in skipped else "pending",
            message="not part of this deployment" if name in skipped else "",
        ).model_dump(mode="json")
        for name in STAGE_NAMES
    ]


def _insert(settings: Settings, row: Deployment) -> DeploymentInfo:
    reap_interrupted(settings)
    try:
        with session_scope(settings.metadata_url) as session:
            session.add(row)
    except IntegrityError as exc:
        with session_scope(settings.metadata_url) as session:
            active = session.scalars(
                select(Deployment).where(Deployment.active_model == row.model_name)
            ).first()
            active_id = active.id if active else None
        raise ConflictError(
            f"Model '{row.model_name}' already has a deployment in progress ({active_id}); "
            "wait for it to finish.",
            {"model": row.model_name, "active_deployment": active_id},
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
    row = Deployment(
        id=uuid.uuid4().hex,
        model_name=model,
        version=str(version),
        target_stage=target,
        kind="deploy",
        status="pending",
        stages=_initial_stages(target, "deploy"),
        requested_by=caller,
        reason=reason,
        owner=_owner(),
        active_model=model,
        heartbeat_at=utcnow(),
    )
    return _insert(settings, row)


def rollback_target(settings: Settings, model: str) -> tuple[str, str]:
    """(version to restore, current production version) from the last production change."""
    registry.get_model(settings, model)
    with session_scope(settings.metadata_url) as session:
        last = session.scalars(
            select(Deployment)
            .where(
                Deployment.model_name == model,
                Deployment.status == "succeeded",
                Deployment.target_stage == "production",
            )
            .order_by(Deployment.finished_at.desc())
        ).first()
        if last is None or not last.previous_production:
            raise ConflictError(
                f"Model '{model}' has no previous production version to roll back to.",
                {"model": model},
            )
        return last.previous_production, last.version


def request_rollback(
    settings: Settings, model: str, caller: str, reason: str = ""
) -> DeploymentInfo:
    """Record a rollback of `model` to the production version before the current one."""
    version, current = rollback_target(settings, model)
    row = Deployment(
        id=uuid.uuid4().hex,
        model_name=model,
        version=version,
        target_stage="production",
        kind="rollback",
        status="pending",
        stages=_initial_stages("production", "rollback"),
        requested_by=caller,
        reason=reason or f"roll back from v{current}",
        owner=_owner(),
        active_model=model,
        heartbeat_at=utcnow(),
    )
    return _insert(settings, row)


# ---------------------------------------------------------------------------- reads


def get_deployment(settings: Settings, deployment_id: str) -> DeploymentInfo:
    reap_interrupted(settings)
    with session_scope(settings.metadata_url) as session:
        row = session.get(Deployment, deployment_id)
        if row is None:
            raise NotFoundError(f"No deployment '{deployment_id}'.", {"id": deployment_id})
        return _info(row)


def list_deployments(
    settings: Settings, model: str | None = None, limit: int = 50, offset: int = 0
) -> list[DeploymentInfo]:
    """Deployments and rollbacks, newest first (the audit history)."""
    reap_interrupted(settings)
    statement = select(Deployment).order_by(Deployment.created_at.desc())
    if model:
        statement = statement.where(Deployment.model_name == model)
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(statement.limit(limit).offset(offset)).all()
        return [_info(row) for row in rows]


def reap_interrupted(settings: Settings) -> int:
    """Mark deployments whose process died as failed; release their model. Returns how many."""
    now = utcnow()
    reaped = 0
    with session_scope(settings.metadata_url) as session:
        rows = session.scalars(
            select(Deployment).where(Deployment.status.in_(("pending", "running")))
        ).all()
        for row in rows:
            beat = row.heartbeat_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=now.tzinfo)
            alive = _owner_alive(row.owner)
            stale = beat is None or now - beat > STALE_AFTER
            if alive or (alive is None and not stale):  # another host: judged by heartbeat
                continue
            stages = [dict(s) for s in row.stages]
            running = next((s["name"] for s in stages if s["status"] == "running"), None)
            for stage in stages:
                if stage["status"] == "running":
                    stage["status"], stage["message"] = "failed", "interrupted"
                elif stage["status"] == "pending":
                    stage["status"] = "skipped"
            row.stages = stages
            row.status = "failed"
            row.failed_stage = running
            row.error = (
                f"Interrupted: the process running it ({row.owner}) stopped"
                + (f" during the {running} stage." if running else " before it started.")
                + " Aliases only move after their gates pass; deploy again to retry."
            )
            row.active_model = None
            row.finished_at = now
            reaped += 1
    return reaped


# ---------------------------------------------------------------------------- stage updates


def _update(settings: Settings, deployment_id: str, **changes: Any) -> DeploymentInfo:
    with session_scope(settings.metadata_url) as session:
        row = session.get(Deployment, deployment_id)
        if row is None:
            raise NotFoundError(f"No deployment '{deployment_id}'.", {"id": deployment_id})
        stage_changes = changes.pop("stage", None)
        if stage_changes is not None:
            name, values = stage_changes
            row.stages = [{**s, **values} if s["name"] == name else dict(s) for s in row.stages]
        for key, value in changes.items():
            setattr(row, key, value)
        row.heartbeat_at = utcnow()
        return _info(row)


def begin(settings: Settings, deployment_id: str, flow_run_id: str | None) -> DeploymentInfo:
    """Mark the deployment running (by this process)."""
    info = get_deployment(settings, deployment_id)
    if info.status != "pending":
        raise ConflictError(f"Deployment {deployment_id} is {info.status}, not pending.")
    return _update(
        settings,
        deployment_id,
        status="running",
        started_at=utcnow(),
        flow_run_id=flow_run_id,
        owner=_owner(),
    )


def pending_stages(settings: Settings, deployment_id: str) -> list[str]:
    info = get_deployment(settings, deployment_id)
    return [s.name for s in info.stages if s.status == "pending"]


def _start_stage(settings: Settings, deployment_id: str, stage: str) -> datetime:
    started = utcnow()
    _update(
        settings,
        deployment_id,
        stage=(stage, {"status": "running", "started_at": started.isoformat()}),
    )
    return started


def _end_stage(
    settings: Settings,
    deployment_id: str,
    stage: str,
    started: datetime,
    gates: list[GateResult],
    message: str,
    record_changes: dict[str, Any] | None = None,
) -> bool:
    passed = bool(gates) and all(g.passed for g in gates)
    finished = utcnow()
    values = {
        "status": "passed" if passed else "failed",
        "finished_at": finished.isoformat(),
        "seconds": round((finished - started).total_seconds(), 3),
        "message": message,
        "gates": [g.model_dump(mode="json") for g in gates],
    }
    changes: dict[str, Any] = {"stage": (stage, values), **(record_changes or {})}
    if not passed:
        changes["failed_stage"] = stage
        changes["error"] = f"{stage} failed: {values['message']}"
    _update(settings, deployment_id, **changes)
    return passed


def run_stage(settings: Settings, deployment_id: str, stage: str) -> bool:
    """Run one stage of a deployment and record it; returns whether it passed."""
    from mlops.lifecycle import promotion

    info = get_deployment(settings, deployment_id)
    started = _start_stage(settings, deployment_id, stage)
    try:
        outcome = promotion.STAGE_RUNNERS[stage](settings, info)
    except MlopsError as exc:
        outcome = promotion.StageOutcome(
            [GateResult(name=stage, passed=False, message=exc.message)], exc.message
        )
    except Exception as exc:  # a failing backend must fail the stage, not leave it running
        text = f"{type(exc).__name__}: {exc}"
        outcome = promotion.StageOutcome([GateResult(name=stage, passed=False, message=text)], text)
    return _end_stage(
        settings,
        deployment_id,
        stage,
        started,
        outcome.gates,
        outcome.message,
        outcome.record_changes,
    )


def finish(settings: Settings, deployment_id: str, error: str | None = None) -> DeploymentInfo:
    """Close the deployment: succeeded when every stage it ran passed; release the model."""
    info = get_deployment(settings, deployment_id)
    stages = [s.model_dump(mode="json") for s in info.stages]
    for stage in stages:
        if stage["status"] in ("pending", "running"):
            stage["status"] = "skipped" if stage["status"] == "pending" else "failed"
    failed = any(s["status"] == "failed" for s in stages) or error is not None
    changes: dict[str, Any] = {
        "stages": stages,
        "status": "failed" if failed else "succeeded",
        "finished_at": utcnow(),
        "active_model": None,
    }
    if error and not info.error:
        changes["error"] = error
    return _update(settings, deployment_id, **changes)
