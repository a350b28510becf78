"""Prefect flow `evaluate`: benchmark suites x model versions, fanned out as one task per
(model version, suite) and one `explain` task per version. The domain code in
`mlops.evaluation` does the work and keeps the record; the flow only schedules it.

Started by the API and the CLI for a recorded run (`evaluation_id`), or by a schedule with
`suites` and `models` (e.g. the nightly run of the standard suite on production)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.fan_out import Submit, task_submitter
from mlops.evaluation import records, runner, service
from mlops.evaluation.candidates import Candidate
from mlops.evaluation.records import EvaluationInfo
from mlops.evaluation.results import ModelRef
from mlops.evaluation.runner import Plan
from mlops.evaluation.tracking import PlotJob
from mlops.settings import Settings, load_settings

PlotJobs = list[tuple[str, PlotJob]]
"""The plots a task leaves to draw once the results are recorded (see `plots_task`)."""


@task(name="suite", cache_policy=NO_CACHE)
def suite_task(
    settings: Settings, evaluation_id: str, plan: Plan, candidate: Candidate, suite: str
) -> PlotJobs:
    own = plan.for_task()
    result = runner.run_suite(settings, evaluation_id, own, candidate, suite)
    records.add_result(settings, evaluation_id, result)
    get_run_logger().info("%s on %s: %s %s", suite, candidate.label, result.status, result.counts)
    return own.plot_jobs


@task(name="explain", cache_policy=NO_CACHE)
def explain_task(
    settings: Settings, evaluation_id: str, plan: Plan, candidate: Candidate
) -> PlotJobs:
    own = plan.for_task()
    payload = runner.run_explanation(settings, evaluation_id, own, candidate, plan.explain_rows)
    records.add_explanation(settings, evaluation_id, candidate.name, candidate.version, payload)
    if "importance" not in payload:
        get_run_logger().warning("%s: %s", candidate.label, payload.get("error"))
    return own.plot_jobs


@task(name="plots", cache_policy=NO_CACHE)
def plots_task(settings: Settings, evaluation_id: str, plan: Plan) -> str:
    """Draw the recorded results' plots into their MLflow runs (after the results)."""
    outcome = runner.draw_plots(settings, plan)
    records.set_plots(settings, evaluation_id, outcome)
    if outcome != "done":
        get_run_logger().warning("plots of evaluation %s: %s", evaluation_id, outcome)
    return outcome


@flow(name="evaluate")
def evaluate_flow(
    evaluation_id: str | None = None,
    suites: list[str] | None = None,
    models: list[dict[str, str]] | None = None,
    explain: bool = False,
    requested_by: str = "schedule",
    settings: Settings | None = None,
) -> EvaluationInfo | State[Any]:
    """Run a recorded evaluation, or record and run one for `suites` x `models` (each
    {"name": ..., "version": ...} or {"name": ..., "alias": "production"}); returns its
    record. A failed or errored test fails the run (a Failed state: calling the flow raises
    unless with ``return_state=True``), with every result in the record either way."""
    settings = settings or load_settings()
    logger = get_run_logger()
    if evaluation_id is None:
        refs = [ModelRef.model_validate(m) for m in models or []]
        evaluation_id = service.request_evaluation(
            settings, suites or [], refs, explain, requested_by, "scheduled"
        )
    with records.keep_alive(settings, evaluation_id):
        _run_plan(settings, evaluation_id)
    info = records.get(settings, evaluation_id)
    logger.info("evaluation %s: %s", evaluation_id, info.verdict)
    if info.verdict != "passed":  # the run shows as Failed in the Prefect UI
        return Failed(message=f"evaluation {evaluation_id}: verdict {info.verdict}")
    return info


def _run_plan(settings: Settings, evaluation_id: str) -> None:
    """The suites and explanations as tasks, the record finished, then the plots."""
    plan = service.take_plan(settings, evaluation_id)
    records.begin(settings, evaluation_id, flow_run.get_id())
    explain = records.request_of(settings, evaluation_id).explain
    error = None
    try:
        with task_submitter(settings) as submit:  # here, or on the Ray cluster's workers
            _run_tasks(settings, evaluation_id, plan, explain, submit)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        records.finish(settings, evaluation_id, error)
        service.mark_finished(evaluation_id)  # callers waiting for the results may go on
    plots_task(settings, evaluation_id, plan)


def _run_tasks(
    settings: Settings, evaluation_id: str, plan: Plan, explain: bool, submit: Submit
) -> None:
    """One task per (model version, suite) and, if asked, one `explain` per version, each
    a task run of this flow run wherever `submit` runs it (here, or Prefect's
    `RayTaskRunner` on the Ray cluster with `compute_engine: ray`); raises the first task's
    error once all have ended. Each task works on its own copy of the plan's plot jobs and
    hands them back, so that plots of tasks run elsewhere are drawn too."""
    futures = [
        submit(
            suite_task.with_options(task_run_name=f"{suite} · {candidate.label}"),
            {"settings": settings, "evaluation_id": evaluation_id, "plan": plan,
             "candidate": candidate, "suite": suite},
        )
        for candidate in plan.candidates
        for suite in plan.suites
    ]  # fmt: skip
    if explain:
        futures += [
            submit(
                explain_task.with_options(task_run_name=f"explain · {candidate.label}"),
                {"settings": settings, "evaluation_id": evaluation_id, "plan": plan,
                 "candidate": candidate},
            )
            for candidate in plan.candidates
        ]  # fmt: skip
    wait(futures)
    for future in futures:  # the plots each task left, drawn after the results
        plan.plot_jobs.extend(future.result())


def run_recorded(settings: Settings, evaluation_id: str) -> None:
    """Run the flow for a recorded evaluation in this process (a run of its own, or a
    subflow of the calling flow, e.g. a deployment's validate stage); the record, not an
    exception, tells the outcome."""
    from mlops import prefect_server

    try:
        with records.keep_alive(settings, evaluation_id):  # while it waits for Prefect too
            prefect_server.wait_until_ready()  # the server of this process, when it has one
            state = evaluate_flow(evaluation_id=evaluation_id, settings=settings, return_state=True)
        # Failed tests fail the run too, and their record is already finished; a run that
        # crashed before it finished its record gets the reason.
        if not state.is_completed():
            records.finish(settings, evaluation_id, state.message or state.name)
    except Exception as exc:  # the flow never started: the record says why
        records.finish(settings, evaluation_id, f"{type(exc).__name__}: {exc}")
    finally:
        service.discard_plan(evaluation_id)
        service.mark_finished(evaluation_id)
