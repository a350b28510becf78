"""`mlops prompts ...`: prompt templates in git: list, show, create, edit, history, diff,
publish, rollback, archive, render, usage and example tests. GitPython, Jinja2 and
SQLAlchemy are imported inside the commands."""

from __future__ import annotations

import json as jsonlib
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from mlops.cli.common import (
    AtOpt,
    CommentOpt,
    JsonOpt,
    console,
    err_console,
    handle_errors,
    parse_assignments,
    parse_moment,
    print_json,
    settings,
)

if TYPE_CHECKING:
    from mlops.approvals import Decision
    from mlops.prompts.models import PublishResult
    from mlops.prompts.publications import PublicationInfo
    from mlops.prompts.store import PromptStore

app = typer.Typer(
    help="Prompt templates in git: edit, diff, publish, roll back, render, usage.",
    no_args_is_help=True,
)
JsonResultOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON instead of a summary line.")
]
FromVersionArg = Annotated[int, typer.Argument(help="The version to diff from (e.g. 1).")]
ToVersionArg = Annotated[int, typer.Argument(help="The version to diff to (e.g. 2).")]
RollbackVersionArg = Annotated[
    int,
    typer.Argument(help="An earlier published version to make live again (not the live one)."),
]


class BucketChoice(StrEnum):
    """Usage time buckets (the API's `bucket`)."""

    hour = "hour"
    day = "day"


MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Commit message.")]
NameArg = Annotated[str, typer.Argument(help="Template name.")]


def _store() -> PromptStore:
    from mlops.prompts.store import open_store

    return open_store(settings())


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


@app.command("list")
@handle_errors
def list_cmd(
    archived: Annotated[bool, typer.Option("--archived", help="Include archived.")] = False,
    search: Annotated[Optional[str], typer.Option("--search", "-s")] = None,
    json: JsonOpt = False,
) -> None:
    """List templates: latest and published version, status, update time, calls."""
    items = _store().list_templates(archived, search)
    if json:
        print_json(items)
        return
    table = Table(title=f"Prompt templates ({len(items)})")
    for column in ("name", "latest", "published", "status", "updated", "calls", "description"):
        table.add_column(column, no_wrap=column != "description")
    for t in items:
        published = f"v{t.published_version}" if t.published_version else "-"
        table.add_row(
            t.name,
            f"v{t.latest_version}",
            published,
            t.status,
            _when(t.updated),
            str(t.calls),
            t.description,
        )
    console.print(table)


@app.command("show")
@handle_errors
def show_cmd(
    name: NameArg,
    version: Annotated[Optional[int], typer.Option(help="Version (default latest).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the template as JSON.")] = False,
) -> None:
    """Show a template's source, metadata and release events."""
    detail = _store().detail(name, version)
    if json:
        print_json(detail)
        return
    live = f"v{detail.published_version}" if detail.published_version else "none"
    console.print(
        f"[bold]{detail.name}[/] v{detail.version} ({detail.status}, live {live}) "
        f"{detail.sha[:10]} - {detail.description}",
        highlight=False,
    )
    console.print(f"owner {detail.owner}; tags {detail.tags}; calls {detail.calls}")
    for var, spec in detail.metadata.variables.items():
        need = "required" if spec.required and spec.default is None else f"default {spec.default!r}"
        console.print(f"  {var}: {spec.type} ({need}) {spec.description}", highlight=False)
    typer.echo("---")
    typer.echo(detail.template, nl=False)


def _read_metadata_file(path: Path | None) -> str | None:
    return path.read_text(encoding="utf-8") if path else None


@app.command("create")
@handle_errors
def create_cmd(
    name: NameArg,
    template: Annotated[Path, typer.Option("--template", "-t", help="Jinja2 file.", exists=True)],
    metadata: Annotated[
        Optional[Path], typer.Option("--metadata", help="prompt.yaml file.", exists=True)
    ] = None,
    message: MessageOpt = "",
    json: JsonResultOpt = False,
) -> None:
    """Create a template from a Jinja2 file and a prompt.yaml (one commit, version 1)."""
    config = settings()
    detail = _store().create(
        name,
        template.read_text(encoding="utf-8"),
        _read_metadata_file(metadata) or "{}\n",
        config.author,
        config.author,
        message,
    )
    _print_version(detail.name, detail.version, detail.sha, json, detail)


