"""Deployments: every deployment and rollback, paged, and a deployment's live stepper of its
stages and gates, with its approvals (and the approve / reject form while it awaits them),
and the rollback of what it put in production (confirmed first)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlops.errors import MlopsError, checked
from mlops.roles import Role
from mlops.sessions import signed_in
from mlops.web.common import (
    REFUSED,
    bounded_int,
    caller_of,
    checked_form,
    error_page,
    linker,
    needs_reading,
    page,
    quiet,
    settings_of,
)
from mlops.web.models.common import confirm_page, first_value, stepper

if TYPE_CHECKING:
    from mlops.approvals import Decision
    from mlops.settings import Settings

router = APIRouter(include_in_schema=False)

DEPLOYMENTS_PAGE = 25


def _mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI (its experiment id read from the run)."""
    if not run_id:
        return None
    from mlops.lifecycle import mlflow_backend

    run = mlflow_backend.client(settings).get_run(run_id)
    return f"{settings.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


@router.get("/deployments", response_class=HTMLResponse, response_model=None)
def deployments_index(request: Request) -> Response:
    """Every deployment and rollback, newest first, paged and filtered by model."""
    from mlops.lifecycle import deployments

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    model = request.query_params.get("model") or None
    number = bounded_int(request.query_params.get("page"), 1, 1, 1_000_000)
    rows = deployments.list_deployments(
        settings, model, DEPLOYMENTS_PAGE + 1, (number - 1) * DEPLOYMENTS_PAGE
    )
    return page(
        request,
        "models/deployments.html",
        history=rows[:DEPLOYMENTS_PAGE],
        has_next=len(rows) > DEPLOYMENTS_PAGE,
        number=number,
        model=model,
        link=linker("/deployments", {"model": model}),
    )


def _deployment_page(
    request: Request, deployment_id: str, status: int = 200, **extra: Any
) -> HTMLResponse:
    from mlops.lifecycle import deployments, registry

    settings = settings_of(request)
    try:
        info = deployments.get_deployment(settings, deployment_id)
    except MlopsError as exc:
        return error_page(request, exc)
    version = quiet(lambda: registry.get_version(settings, info.model_name, info.version), None)
    run_url = quiet(lambda: _mlflow_run_url(settings, version.run_id if version else None), None)
    failed_gates = [
        (stage.name, gate) for stage in info.stages for gate in stage.gates if not gate.passed
    ]
    production = quiet(
        lambda: registry.alias_version(settings, info.model_name, registry.PRODUCTION_ALIAS), None
    )
    running = info.status in ("pending", "running")
    principal = signed_in(request)
    return page(
        request,
        "models/deployment.html",
        status=status,
        info=info,
        run_url=run_url,
        failed_gates=failed_gates,
        production=production,
        can_roll_back=(
            info.status == "succeeded"
            and info.target_stage == "production"
            and production == info.version
        ),
        refresh=running and status == 200,
        running=running,
        may_decide=(
            info.status == deployments.AWAITING
            and principal is not None
            and principal.role.allows(Role.APPROVER)
        ),
        decided=principal is not None and any(d.approver == principal.name for d in info.approvals),
        own_request=principal is not None and principal.name == info.requested_by,
        **extra,
    )


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse, response_model=None)
def deployment_detail(request: Request, deployment_id: str) -> Response:
    """The stepper: each stage's status and timing, every gate against its threshold."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _deployment_page(request, deployment_id)


@router.post("/deployments/{deployment_id}/rollback", response_model=None)
async def deployment_rollback(request: Request, deployment_id: str) -> Response:
    """Roll back the production version this deployment put in place (confirmed first)."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.usecases import deployments as use

    settings = settings_of(request)
    try:
        form = await checked_form(request, Role.APPROVER, "Rolling back a deployment")
        body = checked(use.RollbackRequest, {"reason": first_value(form, "reason")})
        if first_value(form, "confirm") != "yes":
            plan = await run_in_threadpool(use.rollback_plan_of, settings, deployment_id)
            here = f"/deployments/{deployment_id}"
            return confirm_page(request, plan, body, f"{here}/rollback", here)
        started = await run_in_threadpool(
            use.roll_back_deployment, settings, caller_of(request), deployment_id, body
        )
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _deployment_page(request, deployment_id, status=exc.http_status, form_error=exc)
    return stepper(started.id)


async def _decision(request: Request, deployment_id: str, decision: Decision) -> Response:
    from fastapi.concurrency import run_in_threadpool

    from mlops.approvals import DecisionRequest
    from mlops.usecases import deployments as use

    settings = settings_of(request)
    try:
        form = await checked_form(request, Role.APPROVER, "Deciding on a deployment")
        body = checked(DecisionRequest, {"comment": first_value(form, "comment")})
        await run_in_threadpool(
            use.decide, settings, request.state.principal, deployment_id, decision, body
        )
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _deployment_page(request, deployment_id, status=exc.http_status, form_error=exc)
    return stepper(deployment_id)


@router.post("/deployments/{deployment_id}/approve", response_model=None)
async def deployment_approve(request: Request, deployment_id: str) -> Response:
    """Approve a deployment awaiting approval, with a comment; the approval that completes
    the count starts its production stage (the stepper follows it)."""
    return await _decision(request, deployment_id, "approve")


@router.post("/deployments/{deployment_id}/reject", response_model=None)
async def deployment_reject(request: Request, deployment_id: str) -> Response:
    """Reject a deployment awaiting approval, with a comment: production is unchanged."""
    return await _decision(request, deployment_id, "reject")
