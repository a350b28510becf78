"""Prefect flow `deploy`: one task per stage of a recorded deployment (validate -> staging ->
production, with an `approval` task before production); the domain functions in
`mlops.lifecycle.deployments` do the work and keep the record, the flow only sequences
them. A failed stage fails the flow run. A deployment that must wait for approvals ends
its run Completed, awaiting them; the approval that completes them starts a new run of
this flow, which runs the production stage.

Prefect's own pause (`pause_flow_run`) would hold this process for as long as approvers
take, and its `suspend_flow_run` needs a deployment to resume: the deployment record, not
a flow run, waits here, so it outlives any process and works the same on a work pool."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.evaluate import run_recorded
from mlops.lifecycle import deployments, promotion
from mlops.settings import Settings, load_settings


@task(name="validate", cache_policy=NO_CACHE)
def validate(settings: Settings, deployment_id: str) -> bool:
    """The gates; suite gates run the `evaluate` flow as a subflow of this run."""
    return promotion.run_stage(settings, deployment_id, "validate", run_recorded)


@task(name="staging", cache_policy=NO_CACHE)
def staging(settings: Settings, deployment_id: str) -> bool:
    return promotion.run_stage(settings, deployment_id, "staging", run_recorded)


@task(name="production", cache_policy=NO_CACHE)
def production(settings: Settings, deployment_id: str) -> bool:
    return promotion.run_stage(settings, deployment_id, "production", run_recorded)


@task(name="approval", cache_policy=NO_CACHE)
def approval(settings: Settings, info: deployments.DeploymentInfo) -> bool:
    """Whether production may move now (`info`: the record as this run began); False when
    the deployment now awaits its approvers (this run then ends; the approval that
    completes them starts another)."""
    return promotion.production_approved(settings, info)


STAGE_TASKS = {"validate": validate, "staging": staging, "production": production}


@flow(name="deploy")
def deploy_flow(
    deployment_id: str, settings: Settings | None = None
) -> deployments.DeploymentInfo | State[Any]:
    """Run the pending stages of deployment `deployment_id`, stopping at the first failure
    or before production when it must wait for approvals; returns its record. A failed
    stage fails the run (a Failed state: calling the flow raises unless with
    ``return_state=True``); the record says which and why."""
    settings = settings or load_settings()
    logger = get_run_logger()
    info = deployments.begin(settings, deployment_id, flow_run.get_id())
    logger.info("%s %s v%s -> %s", info.kind, info.model_name, info.version, info.target_stage)
    error, waiting = None, False
    try:
        for stage in info.pending_stages():
            if stage == "production" and not approval(settings, info):
                waiting = True
                break
            if not STAGE_TASKS[stage](settings, deployment_id):
                break
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        info = (
            deployments.get_deployment(settings, deployment_id)
            if waiting
            else deployments.finish(settings, deployment_id, error)
        )
    for record in info.stages:
        logger.info("%s: %s %s", record.name, record.status, record.message)
    if info.status == deployments.AWAITING:
        logger.info(
            "awaiting %d approvals until %s", info.approvals_required, info.approval_expires_at
        )
        return info
    if info.status != "succeeded":  # the run shows as Failed in the Prefect UI
        return Failed(message=info.error or f"deployment {deployment_id} failed")
    return info
