"""The `mlops` command line. Heavy libraries are imported inside commands so that
`mlops --help` answers at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from mlops.cli import (
    datasets,
    db,
    evaluation,
    experiments,
    features,
    models,
    prompts,
    stores,
    users,
)
from mlops.cli.common import (
    DEPLOYMENT_FAILED_EXIT,
    VerboseOpt,
    console,
    err_console,
    failed,
    handle_errors,
    json_on_stdout,
    print_json,
    set_verbose,
    settings,
    verbose,
)

if TYPE_CHECKING:
    from mlops.features.ingest import IngestSummary
    from mlops.features.sources import BarsSource
    from mlops.lifecycle.deployments import DeploymentInfo
    from mlops.lifecycle.training import TrainResult
    from mlops.settings import Settings

app = typer.Typer(
    help="MLOps platform for quantitative research: features, models, evaluation, prompts.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(verbose_logs: VerboseOpt = False) -> None:
    """MLOps platform for quantitative research: features, models, evaluation, prompts."""
    set_verbose(verbose_logs)
    # SIGTERM ends a command like an exception does: `finally` blocks and `atexit` run
    # (the command's own Prefect server is stopped), exit code 143 as for the signal.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


app.add_typer(features.app, name="features")
app.add_typer(datasets.app, name="datasets")
app.add_typer(experiments.app, name="experiments")
app.add_typer(models.app, name="models")
app.command("predict")(handle_errors(models.predict_cmd))
app.add_typer(prompts.app, name="prompts")
app.add_typer(evaluation.app, name="eval")
app.add_typer(stores.app, name="stores")
app.add_typer(db.app, name="db")
app.add_typer(users.users_app, name="users")
app.add_typer(users.tokens_app, name="tokens")


def start_prefect(config: Settings) -> None:
    """Point Prefect at `mlops up`'s server, or start a temporary one, and say which."""
    from mlops.orchestration import configure_prefect

    config.ensure_dirs()
    with console.status("Starting Prefect..."):
        use_server = configure_prefect(config, console_logs=verbose())
    console.print(
        "Prefect: "
        + (
            f"server {config.prefect_url}"
            if use_server
            else "a temporary server of this command (start `mlops up` to see runs in the UI)"
        )
    )


def ingest_progress(config: Settings, run: Callable[[], IngestSummary]) -> IngestSummary:
    """Run an ingest (`run`) in a thread, drawing a progress bar from the steps it records."""
    from mlops.features.ingest import latest_runs, steps_of_newest_run

    before = max((r.id for r in latest_runs(config, limit=1)), default=0)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)

    def read() -> tuple[list[dict[str, Any]], bool]:
        thread.join(timeout=0.3)
        return steps_of_newest_run(config, before), not thread.is_alive()

    thread.start()
    show_steps(read, succeeded=lambda: "result" in outcome)
    if "error" in outcome:
        raise outcome["error"]
    summary: IngestSummary = outcome["result"]
    return summary


def show_steps(
    read: Callable[[], tuple[list[dict[str, Any]], bool]], succeeded: Callable[[], bool]
) -> None:
    """Draw an ingest's steps as a progress bar until ``read`` (the steps so far, and
    whether the run ended) says it has ended."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from mlops.features.ingest_names import INGEST_STEPS

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("ingest: starting flow", total=len(INGEST_STEPS))
        ended = False
        while not ended:
            done, ended = read()
            current = INGEST_STEPS[min(len(done), len(INGEST_STEPS) - 1)]
            progress.update(bar, completed=len(done), description=f"ingest: {current}")
        failed = next((s["step"] for s in done if s.get("status") == "failed"), None)
        where = f"stopped at {failed}" if failed else "done" if succeeded() else "stopped"
        progress.update(bar, completed=len(done), description=f"ingest: {where}")


def ingest_through_api(
    config: Settings, url: str, bars: BarsSource, message: str
) -> dict[str, Any]:
    """Hand the ingest to the platform's API (`ingest_client`) and follow its run."""
    from mlops.cli.ingest_client import ingest_client

    with ingest_client(config, url) as client:
        with console.status(f"Uploading to the platform's API at {url}..."):
            run = client.submit(bars, message)
        console.print(f"Ingest run {run['id']} runs in the API's ingest process ({url}).")
        try:
            show_steps(client.steps, succeeded=lambda: client.run.get("status") == "completed")
        except KeyboardInterrupt:
            failed(
                f"Stopped following ingest run {run['id']}; it goes on in the API: "
                f"GET {url}{run['status_url']}",
                130,
            )
        return client.result()


