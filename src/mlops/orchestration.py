"""Running the project's Prefect flows from the CLI and the API.

Prefect reads its configuration from the environment, so this module writes the
values the settings decide (state under MLOPS_HOME, the server of `mlops up`
when it is running) into `os.environ` before Prefect is imported.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from mlops.errors import ServiceError
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.features.ingest import IngestSummary
    from mlops.features.sources import BarsSource
    from mlops.lifecycle.training import TrainResult
    from mlops.run_records import RunKind


def prefect_server_running(settings: Settings) -> bool:
    """True when a Prefect server answers at the configured URL."""
    try:
        return httpx.get(f"{settings.prefect_url}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def configure_prefect(
    settings: Settings, use_server: bool | None = None, wait: bool = True, console_logs: bool = True
) -> bool:
    """Point Prefect at the shared server when one runs (returns True), or else at a
    server of this process's own (`prefect_server.py`, stopped with the process).

    With `wait=False` the own server starts in the background (the API's start); the flow
    runners below wait for it. `console_logs=False` keeps the flows' logs off the console
    (the CLI's progress bar and error say what matters; the Prefect UI has the logs). Must
    run before the first flow call.
    """
    from mlops import prefect_server

    if use_server is None:
        use_server = (
            settings.uses_work_pool  # the pool's server: an outage is an error, not a reason
            or settings.prefect_api_url is not None  # to run flows on a server of one's own
            or prefect_server_running(settings)
        )
    if "prefect.settings" in sys.modules:
        # Prefect read its settings when it was imported (by an embedding program, a test
        # harness): changing the environment now would not reach it, so it keeps them.
        return use_server
    os.environ.update(settings.prefect_environment(use_server=use_server))
    if not console_logs:  # Prefect's logging.yml levels can be set from the environment
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    if not use_server:
        own = prefect_server.start(settings)
        os.environ["PREFECT_API_URL"] = own.url
        if wait:
            own.wait_until_ready()
    return use_server


def _wait_for_prefect() -> None:
    from mlops import prefect_server

    prefect_server.wait_until_ready()


def run_ingest(
    settings: Settings,
    source: str | BarsSource,
    author: str,
    message: str,
    date_format: str | None = None,
) -> IngestSummary:
    """Run the `ingest` flow in this process (reported to Prefect) and return its summary;
    in the cluster profile, on a worker of the work pool (this process waits for it)."""
    if settings.uses_work_pool:
        return _ingest_on_pool(settings, source, author, message, date_format)
    _wait_for_prefect()
    from flows.ingest import ingest_flow

    return ingest_flow(
        source=source,
        author=author,
        message=message,
        settings=settings,
        date_format=date_format,
    )


def run_train(
    settings: Settings,
    model: str,
    author: str,
    hyperparameters: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> TrainResult:
    """Run the `train` flow in this process (reported to Prefect) and return its summary;
    in the cluster profile, on a worker of the work pool: this process waits for the flow
    run and reads the result from its MLflow run, or raises the error it failed with."""
    if settings.uses_work_pool:
        return _train_on_pool(settings, model, author, hyperparameters, dataset)
    _wait_for_prefect()
    from flows.train import train_flow

    return train_flow(
        model=model,
        settings=settings,
        author=author,
        hyperparameters=hyperparameters,
        dataset=dataset,
    )


def _train_on_pool(
    settings: Settings,
    model: str,
    author: str,
    hyperparameters: dict[str, Any] | None,
    dataset: str | None,
) -> TrainResult:
    from mlops.lifecycle import training

    config = training.get_model_config(settings, model, hyperparameters)  # 404/422 here
    parameters: dict[str, Any] = {"model": model, "author": author, "dataset": dataset}
    if hyperparameters:
        parameters["hyperparameters"] = hyperparameters
    flow_run_id = _completed_on_pool(settings, "train", parameters)
    return training.result_of_flow_run(settings, config.experiment, flow_run_id)


def run_train_many(
    settings: Settings, models: list[str], author: str, dataset: str | None = None
) -> list[TrainResult]:
    """Run the `train-many` flow (several configurations side by side, see flows/train.py)
    in this process, or on a worker of the pool in the cluster profile; the results in the
    order named, or the first training's error (the others are registered all the same)."""
    if not settings.uses_work_pool:  # the flow checks every name before it runs any
        _wait_for_prefect()
        from flows.train import train_many_flow

        return train_many_flow(models=models, settings=settings, author=author, dataset=dataset)
    from mlops.lifecycle import training

    configs = {name: training.get_model_config(settings, name) for name in models}  # 404 here
    parameters = {"models": models, "author": author, "dataset": dataset}
    flow_run_id = _completed_on_pool(settings, "train-many", parameters)
    return [
        training.result_of_flow_run(settings, config.experiment, flow_run_id, name)
        for name, config in configs.items()
    ]


def _completed_on_pool(settings: Settings, flow_name: str, parameters: dict[str, Any]) -> str:
    """Submit a run of the flow's pool deployment and wait until it ends: its id once it
    completed, else the error it failed with (as the platform's error class it names)."""
    from mlops import pool_runs, work_pool

    flow_run_id = work_pool.submit(settings, flow_name, parameters)
    state, message = pool_runs.wait_ended(settings, flow_run_id)
    if state != "COMPLETED":
        raise pool_runs.failure_of(state, message)
    return flow_run_id


def start_ingest(
    settings: Settings,
    run_id: int,
    source: BarsSource | str,
    author: str,
    message: str,
    date_format: str | None = None,
    upload_dir: Path | None = None,
) -> None:
    """Submit the pending ingest run `run_id` to the work pool (cluster profile); the flow
    removes `upload_dir` (the API's copy of the uploaded files) when it ends. A refused
    submission ends the record and removes the folder (503)."""
    from mlops.features import ingest

    parameters: dict[str, Any] = {
        "source": source if isinstance(source, str) else source.model_dump(mode="json"),
        "author": author,
        "message": message,
        "date_format": date_format,
        "run_id": run_id,
        "upload_dir": str(upload_dir) if upload_dir else None,
    }
    try:
        _submit(
            settings,
            "ingest",
            parameters,
            ingest.RUNS,
            run_id,
            lambda error: ingest.finish_run(settings, run_id, "failed", error=error),
        )
    except ServiceError:
        if upload_dir is not None:
            shutil.rmtree(upload_dir, ignore_errors=True)
        raise


def _ingest_on_pool(
    settings: Settings,
    source: str | BarsSource,
    author: str,
    message: str,
    date_format: str | None,
) -> IngestSummary:
    from mlops.features import ingest
    from mlops.features.ingest_names import run_outcome
    from mlops.usecases.started import Started

    run_id = ingest.start_run(settings, ingest.source_label(source), pending=True)
    start_ingest(settings, run_id, source, author, message, date_format)
    run = Started(
        str(run_id),
        None,
        lambda run: ingest.run_info(settings, int(run)),
        done=lambda info: info.ended,
    ).wait()
    return ingest.IngestSummary.model_validate(run_outcome(run.model_dump(mode="json")))


def run_deployment(settings: Settings, deployment_id: str) -> None:
    """Run the `deploy` flow for a recorded deployment in this process; the record, not an
    exception, tells the outcome (a failed gate fails the flow run)."""
    from flows.deploy import deploy_flow

    from mlops.lifecycle import deployments

    with deployments.keep_alive(settings, deployment_id):
        try:
            _wait_for_prefect()
            state = deploy_flow(deployment_id=deployment_id, settings=settings, return_state=True)
            error = None if state.is_completed() else (state.message or state.name)
        except Exception as exc:  # the flow never started
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:  # a failed stage finished the record (then this changes nothing)
            deployments.finish(settings, deployment_id, error)


def start_deployment(settings: Settings, deployment_id: str) -> threading.Thread | None:
    """Run the deployment in a background thread of this process (the API's, the CLI's),
    or submit it to the work pool (cluster profile: None, a worker runs it)."""
    if settings.uses_work_pool:
        from mlops.lifecycle import deployments

        _submit(
            settings,
            "deploy",
            {"deployment_id": deployment_id},
            deployments.DEPLOYMENTS,
            deployment_id,
            lambda error: deployments.finish(settings, deployment_id, error),
        )
        return None
    thread = threading.Thread(
        target=run_deployment, args=(settings, deployment_id), name=f"deploy-{deployment_id[:8]}"
    )
    thread.start()
    return thread


def run_evaluation(settings: Settings, evaluation_id: str) -> None:
    """Run the `evaluate` flow for a recorded evaluation in this process; the record, not an
    exception, tells the outcome."""
    from flows.evaluate import run_recorded

    run_recorded(settings, evaluation_id)


def start_evaluation(settings: Settings, evaluation_id: str) -> threading.Thread | None:
    """Run the evaluation in a background thread of this process (the API's, the CLI's),
    or submit it to the work pool (cluster profile: None, a worker runs it)."""
    if settings.uses_work_pool:
        from mlops.evaluation import records, service

        service.discard_plan(evaluation_id)  # the worker plans it again from the record
        service.mark_finished(evaluation_id)
        _submit(
            settings,
            "evaluate",
            {"evaluation_id": evaluation_id},
            records.EVALUATIONS,
            evaluation_id,
            lambda error: records.finish(settings, evaluation_id, error),
        )
        return None
    thread = threading.Thread(
        target=run_evaluation, args=(settings, evaluation_id), name=f"eval-{evaluation_id[:8]}"
    )
    thread.start()
    return thread


def _submit(
    settings: Settings,
    flow_name: str,
    parameters: dict[str, Any],
    kind: RunKind[Any],
    run_id: Any,
    fail: Callable[[str], object],
) -> None:
    """Submit the flow run of a pending record to the work pool and hand the record over
    to it. When Prefect refuses, the record ends with the reason and the error is raised
    (503): nothing waits for a run that was never created."""
    from mlops import work_pool
    from mlops.run_records import hand_over

    try:
        flow_run_id = work_pool.submit(settings, flow_name, parameters)
    except ServiceError as exc:
        fail(exc.message)
        raise
    hand_over(settings, kind, run_id, flow_run_id)
