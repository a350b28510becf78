"""The model registry as cards with stage chips, a model's page with its deployment history,
the Deploy form, and rollback (confirmed on a page of its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import InvalidInputError, MlopsError, checked
from mlops.roles import Role
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
from mlops.web.models.common import confirm_page, first_value, invalid_input, stepper

if TYPE_CHECKING:
    from mlops.lifecycle.deployments import DeploymentInfo

router = APIRouter(include_in_schema=False)


@router.get("/models", response_class=HTMLResponse, response_model=None)
def models_index(request: Request) -> Response:
    """The registry as cards: versions with Production / Staging / Archived chips, links to
    MLflow, a Deploy form and a Rollback button per model."""
    from pydantic import ValidationError

    from mlops.lifecycle import registry

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    params = request.query_params
    raw: dict[str, Any] = {
        "search": params.get("search") or None,
        "stage": params.get("stage") or None,
        "page": bounded_int(params.get("page"), 1, 1, 1_000_000),
        "page_size": bounded_int(params.get("page_size"), 10, 1, 200),
    }
    status, list_error = 200, None
    try:
        query = registry.ModelQuery.model_validate(raw)
        listing = registry.list_models(settings, query)
    except (ValidationError, MlopsError) as exc:
        error = invalid_input(exc) if isinstance(exc, ValidationError) else exc
        status, list_error = error.http_status, error.message
        query = registry.ModelQuery()
        listing = registry.ModelPage(items=[], total=0, page=1, page_size=query.page_size)
    current = {k: v for k, v in raw.items() if v is not None}
    return page(
        request,
        "models/registry.html",
        status=status,
        listing=listing,
        query=query,
        stages=registry.STAGES,
        pages=max(1, -(-listing.total // query.page_size)),
        link=linker("/models", current),
        list_error=list_error,
    )


def _model_page(request: Request, name: str, status: int = 200, **extra: Any) -> HTMLResponse:
    """One registered model's card, its deployment history and its ledger of changes."""
    from mlops.lifecycle import deployments, ledger, registry

    settings = settings_of(request)
    try:
        model = registry.get_model(settings, name)
    except MlopsError as exc:
        return error_page(request, exc)
    history: list[DeploymentInfo] = quiet(
        lambda: deployments.list_deployments(settings, name, 20, 0), []
    )
    no_changes: list[ledger.AliasChangeInfo] = []
    return page(
        request,
        "models/model.html",
        status=status,
        model=model,
        history=history,
        changes=quiet(lambda: ledger.history(settings, name, 50), no_changes),
        moved_outside=quiet(lambda: ledger.unacknowledged(settings, name), no_changes),
        running=next((d for d in history if d.status in ("pending", "running")), None),
        **extra,
    )


@router.get("/models/{name}", response_class=HTMLResponse, response_model=None)
def model_detail(request: Request, name: str) -> Response:
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _model_page(request, name)


@router.post("/models/{name}/deploy", response_model=None)
async def model_deploy(request: Request, name: str) -> Response:
    """Start a deployment (validate -> staging -> production) and show its stepper."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.usecases import deployments as use

    try:
        form = await checked_form(request, Role.RESEARCHER, "Deploying")
        if not first_value(form, "version"):
            raise InvalidInputError("Choose the version to deploy.")
        body = checked(
            use.DeployRequest,
            {
                "version": first_value(form, "version"),
                "target_stage": first_value(form, "target_stage", "production"),
                "reason": first_value(form, "reason"),
            },
        )
        started = await run_in_threadpool(
            use.deploy, settings_of(request), request.state.principal, name, body
        )
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _model_page(request, name, status=exc.http_status, form_error=exc)
    return stepper(started.id)


@router.post("/models/{name}/rollback", response_model=None)
async def model_rollback(request: Request, name: str) -> Response:
    """Roll production back to the version before; without `confirm=yes` the answer is a
    page saying which version would be restored, with the confirming form."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.usecases import deployments as use

    settings = settings_of(request)
    try:
        form = await checked_form(request, Role.APPROVER, "Rolling back")
        body = checked(use.RollbackRequest, {"reason": first_value(form, "reason")})
        if first_value(form, "confirm") != "yes":
            plan = await run_in_threadpool(use.rollback_plan, settings, name)
            return confirm_page(
                request, plan, body, f"/models/{quote(name)}/rollback", f"/models/{quote(name)}"
            )
        started = await run_in_threadpool(use.roll_back, settings, caller_of(request), name, body)
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _model_page(request, name, status=exc.http_status, form_error=exc)
    return stepper(started.id)


@router.post("/models/{name}/acknowledge", response_model=None)
async def model_acknowledge(request: Request, name: str) -> Response:
    """Acknowledge the model's alias moves made outside the platform, with a comment."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.approvals import DecisionRequest
    from mlops.lifecycle import ledger

    try:
        form = await checked_form(request, Role.APPROVER, "Acknowledging a move")
        body = checked(DecisionRequest, {"comment": first_value(form, "comment")})
        await run_in_threadpool(
            ledger.acknowledge, settings_of(request), name, request.state.principal, body.comment
        )
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _model_page(request, name, status=exc.http_status, form_error=exc)
    return RedirectResponse(f"/models/{quote(name)}#ledger", status_code=303)
