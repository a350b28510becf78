"""`mlops experiments ...`: list, show, create and compare MLflow experiments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.table import Table

from mlops.cli.common import JsonOpt, console, handle_errors, print_json, settings

app = typer.Typer(help="List, inspect, create and compare experiments.", no_args_is_help=True)
SPARKS = "▁▂▃▄▅▆▇█"


def _when(value: datetime | None) -> str:
    return value.strftime("%m-%d %H:%M") if value else "-"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def sparkline(values: list[float]) -> str:
    """A one-line chart of a series (the CLI's plot for metric histories)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


@app.command("list")
@handle_errors
def list_cmd(
    sort: Annotated[
        str, typer.Option(help="name, created, updated, run_count, status or metric:<name>.")
    ] = "updated",
    order: Annotated[str, typer.Option(help="asc or desc.")] = "desc",
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Substring.")] = None,
    tag: Annotated[Optional[str], typer.Option(help="key=value or key.")] = None,
    status: Annotated[str, typer.Option(help="active, deleted or all.")] = "active",
    metric: Annotated[str, typer.Option(help="Metric shown as 'best'.")] = "roc_auc",
    page: int = 1,
    page_size: int = 50,
    json: JsonOpt = False,
) -> None:
    """Experiments with run count, best metric and last update."""
    from mlops.lifecycle.experiments import ExperimentQuery, list_experiments

    query = ExperimentQuery.model_validate(
        {
            "sort": sort,
            "order": order,
            "search": search,
            "tag": tag,
            "status": status,
            "metric": metric,
            "page": page,
            "page_size": page_size,
        }
    )
    result = list_experiments(settings(), query)
    if json:
        print_json(result)
        return
    table = Table(title=f"Experiments ({result.total})")
    for column in ("id", "name", "status", "runs", f"best {query.metric}", "updated", "tags"):
        table.add_column(column, no_wrap=column != "tags", overflow="fold")
    for e in result.items:
        table.add_row(
            e.id,
            e.name,
            e.status,
            str(e.run_count),
            _number(e.best.value),
            _when(e.updated),
            ", ".join(f"{k}={v}" for k, v in e.tags.items()),
        )
    console.print(table)


@app.command("show")
@handle_errors
def show_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment id or name.")],
    max_runs: int = 50,
    order_by: Annotated[str, typer.Option(help="e.g. 'metrics.roc_auc DESC'.")] = (
        "start_time DESC"
    ),
    json: JsonOpt = False,
) -> None:
    """An experiment with its runs: status, duration, key params and metrics."""
    from mlops.lifecycle.experiments import get_experiment

    detail = get_experiment(settings(), experiment, max_runs, order_by=order_by)
    if json:
        print_json(detail)
        return
    e = detail.experiment
    console.print(f"[bold]{e.name}[/] (id {e.id}, {e.status}) {e.description}", highlight=False)
    console.print(f"{e.run_count} runs; best {e.best.metric} {_number(e.best.value)}")
    metrics = ("accuracy", "roc_auc", "log_loss")
    table = Table()
    for column in ("run", "kind", "status", "seconds", *metrics):
        table.add_column(column, overflow="fold", no_wrap=column == "run")
    for run in detail.runs:
        table.add_row(
            run.run_id[:8],
            run.params.get("kind", ""),
            run.status,
            f"{run.duration_seconds:.1f}" if run.duration_seconds is not None else "-",
            *(_number(run.metrics.get(m)) for m in metrics),
        )
    console.print(table)


@app.command("create")
@handle_errors
def create_cmd(
    name: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    tag: Annotated[Optional[list[str]], typer.Option("--tag", "-t", help="key=value.")] = None,
    json: JsonOpt = False,
) -> None:
    """Create an experiment (exit code 5 if the name is taken)."""
    from mlops.errors import InvalidInputError
    from mlops.lifecycle.experiments import ExperimentCreate, create_experiment

    tags = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--tag '{item}' must be key=value.")
        tags[key] = value
    request = ExperimentCreate(name=name, description=description, tags=tags)
    config = settings()
    created = create_experiment(config, request, config.author)
    if json:
        print_json(created)
        return
    console.print(f"[green]Created experiment {created.name}[/] (id {created.id}).")


@app.command("compare")
@handle_errors
def compare_cmd(
    metric: Annotated[str, typer.Argument(help="The metric to compare.")],
    run: Annotated[Optional[list[str]], typer.Option("--run", "-r", help="Run id.")] = None,
    experiment: Annotated[
        Optional[list[str]], typer.Option("--experiment", "-e", help="Experiment id or name.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Compare runs (metric by step) or experiments (metric per run over time)."""
    from mlops.lifecycle.comparison import compare

    result = compare(settings(), metric, run, experiment)
    if json:
        print_json(result)
        return
    direction = "higher" if result.higher_is_better else "lower"
    table = Table(title=f"{metric} ({direction} is better; x = {result.x_axis})")
    for column in ("", "series", "points", "best", "last", "trend"):
        table.add_column(column)
    for s in result.series:
        values = [p.y for p in s.points]
        table.add_row(
            "*" if s.id == result.best_series else "",
            s.label,
            str(len(values)),
            _number(s.best),
            _number(values[-1] if values else None),
            sparkline(values),
        )
    console.print(table)