@app.command()
@handle_errors
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="CSV or parquet files, directories (their *.csv/*.parquet files) or quoted "
            "globs ('data/**/*.csv'). Columns: ticker, date, open, high, low, close, volume, "
            "or as --map/--source name them.",
            show_default=False,
        ),
    ],
    source: Annotated[
        Optional[str],
        typer.Option(
            "--source",
            "-s",
            help="A layout of config/sources.yaml (e.g. yahoo: Date, Open, ..., Volume; "
            "ticker from the file name); the options below go on top of it.",
        ),
    ] = None,
    column_map: Annotated[
        Optional[list[str]],
        typer.Option(
            "--map",
            help="FILE_COLUMN=COLUMN, repeatable: read the file's column as one of ticker, "
            "date, open, high, low, close, volume. '--map \"Adj Close=close\"' ingests "
            "adjusted closes. Unmapped extra columns are not read.",
        ),
    ] = None,
    ticker: Annotated[
        Optional[str],
        typer.Option("--ticker", help="The ticker of a single file without a ticker column."),
    ] = None,
    ticker_from: Annotated[
        Optional[str],
        typer.Option(
            "--ticker-from",
            help="'column' (default) or 'filename': each file's ticker is its name without "
            "the suffix (AAPL.csv -> AAPL).",
        ),
    ] = None,
    ticker_pattern: Annotated[
        Optional[str],
        typer.Option(
            "--ticker-pattern",
            help="Regular expression for the whole file name without its suffix; the group "
            "'ticker' is the ticker, e.g. '(?P<ticker>.+)_daily'. Implies --ticker-from "
            "filename.",
        ),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Recorded with versions.")] = "",
    date_format: Annotated[
        Optional[str],
        typer.Option(
            "--date-format",
            help="How the file writes dates, strftime syntax, e.g. '%d/%m/%Y'. Default: the "
            "one format that fits every date (ISO, day-first or month-first); ambiguous or "
            "mixed dates are refused.",
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Run the ingest in this process even when the platform's API serves this "
            "state folder (by default the files go to its warm ingest process).",
        ),
    ] = False,
    json: Annotated[bool, typer.Option("--json")] = False,
    verbose_logs: VerboseOpt = False,
) -> None:
    """Validate daily bars (one file, or a vendor's files) and ingest them into the
    feature store.

    Shows the flow's steps as a progress bar and, on failure, the reason in one line.
    All files of one ingest share one header; nothing is written unless every file
    passes. When `mlops up` or `mlops api` serves this state folder, the files are
    uploaded to it and ingested by its warm ingest process (a one-day batch of 1,150
    tickers in about 2.5 s, against 7-8 s in a fresh process that imports Prefect, GX
    and Feast first); `--local` runs it here. Examples:

        mlops ingest bars.csv

        mlops ingest data/yahoo/ --source yahoo

        mlops ingest 'data/*.csv' --ticker-from filename --map Day=date

        mlops ingest AAPL.csv -s yahoo --ticker AAPL --map "Adj Close=close"
    """
    from mlops.features.sources import bars_source, parse_column_map
    from mlops.platform_api import running_api

    set_verbose(verbose_logs)
    if date_format is not None:
        from mlops.features.date_formats import check_date_format

        check_date_format(date_format)
    config = settings()
    bars = bars_source(
        config,
        paths,
        layout=source,
        columns=parse_column_map(column_map),
        ticker=ticker,
        ticker_from=_ticker_from(ticker_from),
        ticker_pattern=ticker_pattern,
        date_format=date_format,
    )
    name = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} paths"
    message = message or f"ingest {name}"
    url = None if local else running_api(config, passed_over=_working_alone)
    with json_on_stdout(json):
        if url is not None:
            summary = ingest_through_api(config, url, bars, message)
        else:
            from mlops.orchestration import run_ingest

            config = settings(reap=True)
            start_prefect(config)
            run = partial(run_ingest, config, bars, config.author, message)
            summary = ingest_progress(config, run).model_dump()
    _print_ingest(summary, json)


