"""Flows on a Prefect work pool (the cluster profile): deployments, submission, and what
Prefect knows of a submitted run.

In the cluster profile the platform's flows (`deploy`, `evaluate`, `train`, `train-many`,
`ingest`) are Prefect deployments on a work pool of type `process` (`settings.work_pool`).
Workers (`mlops worker`, which runs `prefect worker start --pool ...` with the platform's
settings) poll the pool and run each flow run in a process of their own, on any host that
has the package and reaches the stores. The API, the console and the CLI record the run (a
deployment, an evaluation...) and submit a flow run for it with `run_deployment`; they do
not run it. So a run survives a restart of the API, and more workers run more at once.

A submitted run's record is handed over to its flow run (owner `prefect-flow-run:<id>`):
the reaper then asks Prefect whether that run still waits or runs, so a record does not
time out while it waits for a worker. Once a worker's process begins the record it owns
it, as any runner does (host, pid and heartbeat); when the reaper closes the record of a
process that died, it tells Prefect too (the flow run becomes Crashed), since a worker
killed with its flow-run process cannot (`pool_runs.py`).

The deployments name their flows by module path (`flows.deploy.deploy_flow`): a worker
imports them from the installed package, so nothing is pulled or copied.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

from mlops.errors import ServiceError
from mlops.settings import Settings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

POOL_TYPE = "process"
DEPLOYMENT_NAME = "platform"
"""Each flow's deployment on the pool is `<flow>/platform` (e.g. `deploy/platform`)."""
FLOW_ENTRYPOINTS = {
    "deploy": ("flows.deploy", "deploy_flow"),
    "evaluate": ("flows.evaluate", "evaluate_flow"),
    "train": ("flows.train", "train_flow"),
    "train-many": ("flows.train", "train_many_flow"),
    "ingest": ("flows.ingest", "ingest_flow"),
}


def _flow(name: str) -> Any:
    import importlib

    module, attribute = FLOW_ENTRYPOINTS[name]
    return getattr(importlib.import_module(module), attribute)


def ensure_pool(settings: Settings) -> None:
    """Create the work pool when Prefect does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(
            WorkPoolCreate(
                name=settings.work_pool,
                type=POOL_TYPE,
                description="Runs the MLOps platform's flows (mlops worker).",
            )
        )


def register(settings: Settings) -> list[str]:
    """The pool and, on it, one deployment per flow plus the scheduled deployments of
    `config/schedules.yaml` (with their cron schedules); the names registered. Run by
    `mlops up` and `mlops worker` at start, and again before a submission that finds a
    deployment missing."""
    from prefect.deployments.runner import EntrypointType

    from mlops.serve_flows import deployments as scheduled

    ensure_pool(settings)
    names = []
    for flow_name in FLOW_ENTRYPOINTS:
        deployment = _flow(flow_name).to_deployment(
            name=DEPLOYMENT_NAME,
            entrypoint_type=EntrypointType.MODULE_PATH,
            description=f"The platform's {flow_name} flow, submitted by the API and the CLI.",
        )
        deployment.apply(work_pool_name=settings.work_pool)
        names.append(f"{flow_name}/{DEPLOYMENT_NAME}")
    for deployment in scheduled(settings, entrypoint_type=EntrypointType.MODULE_PATH):
        deployment.apply(work_pool_name=settings.work_pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


def submit(settings: Settings, flow_name: str, parameters: dict[str, Any]) -> str:
    """Create a flow run of the flow's pool deployment (registered first when missing) and
    return its id at once; a worker of the pool runs it. ServiceError (503) when Prefect
    cannot be reached."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    name = f"{flow_name}/{DEPLOYMENT_NAME}"
    try:
        try:
            run = run_deployment(name=name, parameters=parameters, timeout=0, as_subflow=False)
        except ObjectNotFound:
            register(settings)
            run = run_deployment(name=name, parameters=parameters, timeout=0, as_subflow=False)
    except Exception as exc:
        raise ServiceError(
            f"Could not submit the {flow_name} flow to the Prefect work pool "
            f"'{settings.work_pool}' at {settings.prefect_url}: {type(exc).__name__}: {exc}",
            {"flow": flow_name, "work_pool": settings.work_pool},
        ) from exc
    return str(cast("FlowRun", run).id)


def worker_command(settings: Settings, name: str | None = None) -> list[str]:
    """The `prefect worker start` command of a worker of the pool."""
    import sys

    command = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        settings.work_pool,
        "--type",
        POOL_TYPE,
    ]
    if name:
        command += ["--name", name]
    return command
