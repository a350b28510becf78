"""What every CLI command shares: settings, error-to-exit-code mapping, JSON output."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console

from mlops.errors import InvalidInputError, MlopsError, problems

if TYPE_CHECKING:
    from mlops.settings import Settings

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Also print the Prefect flow's logs (they are in its UI anyway)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_verbose = {"on": False}


def set_verbose(on: bool) -> None:
    """`--verbose` of the root command or of a subcommand: the flows' logs on the console."""
    _verbose["on"] = _verbose["on"] or on


def verbose() -> bool:
    return _verbose["on"]


def settings(*, reap: bool = False) -> Settings:
    """The effective settings. With `reap`, the runs whose process died are closed first:
    for the commands that start or show runs (a read itself never closes them)."""
    from mlops.settings import load_settings

    config = load_settings()
    if reap:
        from mlops.reaper import reap_interrupted

        config.ensure_dirs()  # the metadata database lives in the state folder
        if config.uses_work_pool:  # the reaper asks the pool's Prefect server: Prefect
            from mlops.orchestration import configure_prefect  # reads where on import

            configure_prefect(config)
        reap_interrupted(config)
    return config


DEPLOYMENT_FAILED_EXIT = 10
"""A deployment ran and stopped at a failed gate or stage (production is unchanged)."""
EVALUATION_FAILED_EXIT = 11
"""An evaluation ran and a test failed or could not be computed."""
AWAITING_APPROVAL_EXIT = 14
"""A deployment passed validate and staging and waits for approvers: production has not
moved yet."""


def failed(message: str, exit_code: int, *more: str) -> NoReturn:
    """End a command with one red line (and `more` plain ones) and the exit code: for an
    error, or for work that ran and did not succeed (a failed gate, a failed test)."""
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    for line in more:
        err_console.print(line, highlight=False)
    raise typer.Exit(exit_code)


def handle_errors(func: F) -> F:
    """Turn domain errors into a red message and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlopsError as exc:
            report = exc.details.get("report_path")
            failed(exc.message, exc.exit_code, *([f"Report: {report}"] if report else []))
        except Exception as exc:
            from pydantic import ValidationError

            from mlops.stores import store_outage

            outage = store_outage(exc)
            if outage is not None:  # an outage no domain code mapped: one line, its exit code
                failed(outage.message, outage.exit_code)
            if not isinstance(exc, ValidationError):
                raise
            err_console.print(f"[bold red]Invalid input:[/] {problems(exc)}", highlight=False)
            raise typer.Exit(InvalidInputError.exit_code) from None

    return wrapper  # type: ignore[return-value]


def to_jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def json_on_stdout(on: bool) -> Iterator[None]:
    """With `--json` (`on`), stdout holds the JSON alone, so that it can be piped: what the
    command shows while it works (progress bars, notices) goes to stderr meanwhile."""
    if not on:
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = None  # type: ignore[assignment]  # rich: None is sys.stdout again


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=2, default=str))


def parse_assignments(items: list[str] | None, option: str) -> dict[str, Any]:
    """`name=value` options (the value read as YAML) as a dict; bad items are invalid input."""
    import yaml

    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{option} '{item}' must be name=value.")
        try:
            values[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{option} '{item}': the value is not valid YAML.") from exc
    return values


AtOpt = Annotated[
    Optional[str],
    typer.Option(
        "--at",
        help="A moment, ISO 8601 (2026-12-01T14:30, UTC unless it has an offset such as Z or "
        "+02:00).",
    ),
]


def parse_moment(at: str | None) -> datetime | None:
    """An `--at` option as a datetime (exit 2 when it is not ISO 8601)."""
    if at is None:
        return None
    try:
        return datetime.fromisoformat(at)
    except ValueError as exc:
        raise InvalidInputError(f"--at {at!r} is not an ISO 8601 moment ({exc}).") from exc


CommentOpt = Annotated[
    str, typer.Option("--comment", "-c", help="Why (required): kept with the decision.")
]
