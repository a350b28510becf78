"""Comparison of several runs (a metric by step) or experiments (a metric per run over
time) as series a chart can draw directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from mlops.errors import InvalidInputError
from mlops.lifecycle import mlflow_backend
from mlops.lifecycle.experiments import get_run, metric_history, resolve_experiment
from mlops.lifecycle.metrics import finite_or_none, higher_is_better
from mlops.lifecycle.mlflow_backend import ms_to_datetime
from mlops.settings import Settings

MAX_COMPARED = 20
MAX_RUNS_PER_SERIES = 1000


class SeriesPoint(BaseModel):
    x: int | float | str
    y: float
    label: str | None = None


class Series(BaseModel):
    id: str
    label: str
    points: list[SeriesPoint]
    best: float | None
    truncated: bool = Field(default=False, description="Only the first runs are shown.")


class Comparison(BaseModel):
    """One metric as chart-ready series: per run (x = step) or per experiment (x = run time)."""

    metric: str
    higher_is_better: bool
    x_axis: Literal["step", "run_start_time"]
    series: list[Series]
    best_series: str | None


def _best(values: list[float], metric: str) -> float | None:
    if not values:
        return None
    return max(values) if higher_is_better(metric) else min(values)


def compare(
    settings: Settings,
    metric: str,
    run_ids: list[str] | None = None,
    experiments: list[str] | None = None,
) -> Comparison:
    """Series of one metric: per run its history by step, or per experiment its runs in time.

    Non-finite values (NaN, infinities) are left out of the series.
    """
    run_ids, experiments = run_ids or [], experiments or []
    if bool(run_ids) == bool(experiments):
        raise InvalidInputError("Compare either runs or experiments (give one of the two).")
    if len(run_ids) + len(experiments) > MAX_COMPARED:
        raise InvalidInputError(f"Compare at most {MAX_COMPARED} runs or experiments at once.")
    if run_ids:
        series = [_run_series(settings, run_id, metric) for run_id in run_ids]
        x_axis: Literal["step", "run_start_time"] = "step"
    else:
        series = [_experiment_series(settings, ref, metric) for ref in experiments]
        x_axis = "run_start_time"
    scored = [s for s in series if s.best is not None]
    best_series = None
    if scored:
        pick = max if higher_is_better(metric) else min
        best_series = pick(scored, key=lambda s: s.best or 0.0).id
    return Comparison(
        metric=metric,
        higher_is_better=higher_is_better(metric),
        x_axis=x_axis,
        series=series,
        best_series=best_series,
    )


def _run_series(settings: Settings, run_id: str, metric: str) -> Series:
    run = get_run(settings, run_id)
    history = metric_history(settings, run_id, metric)
    points = [SeriesPoint(x=p.step, y=p.value) for p in history.points if p.value is not None]
    return Series(
        id=run_id, label=run.name, points=points, best=_best([p.y for p in points], metric)
    )


def _experiment_series(settings: Settings, ref: str, metric: str) -> Series:
    from mlflow.exceptions import MlflowException

    experiment = resolve_experiment(settings, ref)
    try:
        runs = mlflow_backend.client(settings).search_runs(
            [experiment.experiment_id],
            filter_string=f"metrics.`{metric}` > -1e308",
            order_by=["start_time ASC"],
            max_results=MAX_RUNS_PER_SERIES,
        )
    except MlflowException as exc:
        raise InvalidInputError(f"Invalid metric name '{metric}': {exc.message}") from exc
    points = [
        SeriesPoint(
            x=(ms_to_datetime(r.info.start_time) or datetime.now(UTC)).isoformat(),
            y=float(r.data.metrics[metric]),
            label=r.info.run_name or r.info.run_id,
        )
        for r in runs
        if finite_or_none(r.data.metrics.get(metric)) is not None
    ]
    return Series(
        id=str(experiment.experiment_id),
        label=experiment.name,
        points=points,
        best=_best([p.y for p in points], metric),
        truncated=runs.token is not None,
    )
