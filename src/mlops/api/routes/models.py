"""Model registry, staged deployment, rollback and online prediction endpoints."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from mlops.api.deps import Approver, Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.api.started import answer_started, started_responses
from mlops.approvals import Decision, DecisionRequest
from mlops.features.serving import answers_inline
from mlops.fields import Offset
from mlops.lifecycle import deployments, ledger, registry, serving
from mlops.usecases import deployments as use
from mlops.usecases.deployments import DeployRequest, RollbackRequest
from mlops.usecases.started import Started

router = APIRouter(
    prefix="/ml", tags=["models"], dependencies=[Depends(read_access)], responses=READ_ERRORS
)


@router.get("/models", response_model=registry.ModelPage)
def list_models(
    settings: SettingsDep, query: Annotated[registry.ModelQuery, Query()]
) -> registry.ModelPage:
    """Registered models with their versions: stage (Production / Staging / Archived /
    None), key metrics, source run; filtered by stage and name."""
    return registry.list_models(settings, query)


@router.get("/models/{name}", response_model=registry.RegisteredModelInfo)
def get_model(name: str, settings: SettingsDep) -> registry.RegisteredModelInfo:
    return registry.get_model(settings, name)


@router.get("/models/{name}/history", response_model=ledger.ModelHistory)
def model_history(
    name: str,
    settings: SettingsDep,
    at: Annotated[
        datetime | None,
        Query(description="A moment (ISO 8601; UTC if no offset): which version served then."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Offset = 0,
) -> ledger.ModelHistory:
    """Who moved production and staging, when, from which version to which, why, in
    which deployment (or outside the platform), newest first and paged; with `at`, the
    versions the aliases pointed at then (from the whole ledger)."""
    return ledger.model_history(settings, name, at, limit, offset)


@router.post(
    "/models/{name}/acknowledge",
    responses=WRITE_ERRORS,
    response_model=list[ledger.AliasChangeInfo],
)
def acknowledge_external_move(
    name: str, body: DecisionRequest, settings: SettingsDep, caller: Approver
) -> list[ledger.AliasChangeInfo]:
    """Acknowledge the model's alias moves made outside the platform (the ledger records
    one `acknowledged` change per alias), which lets rollbacks of production run again;
    409 when there is none."""
    return ledger.acknowledge(settings, name, caller, body.comment)


class DeploymentRun(deployments.DeploymentInfo):
    """A deployment as the API shows it: the record, and where to follow it."""

    status_url: str = Field(description="Where the deployment's stages and gates are read.")


def _run_of(request: Request, info: deployments.DeploymentInfo) -> DeploymentRun:
    url = request.app.url_path_for("get_deployment", deployment_id=info.id)
    return DeploymentRun(**dict(info), status_url=str(url))


async def _answer(
    started: Started[deployments.DeploymentInfo], wait: bool, request: Request, response: Response
) -> DeploymentRun:
    """202 with the record and its status URL, or 200 once the deployment has finished."""
    return await answer_started(started, wait, response, partial(_run_of, request))


@router.post(
    "/models/{name}/deploy",
    responses=started_responses(DeploymentRun),
    response_model=DeploymentRun,
    status_code=202,
)
async def deploy(
    name: str,
    body: DeployRequest,
    settings: SettingsDep,
    caller: Researcher,
    request: Request,
    response: Response,
    wait: Annotated[bool, Query(description="Answer when the deployment has finished.")] = False,
) -> DeploymentRun:
    """Start a deployment through validate -> staging (-> production) as a Prefect flow run
    of this process; answers 202 with its id and status URL (200 when `wait`)."""
    started = await run_in_threadpool(use.deploy, settings, caller, name, body)
    return await _answer(started, wait, request, response)


@router.post(
    "/models/{name}/rollback",
    responses=started_responses(DeploymentRun),
    response_model=DeploymentRun,
    status_code=202,
)
async def rollback(
    name: str,
    settings: SettingsDep,
    caller: Approver,
    request: Request,
    response: Response,
    body: RollbackRequest | None = None,
    wait: Annotated[bool, Query(description="Answer when the rollback has finished.")] = False,
) -> DeploymentRun:
    """Restore the production version before the current one (a recorded deployment)."""
    started = await run_in_threadpool(
        use.roll_back, settings, caller.name, name, body or RollbackRequest()
    )
    return await _answer(started, wait, request, response)


@router.post(
    "/models/{name}/predict", responses=WRITE_ERRORS, response_model=serving.PredictResponse
)
async def predict(
    name: str, body: serving.PredictRequest, settings: SettingsDep
) -> serving.PredictResponse:
    """P(up) per ticker from the production (or staging) version, on online features."""
    # Reading an alias from MLflow or loading a version can take seconds: never on the loop.
    if answers_inline(settings, len(body.tickers)):
        answer = serving.predict_if_loaded(settings, name, body)
        if answer is not None:
            return answer
    return await run_in_threadpool(serving.predict, settings, name, body)


@router.get("/deployments", response_model=list[DeploymentRun])
def list_deployments(
    settings: SettingsDep,
    request: Request,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> list[DeploymentRun]:
    """Deployments and rollbacks, newest first: who, when, what, and every gate result."""
    found = deployments.list_deployments(settings, model, limit, offset)
    return [_run_of(request, info) for info in found]


@router.get("/deployments/{deployment_id}", response_model=DeploymentRun)
def get_deployment(deployment_id: str, settings: SettingsDep, request: Request) -> DeploymentRun:
    """Per-stage status (pending, running, passed, failed, skipped), timings and gates."""
    return _run_of(request, deployments.get_deployment(settings, deployment_id))


@router.post(
    "/deployments/{deployment_id}/rollback",
    responses=started_responses(DeploymentRun),
    response_model=DeploymentRun,
    status_code=202,
)
async def rollback_deployment(
    deployment_id: str,
    settings: SettingsDep,
    caller: Approver,
    request: Request,
    response: Response,
    body: RollbackRequest | None = None,
    wait: bool = False,
) -> DeploymentRun:
    """Roll back the production version this deployment put in place (409 if it is not
    the one in production any more, or if it did not reach production)."""
    started = await run_in_threadpool(
        use.roll_back_deployment, settings, caller.name, deployment_id, body or RollbackRequest()
    )
    return await _answer(started, wait, request, response)


async def _decide(
    decision: Decision,
    deployment_id: str,
    body: DecisionRequest,
    settings: SettingsDep,
    caller: Approver,
    request: Request,
    response: Response,
    wait: bool,
) -> DeploymentRun:
    started = await run_in_threadpool(use.decide, settings, caller, deployment_id, decision, body)
    return await _answer(started, wait, request, response)


@router.post(
    "/deployments/{deployment_id}/approve",
    responses=started_responses(DeploymentRun),
    response_model=DeploymentRun,
    status_code=202,
)
async def approve_deployment(
    deployment_id: str,
    body: DecisionRequest,
    settings: SettingsDep,
    caller: Approver,
    request: Request,
    response: Response,
    wait: Annotated[
        bool, Query(description="Answer when production moved, if this approval completes it.")
    ] = False,
) -> DeploymentRun:
    """Approve a deployment awaiting approval (approvers other than its requester, once
    each, with a comment). The approval that completes the count starts the production
    stage. 409 when it is not awaiting approval (or has expired)."""
    return await _decide("approve", deployment_id, body, settings, caller, request, response, wait)


@router.post(
    "/deployments/{deployment_id}/reject",
    responses=started_responses(DeploymentRun),
    response_model=DeploymentRun,
    status_code=202,
)
async def reject_deployment(
    deployment_id: str,
    body: DecisionRequest,
    settings: SettingsDep,
    caller: Approver,
    request: Request,
    response: Response,
) -> DeploymentRun:
    """Reject a deployment awaiting approval: it ends as rejected, production unchanged
    (its requester may reject it too, which withdraws it); 200, as the answer is final."""
    return await _decide("reject", deployment_id, body, settings, caller, request, response, True)