def _print_version(name: str, version: int, sha: str, json: bool, payload: Any) -> None:
    if json:
        print_json(payload)
    else:
        console.print(f"[green]{name} v{version}[/] committed ({sha[:10]}).", highlight=False)


def _run_editor(editor: str, path: Path) -> None:
    import shlex
    import subprocess

    from mlops.errors import InvalidInputError

    result = subprocess.run([*shlex.split(editor), str(path)], check=False)
    if result.returncode != 0:
        raise InvalidInputError(f"The editor exited with code {result.returncode}; nothing saved.")


@app.command("edit")
@handle_errors
def edit_cmd(
    name: NameArg,
    metadata: Annotated[
        bool, typer.Option("--metadata", help="Edit prompt.yaml instead of the template.")
    ] = False,
    message: MessageOpt = "",
    json: JsonResultOpt = False,
) -> None:
    """Open the latest version in $EDITOR and commit the result as a new version."""
    import tempfile

    from mlops.errors import MlopsError

    config = settings()
    store = _store()
    detail = store.detail(name)
    file = "prompt.yaml" if metadata else "template.j2"
    original = store.repository.read(detail.sha, f"{name}/{file}")
    with tempfile.TemporaryDirectory(prefix="mlops-edit-") as tmp:
        path = Path(tmp) / f"{name}.{file}"
        path.write_text(original, encoding="utf-8")
        _run_editor(config.editor, path)
        edited = path.read_text(encoding="utf-8")
    if edited == original:
        err_console.print("No changes; nothing committed.")
        return
    try:
        updated = store.update(
            name,
            detail.version,
            None if metadata else edited,
            edited if metadata else None,
            config.author,
            config.author,
            message or f"Edit {file} of {name}",
        )
    except MlopsError:
        kept = _keep_edit(config.home, name, file, edited)
        err_console.print(f"Your edit is kept in {kept}.", highlight=False)
        raise
    _print_version(updated.name, updated.version, updated.sha, json, updated)


