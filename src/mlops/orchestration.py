"""Running the project's Prefect flows from the CLI and the API.

Prefect reads its configuration from the environment, so this module writes the
values the settings decide (state under MLOPS_HOME, the server of `mlops up`
when it is running) into `os.environ` before Prefect is imported.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import httpx

from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.features.ingest import IngestSummary
    from mlops.features.sources import BarsSource
    from mlops.lifecycle.training import TrainResult


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
        use_server = settings.prefect_api_url is not None or prefect_server_running(settings)
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
    """Run the `ingest` flow in this process (reported to Prefect) and return its summary."""
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
    """Run the `train` flow in this process (reported to Prefect) and return its summary."""
    _wait_for_prefect()
    from flows.train import train_flow

    return train_flow(
        model=model,
        settings=settings,
        author=author,
        hyperparameters=hyperparameters,
        dataset=dataset,
    )


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


def start_deployment(settings: Settings, deployment_id: str) -> threading.Thread:
    """Run the deployment in a background thread of this process (the API's, the CLI's)."""
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


def start_evaluation(settings: Settings, evaluation_id: str) -> threading.Thread:
    """Run the evaluation in a background thread of this process (the API's, the CLI's)."""
    thread = threading.Thread(
        target=run_evaluation, args=(settings, evaluation_id), name=f"eval-{evaluation_id[:8]}"
    )
    thread.start()
    return thread
