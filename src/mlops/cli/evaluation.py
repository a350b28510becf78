"""`mlops eval ...`: benchmark suites, runs with progress, results, comparison and SHAP
explanations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from mlops.cli.common import (
    EVALUATION_FAILED_EXIT,
    JsonOpt,
    console,
    failed,
    handle_errors,
    print_json,
    settings,
)

if TYPE_CHECKING:
    from mlops.evaluation.records import EvaluationInfo
    from mlops.evaluation.results import ModelRef
    from mlops.settings import Settings
    from mlops.usecases.started import Started

app = typer.Typer(
    help="Evaluation harness: run benchmark suites on model versions, compare, explain.",
    no_args_is_help=True,
)
STYLE = {"passed": "green", "failed": "red", "error": "magenta", "running": "yellow"}
MARK = {"passed": "✓ pass", "failed": "✗ fail", "error": "! error"}
BAR_WIDTH = 20


def _styled(status: str | None, text: str | None = None) -> str:
    status = status or "-"
    return f"[{STYLE.get(status, 'dim')}]{text or status}[/]"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@app.command("suites")
@handle_errors
def suites_cmd(json: JsonOpt = False) -> None:
    """The benchmark suites of config/suites with their tests and last run."""
    from mlops.evaluation.records import last_runs
    from mlops.evaluation.suites import list_suite_files

    config = settings()
    files, last = list_suite_files(config), last_runs(config)
    if json:
        print_json([{**f.model_dump(mode="json"), "last_run": last.get(f.name)} for f in files])
        return
    table = Table(title=f"Benchmark suites ({len(files)})")
    for column in ("suite", "tests", "kinds", "last run", "description"):
        table.add_column(column, overflow="fold")
    for item in files:
        run = last.get(item.name)
        when = f"{run.at:%Y-%m-%d %H:%M} {_styled(run.outcome)}" if run else "never"
        if item.suite is None:
            message = (item.error or {}).get("message", "invalid")
            table.add_row(item.name, "-", "-", when, f"[red]invalid: {message}[/]")
            continue
        kinds = ", ".join(sorted({t.kind for t in item.suite.tests}))
        table.add_row(item.name, str(len(item.suite.tests)), kinds, when, item.suite.description)
    console.print(table)


def parse_model(text: str) -> ModelRef:
    """`name:version` or `name@alias` (production, staging)."""
    from mlops.errors import InvalidInputError
    from mlops.evaluation.results import ModelRef

    if "@" in text:
        name, _, alias = text.rpartition("@")
        return ModelRef(name=name, alias=alias)
    name, sep, version = text.rpartition(":")
    if not sep or not name or not version:
        raise InvalidInputError(
            f"Model '{text}' must be name:version or name@alias (e.g. direction-model:3, "
            "direction-model@production)."
        )
    return ModelRef(name=name, version=version)


@app.command("run")
@handle_errors
def run_cmd(
    suites: Annotated[list[str], typer.Option("--suite", "-s", help="Suite; repeatable.")],
    models: Annotated[
        list[str],
        typer.Option("--model", "-m", help="name:version or name@production|staging; repeatable."),
    ],
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Explain each version with SHAP.")
    ] = True,
    rows: Annotated[int, typer.Option(help="Rows the SHAP explanation samples (<= 500).")] = 500,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Kept in the record.")] = "",
    json: JsonOpt = False,
) -> None:
    """Run suites on model versions (the Prefect flow `evaluate`), with progress.

    Prints pass/fail per test; exit code 11 when a test fails or errors. Example:
    mlops eval run -s smoke -s standard -m direction-model@production -m direction-model:3
    """
    from mlops.errors import InvalidInputError, checked
    from mlops.orchestration import configure_prefect
    from mlops.usecases.evaluations import EvaluationRequest, evaluate

    if not 10 <= rows <= 500:  # in the option's name (the request model says explain_rows)
        raise InvalidInputError(f"--rows must be between 10 and 500, got {rows}.")
    config = settings(reap=True)
    body = checked(
        EvaluationRequest,
        {
            "suites": suites,
            "models": [parse_model(m) for m in models],
            "explain": explain,
            "explain_rows": rows,
            "reason": reason,
        },
    )
    configure_prefect(config, wait=False)  # starts while the request is checked
    info = _follow(evaluate(config, config.author, body), quiet=json)
    if json:
        print_json(info)
    else:
        _print_results(info)
    if info.status == "failed" or info.verdict != "passed":
        failed(
            f"Evaluation {info.id}: {info.error or info.verdict}. "
            f"Details: mlops eval show {info.id[:8]}",
            EVALUATION_FAILED_EXIT,
        )


def _follow(started: Started[EvaluationInfo], quiet: bool) -> EvaluationInfo:
    """Draw a progress bar over the run's tasks until it (and its plots) are done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    info = started.record()
    with Progress(
        TextColumn("[bold]evaluate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    ) as progress:
        task = progress.add_task(started.id[:8], total=info.progress.total)
        while started.running:
            started.join(0.25)
            info = started.record()
            latest = info.results[-1].label + " " + info.results[-1].suite if info.results else ""
            if info.status in ("succeeded", "failed"):
                latest = "drawing plots"
            progress.update(task, completed=info.progress.done, description=latest or "starting")
        info = started.record()
        progress.update(task, completed=info.progress.done)
    return info


def _print_results(info: EvaluationInfo) -> None:
    """One table per (version, suite): each test's result, value, threshold and reason."""
    for result in info.results:
        title = (
            f"{result.label} · {result.suite}: {_styled(result.status)} "
            f"({result.data.rows} rows, {result.data.start:%Y-%m-%d}..{result.data.end:%Y-%m-%d})"
        )
        table = Table(title=title, title_justify="left")
        table.add_column("test", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("needs", no_wrap=True)
        table.add_column("reason", overflow="fold", ratio=1)
        for test in result.tests:
            table.add_row(
                test.name,
                _styled(test.status, MARK[test.status]),
                _number(test.value),
                f"{test.operator} {_number(test.threshold)}" if test.operator else "-",
                test.reason,
            )
        console.print(table)
        if result.error:
            console.print(f"[magenta]{result.error}[/]")
    verdict = _styled(info.verdict)
    console.print(f"Evaluation {info.id[:8]}: {info.status}, verdict {verdict}", highlight=False)
    if info.error:
        console.print(f"[red]{info.error}[/]")


def _resolve(config: Settings, evaluation_id: str | None) -> str:
    from mlops.errors import NotFoundError
    from mlops.evaluation.records import list_evaluations

    runs = list_evaluations(config, limit=500)
    if evaluation_id is None:
        if not runs:
            raise NotFoundError("No evaluation has run yet: mlops eval run --help.")
        return runs[0].id
    matches = [r.id for r in runs if r.id.startswith(evaluation_id)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        from mlops.errors import InvalidInputError

        raise InvalidInputError(f"'{evaluation_id}' matches several runs: give more characters.")
    return evaluation_id


IdArg = Annotated[
    Optional[str], typer.Argument(help="Evaluation id or its prefix (default: the latest).")
]


@app.command("show")
@handle_errors
def show_cmd(evaluation_id: IdArg = None, json: JsonOpt = False) -> None:
    """Pass/fail per model and test of an evaluation run, with reasons."""
    from mlops.evaluation.records import get

    config = settings(reap=True)
    info = get(config, _resolve(config, evaluation_id))
    print_json(info) if json else _print_results(info)


@app.command("compare")
@handle_errors
def compare_cmd(
    evaluation_id: IdArg = None,
    suite: Annotated[Optional[str], typer.Option(help="Only this suite.")] = None,
    json: JsonOpt = False,
) -> None:
    """Per metric: the best version (★) and each one's % difference.

    Differences are from the best and from the model's production version on the same rows.
    """
    from mlops.evaluation.records import get

    config = settings()
    comparison = get(config, _resolve(config, evaluation_id)).comparison
    comparison = [c for c in comparison if suite is None or c.suite == suite]
    if json:
        print_json(comparison)
        return
    for block in comparison:
        names = {bar.model for metric in block.metrics for bar in metric.bars}
        single = len(names) == 1  # versions of one model: label them "v3"
        title = f"Suite {block.suite}" + (f" · {next(iter(names))}" if single else "")
        table = Table(title=title, title_justify="left", caption="bars span lowest..highest")
        for column in ("metric / version", "value", "", "vs best", "vs prod"):
            table.add_column(column, no_wrap=column != "metric / version", overflow="fold")
        for metric in block.metrics:
            arrow = "higher is better" if metric.higher_is_better else "lower is better"
            table.add_row(f"[bold]{metric.metric}[/] [dim]({arrow})[/]", "", "", "", "")
            values = [b.value for b in metric.bars]
            for bar in metric.bars:
                label = f"v{bar.version}" if single else bar.label
                table.add_row(
                    f"[bold green]★ {label}[/]" if bar.best else f"  {label}",
                    f"{bar.value:.4f}",
                    _bar(bar.value, min(values), max(values)),
                    _pct(bar.diff_from_best_pct),
                    _pct(bar.diff_from_production_pct),
                )
            table.add_section()
        console.print(table)


def _bar(value: float, low: float, high: float) -> str:
    """A bar whose length places `value` between the lowest and highest of its metric (the
    differences between versions are often a few %, invisible on a bar from zero)."""
    share = 1.0 if high == low else (value - low) / (high - low)
    return "█" * (2 + round(share * (BAR_WIDTH - 2)))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


@app.command("explain")
@handle_errors
def explain_cmd(
    evaluation_id: IdArg = None,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="Only name:version.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """SHAP explanations of a run's versions: summary, importance, direction.

    The bar and beeswarm plots are artifacts of the MLflow run it names.
    """
    from rich.markdown import Markdown

    from mlops.errors import NotFoundError
    from mlops.evaluation.records import explanations

    config = settings()
    found = explanations(config, _resolve(config, evaluation_id))
    if model:
        from mlops.evaluation.candidates import resolve_version

        ref = parse_model(model)
        version = resolve_version(config, ref.name, ref.version, ref.alias)
        found = [e for e in found if (e["model_name"], e["version"]) == (ref.name, version)]
    if not found:
        raise NotFoundError(
            "No explanation of " + (model or "any version") + " in this run (was it run with "
            "--no-explain, or on other versions?)."
        )
    if json:
        print_json(found)
        return
    for item in found:
        _print_explanation(item, Markdown)


def _print_explanation(item: dict[str, Any], markdown: Any) -> None:
    label = f"{item['model_name']} v{item['version']}"
    if "importance" not in item:
        console.print(f"[magenta]{label}: {item.get('error')}[/]")
        return
    console.print(markdown(item["summary_markdown"]))
    table = Table(title=f"Mean |SHAP| of {label} ({item['explainer']}, {item['rows']} rows)")
    for column in ("feature", "mean |SHAP|", "", "share", "direction"):
        table.add_column(column, no_wrap=True)
    top = max((f["mean_abs_shap"] for f in item["importance"]), default=0.0)
    for feature in item["importance"]:
        table.add_row(
            feature["feature"],
            f"{feature['mean_abs_shap']:.5f}",
            _bar(feature["mean_abs_shap"], 0.0, top),
            f"{feature['share']:.1%}",
            feature["direction"],
        )
    console.print(table)
    if item.get("mlflow_run_id"):
        console.print(
            f"Plots {', '.join(item.get('plots', []))} in MLflow run {item['mlflow_run_id']}"
        )
