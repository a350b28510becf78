"""Experiment endpoints: list with summaries, create, detail with runs, a run's metric
history, and comparison of runs or experiments on one metric."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from mlops.api.deps import Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.lifecycle import comparison, experiments

router = APIRouter(
    prefix="/ml", tags=["experiments"], dependencies=[Depends(read_access)], responses=READ_ERRORS
)


@router.get("/experiments", response_model=experiments.ExperimentPage)
def list_experiments(
    settings: SettingsDep, query: Annotated[experiments.ExperimentQuery, Query()]
) -> experiments.ExperimentPage:
    """Experiments with run count, best and latest metrics; paged, sorted and filtered.

    `sort`: name, created, updated, run_count, status or `metric:<name>`; `tag`: key=value.
    """
    return experiments.list_experiments(settings, query)


@router.post(
    "/experiments",
    responses=WRITE_ERRORS,
    response_model=experiments.ExperimentSummary,
    status_code=201,
)
def create_experiment(
    body: experiments.ExperimentCreate, settings: SettingsDep, caller: Researcher
) -> experiments.ExperimentSummary:
    """Create an experiment, tagged `mlops.created_by` with the caller's name (409 if the
    name is taken, 422 if it is invalid)."""
    return experiments.create_experiment(settings, body, caller.name)


@router.get("/experiments/{ref}", response_model=experiments.ExperimentDetail)
def get_experiment(
    ref: str,
    settings: SettingsDep,
    max_runs: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str | None = None,
    order_by: str = "start_time DESC",
    filter: Annotated[str, Query(description="MLflow run filter, e.g. metrics.f1 > 0.5")] = "",
) -> experiments.ExperimentDetail:
    """An experiment (by id or name) with a page of its runs."""
    return experiments.get_experiment(settings, ref, max_runs, page_token, order_by, filter)


@router.get("/runs/{run_id}", response_model=experiments.RunSummary)
def get_run(run_id: str, settings: SettingsDep) -> experiments.RunSummary:
    return experiments.get_run(settings, run_id)


@router.get("/runs/{run_id}/metrics/{metric}", response_model=experiments.MetricHistory)
def metric_history(run_id: str, metric: str, settings: SettingsDep) -> experiments.MetricHistory:
    """Every value a run logged for a metric, by step (folds, boosting stages)."""
    return experiments.metric_history(settings, run_id, metric)


@router.get("/compare", response_model=comparison.Comparison)
def compare(
    settings: SettingsDep,
    metric: str,
    runs: Annotated[list[str] | None, Query(description="Run ids (x = step).")] = None,
    experiments_: Annotated[
        list[str] | None, Query(alias="experiments", description="Ids or names (x = time).")
    ] = None,
) -> comparison.Comparison:
    """One metric as chart-ready series for several runs or several experiments."""
    return comparison.compare(settings, metric, runs, experiments_)