def _working_alone(why: str) -> None:
    err_console.print(f"[yellow]Note:[/] {why}; the ingest runs in this process.")


def _ticker_from(value: str | None) -> Literal["column", "filename"] | None:
    from mlops.errors import InvalidInputError

    if value is None or value in ("column", "filename"):
        return value  # type: ignore[return-value]
    raise InvalidInputError(f"--ticker-from is 'column' or 'filename', not {value!r}.")


@app.command()
@handle_errors
def demo(
    json: Annotated[bool, typer.Option("--json")] = False, verbose_logs: VerboseOpt = False
) -> None:
    """Ingest the seeded demo bars, then train and register every model of
    config/models.yaml."""
    set_verbose(verbose_logs)
    with json_on_stdout(json):
        deployed = seed_demo(settings(reap=True), json)
    if deployed.status != "succeeded":
        failed(f"The demo deployment failed: {deployed.error}", DEPLOYMENT_FAILED_EXIT)


class _DemoView:
    """The demo's steps on the console: the ingest's progress bar, then each result."""

    def __init__(self, config: Settings, json: bool) -> None:
        self.config, self.json = config, json

    def ingest(self, work: Callable[[], IngestSummary]) -> IngestSummary:
        summary = ingest_progress(self.config, work)
        _print_ingest(summary.model_dump(), self.json)
        return summary

    def train(self, names: list[str], work: Callable[[], list[TrainResult]]) -> list[TrainResult]:
        with console.status(f"Training {', '.join(names)}..."):
            results = work()
        for result in results:
            _print_train(result, self.json)
        return results

    def deploy(self, model_uri: str, work: Callable[[], DeploymentInfo]) -> DeploymentInfo:
        with console.status(f"Deploying {model_uri} to production..."):
            deployed = work()
        print_json(deployed) if self.json else console.print(models.stage_table(deployed))
        return deployed


def seed_demo(config: Settings, json: bool = False) -> DeploymentInfo:
    """Ingest the demo bars, train every configured model, deploy the best to production."""
    from mlops.usecases.demo import seed_demo as seed

    start_prefect(config)
    return seed(config, config.author, _DemoView(config, json)).deployment


@app.command()
@handle_errors
def train(
    models: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Names in config/models.yaml (default gradient_boosting). Several are "
            "trained side by side by the train-many flow, on the Ray cluster with "
            "compute_engine: ray, and registered in the order given."
        ),
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", "-d", help="Existing dataset.")
    ] = None,
    param: Annotated[
        Optional[list[str]],
        typer.Option("--param", "-p", help="name=value (YAML value); one model only."),
    ] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
    verbose_logs: VerboseOpt = False,
) -> None:
    """Train model configurations, log them to MLflow and register a new version of each."""
    from mlops.cli.common import parse_assignments
    from mlops.errors import InvalidInputError
    from mlops.orchestration import configure_prefect, run_train, run_train_many

    set_verbose(verbose_logs)
    names = list(dict.fromkeys(models or ["gradient_boosting"]))  # each once, in order
    overrides = parse_assignments(param, "--param")
    if overrides and len(names) > 1:
        raise InvalidInputError("--param applies to one model configuration; give one model.")
    config = settings()
    config.ensure_dirs()
    configure_prefect(config, console_logs=verbose())
    with json_on_stdout(json), console.status(f"Training {', '.join(names)}..."):
        if len(names) == 1:
            results = [run_train(config, names[0], config.author, overrides or None, dataset)]
        else:
            results = run_train_many(config, names, config.author, dataset)
    if json and len(names) > 1:
        print_json(results)
        return
    for result in results:
        _print_train(result, json)


