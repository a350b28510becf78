"""Deploy a model version through validate -> staging (-> production), approve or reject
one that awaits approval, and roll back.

Each use case records the deployment (refused with 404/409/422 before anything is written
or started) and starts the `deploy` flow for it in a background thread of this process, or
(cluster profile) submits it to the work pool. The approval that completes a deployment's
approvals starts its production stage the same way.
"""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel, Field

from mlops.approvals import Decision, DecisionRequest
from mlops.errors import ConflictError
from mlops.lifecycle import deployments
from mlops.lifecycle.deployments import DeploymentInfo
from mlops.roles import Principal, Role
from mlops.settings import Settings
from mlops.usecases.started import Started

REASON_LIMIT = 2000


class DeployRequest(BaseModel):
    """A deployment as the API's body, the console's Deploy form and `mlops deploy` give it."""

    version: str = Field(min_length=1, max_length=20, description="Version to deploy.")
    target_stage: str = Field(default="production", description="staging or production")
    reason: str = Field(default="", max_length=REASON_LIMIT, description="Kept in the record.")


class RollbackRequest(BaseModel):
    reason: str = Field(default="", max_length=REASON_LIMIT, description="Kept in the record.")


class RollbackPlan(BaseModel):
    """What a rollback would do: the version it restores and the one it replaces."""

    model_name: str
    restore: str
    current: str


def _start(settings: Settings, info: DeploymentInfo) -> Started[DeploymentInfo]:
    from mlops.orchestration import start_deployment

    thread = start_deployment(settings, info.id)
    return Started(info.id, thread, partial(deployments.get_deployment, settings), done=_settled)


def _settled(info: DeploymentInfo) -> bool:
    """Nothing runs it any more: it ended, or it awaits its approvers."""
    statuses = deployments.DEPLOYMENTS.statuses
    return info.status in statuses.ends or info.status in statuses.waiting


def deploy(
    settings: Settings, caller: Principal, model: str, request: DeployRequest
) -> Started[DeploymentInfo]:
    """Record a deployment of `model` and start it. Researchers deploy to staging; only
    approvers (and admins) to production (403)."""
    if request.target_stage == "production":
        caller.require(Role.APPROVER, "Deploying to production")
    info = deployments.request_deployment(
        settings, model, request.version, request.target_stage, caller.name, request.reason
    )
    return _start(settings, info)


def decide(
    settings: Settings,
    caller: Principal,
    deployment_id: str,
    decision: Decision,
    request: DecisionRequest,
) -> Started[DeploymentInfo]:
    """An approver approves or rejects a deployment awaiting approval. The approval that
    completes its approvals starts its production stage (waited for like a deployment);
    otherwise the record as the decision left it."""
    info, ready = deployments.decide(settings, deployment_id, caller, decision, request.comment)
    if ready:
        return _start(settings, info)
    return Started(info.id, None, partial(deployments.get_deployment, settings), done=_settled)


def rollback_plan(settings: Settings, model: str) -> RollbackPlan:
    """The version a rollback of `model` would restore (409 when there is none)."""
    restore, current = deployments.rollback_target(settings, model)
    return RollbackPlan(model_name=model, restore=restore, current=current)


def roll_back(
    settings: Settings,
    caller: str,
    model: str,
    request: RollbackRequest,
    expected_current: str | None = None,
) -> Started[DeploymentInfo]:
    """Record a rollback of `model` to the production version before the current one (409
    when production is no longer `expected_current`) and start it."""
    info = deployments.request_rollback(settings, model, caller, request.reason, expected_current)
    return _start(settings, info)


def _put_in_production(settings: Settings, deployment_id: str) -> DeploymentInfo:
    info = deployments.get_deployment(settings, deployment_id)
    if info.status != "succeeded" or info.target_stage != "production":
        raise ConflictError(
            f"Deployment {deployment_id} did not put a version in production "
            f"({info.status}, target {info.target_stage}): nothing of it to roll back.",
            {"id": deployment_id},
        )
    return info


def rollback_plan_of(settings: Settings, deployment_id: str) -> RollbackPlan:
    """What rolling back deployment `deployment_id` would do (409 unless it put a version
    in production and that version is still there)."""
    info = _put_in_production(settings, deployment_id)
    restore, current = deployments.rollback_target(settings, info.model_name, info.version)
    return RollbackPlan(model_name=info.model_name, restore=restore, current=current)


def roll_back_deployment(
    settings: Settings, caller: str, deployment_id: str, request: RollbackRequest
) -> Started[DeploymentInfo]:
    """Roll back the production version that deployment `deployment_id` put in place."""
    info = _put_in_production(settings, deployment_id)
    return roll_back(settings, caller, info.model_name, request, expected_current=info.version)