def _keep_edit(home: Path, name: str, file: str, text: str) -> Path:
    """A refused edit is saved under the state folder so the work is not lost."""
    import os
    import tempfile

    folder = home / "prompt-edits"
    folder.mkdir(parents=True, exist_ok=True)
    # mkstemp picks a name no other process holds (a timestamp alone collides when
    # several edits are refused in the same second) and creates the file atomically.
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name_on_disk = tempfile.mkstemp(prefix=f"{name}.{stamp}.", suffix=f".{file}", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return Path(name_on_disk)


@app.command("history")
@handle_errors
def history_cmd(name: NameArg, json: JsonOpt = False) -> None:
    """Versions of a template (the git log of its folder)."""
    versions = _store().history(name)
    if json:
        print_json(versions)
        return
    table = Table(title=f"History of {name}")
    for column in ("version", "sha", "author", "when", "message", "live"):
        table.add_column(column)
    for v in versions:
        mark = "*" if v.live else ("published" if v.published else "")
        first_line = v.message.splitlines()[0] if v.message else ""
        table.add_row(f"v{v.version}", v.sha[:10], v.author, _when(v.time), first_line, mark)
    console.print(table)


@app.command("diff")
@handle_errors
def diff_cmd(
    name: NameArg,
    from_version: FromVersionArg,
    to_version: ToVersionArg,
    json: Annotated[bool, typer.Option("--json", help="Print the diffs as JSON.")] = False,
) -> None:
    """Unified diff of the template and its metadata between two versions."""
    diff = _store().diff(name, from_version, to_version)
    if json:
        print_json(diff)
        return
    typer.echo(diff.template_diff or "(template unchanged)\n", nl=False)
    typer.echo(diff.metadata_diff or "(metadata unchanged)\n", nl=False)


def _print_release(result: PublishResult, json: bool) -> None:
    if json:
        print_json(result)
        return
    console.print(
        f"[green]{result.event}: {result.name} v{result.version} is live[/] "
        f"(tag {result.tag}, {result.sha[:10]}).",
        highlight=False,
    )
    if result.pushed is False:
        err_console.print(f"[yellow]Push failed:[/] {result.push_error}", highlight=False)
    if result.mlflow and not result.mlflow.registered:
        err_console.print(f"[yellow]MLflow registration failed:[/] {result.mlflow.error}")


@app.command("publish")
@handle_errors
def publish_cmd(
    name: NameArg,
    version: Annotated[Optional[int], typer.Argument(help="Default: latest.")] = None,
    message: MessageOpt = "",
    json: JsonResultOpt = False,
) -> None:
    """Publish a version (its examples must pass). When config/gates.yaml asks approvals
    for prompts, it records a publication request instead and exits 14: approvers other
    than you then run `mlops prompts approve ID`."""
    from mlops.prompts.publications import PublicationInfo, publish_or_request

    store = _store()
    target = version or store.record(name).version
    result = publish_or_request(store, name, target, settings().author, message)
    if isinstance(result, PublicationInfo):
        _print_request(result, json)
    else:
        _print_release(result, json)


def _print_request(request: PublicationInfo, json: bool) -> None:
    """A publication request as its decision left it; exit 14 while it awaits approvals,
    10 once rejected."""
    from mlops.cli.common import AWAITING_APPROVAL_EXIT, DEPLOYMENT_FAILED_EXIT, failed

    if json:
        print_json(request)
    elif request.approvals:
        for d in request.approvals:
            mark = "✓" if d.decision == "approve" else "✗"
            console.print(f"{mark} {d.approver}: {d.comment}", highlight=False)
    where = f"{request.template} v{request.version}"
    if request.status == "published":
        if not json:
            console.print(f"[green]published: {where} is live[/] ({(request.sha or '')[:10]}).")
        return
    if request.status == "rejected":
        failed(
            f"Publication {request.id} of {where} was rejected: {request.error}",
            DEPLOYMENT_FAILED_EXIT,
        )
    err_console.print(
        f"Publication {request.id} of {where} awaits approval ({request.approvals_given} of "
        f"{request.approvals_required}, until {request.expires_at:%Y-%m-%d %H:%M} UTC): the "
        "live version has not changed.",
        highlight=False,
        soft_wrap=True,
    )
    err_console.print(
        f"Approvers other than {request.requested_by}: mlops prompts approve {request.id[:8]} "
        "--comment '...' (or reject).",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(AWAITING_APPROVAL_EXIT)


RequestArg = Annotated[str, typer.Argument(help="Publication request id (can be shortened).")]


def _decide(request: str, decision: Decision, comment: str, json: bool) -> None:
    from mlops.approvals import DecisionRequest
    from mlops.errors import checked
    from mlops.prompts import publications
    from mlops.roles import Role
    from mlops.users import cli_user

    config = settings()
    body = checked(DecisionRequest, {"comment": comment})
    request_id = publications.resolve_request_id(config, request)
    caller = cli_user(config, Role.APPROVER, "Deciding on a publication")
    _print_request(publications.decide(_store(), request_id, caller, decision, body.comment), json)


@app.command("approve")
@handle_errors
def approve_cmd(request: RequestArg, comment: CommentOpt = "", json: JsonResultOpt = False) -> None:
    """Approve a publication awaiting approval, as MLOPS_AUTHOR, who must be a user with
    the approver role (approvers other than its requester, once each); the approval that
    completes the count publishes it. Exit code 14 while more approvals are needed."""
    _decide(request, "approve", comment, json)


@app.command("reject")
@handle_errors
def reject_cmd(request: RequestArg, comment: CommentOpt = "", json: JsonResultOpt = False) -> None:
    """Reject a publication awaiting approval: the live version is unchanged (exit 10)."""
    _decide(request, "reject", comment, json)


@app.command("live")
@handle_errors
def live_cmd(
    name: NameArg,
    at: AtOpt = None,
    json: JsonOpt = False,
) -> None:
    """Who made which version live when (publishes and rollbacks, newest first); with
    --at, the version live then."""
    from mlops.prompts.publishing import live_history

    moment = parse_moment(at)
    history = live_history(_store(), name, moment)
    if json:
        print_json(history)
        return
    table = Table(title=f"Live label of {name}")
    for column in ("when", "event", "from", "to", "by", "approved by", "message"):
        table.add_column(column)
    for c in history.changes:
        table.add_row(
            _when(c.time),
            c.event,
            f"v{c.from_version}" if c.from_version else "-",
            f"v{c.to_version}",
            c.by,
            ", ".join(c.approved_by),
            c.message,
        )
    console.print(table)
    if moment is not None:
        live = f"v{history.live_at}" if history.live_at else "no version"
        console.print(f"Live at {moment.isoformat()}: {live}.")
    if history.label_moved_outside:
        err_console.print(
            f"[yellow]Warning:[/] the tag {name}/production points at "
            f"{history.label_moved_outside[:10]}, not at the last release: it was moved "
            "outside the platform. Renders follow the recorded release.",
            highlight=False,
        )


@app.command("acknowledge")
@handle_errors
def acknowledge_cmd(name: NameArg, comment: CommentOpt = "") -> None:
    """Acknowledge the live tag moved outside the platform (`git tag -f`), as MLOPS_AUTHOR (a
    user with the approver role): recorded, the tag goes back on the recorded release, and
    `mlops prompts rollback` runs again."""
    from mlops.approvals import DecisionRequest
    from mlops.errors import checked
    from mlops.prompts.publishing import acknowledge_label_move
    from mlops.roles import Role
    from mlops.users import cli_user

    config = settings()
    body = checked(DecisionRequest, {"comment": comment})
    caller = cli_user(config, Role.APPROVER, "Acknowledging a move of the live tag")
    detail = acknowledge_label_move(_store(), name, caller, body.comment)
    console.print(f"Acknowledged: the live tag of {name} is back on v{detail.published_version}.")


@app.command("requests")
@handle_errors
def requests_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Only this template's.")] = None,
    json: JsonOpt = False,
) -> None:
    """Publication requests (publications that waited for approvers), newest first."""
    from mlops.prompts.publications import list_requests

    found = list_requests(settings(), name)
    if json:
        print_json(found)
        return
    table = Table(title="Publication requests (ids can be shortened)")
    for column in ("id", "template", "v", "status", "approvals", "by", "when", "error"):
        table.add_column(column, no_wrap=column != "error", overflow="fold")
    for r in found:
        table.add_row(
            r.id[:8],
            r.template,
            str(r.version),
            r.status,
            f"{r.approvals_given}/{r.approvals_required}",
            r.requested_by,
            _when(r.created_at),
            r.error or "",
        )
    console.print(table) if found else console.print("No publication requests.")


@app.command("rollback")
@handle_errors
def rollback_cmd(
    name: NameArg,
    version: RollbackVersionArg,
    message: MessageOpt = "",
    json: JsonResultOpt = False,
) -> None:
    """Publish an older version again (a new recorded event)."""
    from mlops.prompts.publishing import rollback

    _print_release(rollback(_store(), name, version, settings().author, message), json)


@app.command("archive")
@handle_errors
def archive_cmd(
    name: NameArg,
    restore: Annotated[bool, typer.Option("--restore", help="Un-archive.")] = False,
    message: MessageOpt = "",
) -> None:
    """Archive a template (hidden from listings, history kept), or restore it."""
    from mlops.prompts.publishing import set_archived

    detail = set_archived(_store(), name, not restore, settings().author, message)
    console.print(f"{detail.name} is now {detail.status}.")


def _parse_vars(values: list[str] | None, vars_file: Path | None) -> dict[str, Any]:
    import yaml

    from mlops.errors import InvalidInputError

    variables: dict[str, Any] = {}
    if vars_file:
        try:
            loaded = yaml.safe_load(vars_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{vars_file} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidInputError(f"{vars_file} must hold a mapping of variables.")
        variables.update(loaded)
    variables.update(parse_assignments(values, "--var"))
    return variables


@app.command("render")
@handle_errors
def render_cmd(
    name: NameArg,
    var: Annotated[
        Optional[list[str]], typer.Option("--var", "-v", help="name=value (YAML value).")
    ] = None,
    vars_file: Annotated[
        Optional[Path], typer.Option("--vars", help="YAML/JSON file of variables.", exists=True)
    ] = None,
    version: Annotated[Optional[int], typer.Option(help="A version number.")] = None,
    label: Annotated[
        Optional[str], typer.Option(help="'production' (default) or 'latest'.")
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print the render (id, version, output) as JSON.")
    ] = False,
) -> None:
    """Render a template in the sandbox (recorded as a usage event)."""
    from mlops.prompts.usage import recorder_for

    config = settings()
    try:
        result = _store().render(name, _parse_vars(var, vars_file), config.author, version, label)
    finally:
        recorder_for(config.metadata_url).flush()
    if json:
        print_json(result)
    else:
        typer.echo(result.output, nl=not result.output.endswith("\n"))


@app.command("usage")
@handle_errors
def usage_cmd(
    name: NameArg,
    bucket: Annotated[
        BucketChoice, typer.Option(help="Time bucket of the series (as the API).")
    ] = BucketChoice.hour,
    start: Annotated[Optional[datetime], typer.Option(help="Default: 7 days ago.")] = None,
    end: Annotated[Optional[datetime], typer.Option(help="Default: now.")] = None,
    json: JsonOpt = False,
) -> None:
    """Calls, success rate, failures and latency of a template, per version and over time."""
    from mlops.prompts.analytics import usage_report

    _store().state(name)
    report = usage_report(settings().metadata_url, name, start, end, bucket.value)
    if json:
        print_json(report)
        return
    t = report.total
    rate = f"{t.success_rate:.1%}" if t.success_rate is not None else "-"
    console.print(
        f"[bold]{name}[/]: {t.calls} calls, success {rate}, p50 {t.latency_p50_ms} ms, "
        f"p95 {t.latency_p95_ms} ms; failures {report.failures_by_kind or 'none'}; "
        f"outcomes {report.outcomes or 'none'}"
    )
    table = Table(title=f"Per {bucket.value}")
    for column in ("start", "calls", "success", "mean ms"):
        table.add_column(column)
    for b in report.series:
        table.add_row(
            _when(b.start),
            str(b.calls),
            f"{b.success_rate:.1%}",
            str(b.latency_mean_ms),
        )
    console.print(table)


@app.command("test")
@handle_errors
def test_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Default: every template.")] = None,
    version: Annotated[Optional[int], typer.Option(help="Default: latest.")] = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print the example reports as JSON.")
    ] = False,
) -> None:
    """Run the examples of templates; exit code 2 when one fails."""
    store = _store()
    names = [name] if name else [t.name for t in store.list_templates()]
    reports = [store.run_examples(n, version) for n in names]
    if json:
        print_json(reports)
    else:
        for report in reports:
            for r in report.results:
                mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
                console.print(f"{mark} {report.name} v{report.version} {r.name}", highlight=False)
                if not r.passed:
                    console.print(r.error or _mismatch(r.expected, r.output or ""), highlight=False)
    if not all(r.passed for r in reports):
        raise typer.Exit(2)


def _mismatch(expected: str, output: str) -> str:
    import difflib

    lines = difflib.unified_diff(
        expected.splitlines(keepends=True), output.splitlines(keepends=True), "expected", "output"
    )
    return "".join(lines) or jsonlib.dumps(output)