def _print_train(result: TrainResult, json: bool) -> None:
    if json:
        print_json(result)
        return
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(result.metrics.items()))
    console.print(
        f"[green]Registered {result.model_uri}[/] (run {result.run_id}, "
        f"dataset {result.dataset}): {metrics}",
        highlight=False,
    )


def _print_ingest(result: dict[str, Any], json: bool) -> None:
    """An ingest's summary (`IngestSummary` as a dict: local and API runs alike)."""
    if json:
        print_json(result)
        return
    files = f" from {result['files']} files" if result["files"] > 1 else ""
    console.print(
        f"[green]Ingested {result['rows']} rows{files}.[/] New versions: "
        f"{', '.join(result['new_versions']) or 'none'}; "
        f"materialized: {', '.join(result['materialized'])}."
    )
    if result["ignored_columns"]:
        console.print(f"Columns not read: {', '.join(result['ignored_columns'])}.")


@app.command()
@handle_errors
def health(json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check each store (and the Prefect and MLflow servers of `mlops up`); exit code 12
    when a store is down, 8 when only a server is."""
    from mlops.errors import ServiceError, StoreUnavailableError
    from mlops.health import SERVICES, check_health, health_lines

    result = check_health(settings(), services=True)
    if json:
        print_json(result)
    else:
        for line in health_lines(result):
            console.print(line, highlight=False)
    down = {name for name, c in result.components.items() if c.status != "ok"}
    if down - set(SERVICES):
        raise typer.Exit(StoreUnavailableError.exit_code)
    if down:
        raise typer.Exit(ServiceError.exit_code)


@app.command()
@handle_errors
def api(
    host: Annotated[Optional[str], typer.Option(help="Bind address.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port.")] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(help="Server processes (cluster profile only; default MLOPS_API_WORKERS)."),
    ] = None,
) -> None:
    """Serve the REST API (and its OpenAPI docs at /docs)."""
    from mlops.orchestration import configure_prefect
    from mlops.services import ensure_port_free, serve_api
    from mlops.settings import load_settings

    config = settings() if workers is None else load_settings(api_workers=workers)
    # Deployments run as flows of the API process; its own Prefect server (when no shared
    # one runs) starts in the background so the API answers at once.
    configure_prefect(config, wait=False)
    host, port = host or config.api_host, port or config.api_port
    ensure_port_free(host, port, "API")
    console.print(f"API: http://{host}:{port}/api/v1  docs: http://{host}:{port}/docs")
    console.print(f"Token: {config.token_hint}", highlight=False)
    serve_api(config, host, port)


@app.command()
@handle_errors
def up(
    api_port: Annotated[Optional[int], typer.Option(help="Platform API port.")] = None,
    prefect_port: Annotated[Optional[int], typer.Option(help="Prefect server port.")] = None,
    mlflow_port: Annotated[Optional[int], typer.Option(help="MLflow server port.")] = None,
) -> None:
    """Start Prefect, MLflow and the API; serve the scheduled flows; Ctrl-C stops all."""
    from mlops.services import run_platform

    overrides = {
        k: v
        for k, v in {
            "api_port": api_port,
            "prefect_port": prefect_port,
            "mlflow_port": mlflow_port,
        }.items()
        if v is not None
    }
    run_platform(settings().model_copy(update=overrides), seed_demo)


@app.command()
@handle_errors
def worker(
    name: Annotated[
        Optional[str], typer.Option(help="Worker name in the Prefect UI (default: Prefect's).")
    ] = None,
) -> None:
    """Run the platform's flows on this host as a worker of the cluster profile's Prefect
    work pool (`prefect worker start --pool ...`), until Ctrl-C. Start as many as you like,
    on any host with the package, the settings and access to the stores."""
    from mlops.services import run_worker

    run_worker(settings(), name)


def main() -> None:
    app()
