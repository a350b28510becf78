"""`mlops models ...` (registry, deploy with live stage progress, status, rollback) and
`mlops predict`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from mlops.cli.common import (
    AWAITING_APPROVAL_EXIT,
    DEPLOYMENT_FAILED_EXIT,
    AtOpt,
    CommentOpt,
    JsonOpt,
    console,
    err_console,
    failed,
    handle_errors,
    parse_moment,
    print_json,
    settings,
)

if TYPE_CHECKING:
    from mlops.approvals import Decision
    from mlops.lifecycle.deployments import DeploymentInfo
    from mlops.usecases.started import Started

app = typer.Typer(
    help="Browse the model registry; deploy through validate -> staging -> production; roll back.",
    no_args_is_help=True,
)
STATUS_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "passed": "green",
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "awaiting_approval": "yellow",
    "rejected": "red",
}


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


@app.command("list")
@handle_errors
def list_cmd(
    stage: Annotated[
        Optional[str], typer.Option(help="Production, Staging, Archived or None.")
    ] = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Substring.")] = None,
    json: JsonOpt = False,
) -> None:
    """Registered models and their versions with stage and key metrics."""
    from mlops.lifecycle.registry import ModelQuery, list_models

    result = list_models(settings(), ModelQuery.model_validate({"stage": stage, "search": search}))
    if json:
        print_json(result)
        return
    table = Table(title=f"Registered models ({result.total})")
    for column in ("model", "v", "stage", "accuracy", "roc_auc", "run", "created"):
        table.add_column(column, no_wrap=True)
    for model in result.items:
        for v in model.versions:
            table.add_row(
                model.name,
                v.version,
                v.stage,
                _metric(v.metrics.get("accuracy")),
                _metric(v.metrics.get("roc_auc")),
                (v.run_id or "")[:8],
                v.created.strftime("%Y-%m-%d") if v.created else "-",
            )
    console.print(table)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command("show")
@handle_errors
def show_cmd(name: str, json: JsonOpt = False) -> None:
    """A registered model: its versions, stages, and recent deployments."""
    from mlops.lifecycle.deployments import list_deployments
    from mlops.lifecycle.registry import get_model

    config = settings(reap=True)
    model = get_model(config, name)
    history = list_deployments(config, name, limit=10)
    if json:
        print_json({"model": model, "deployments": history})
        return
    console.print(
        f"[bold]{model.name}[/]: production v{model.production_version or '-'}, "
        f"staging v{model.staging_version or '-'}",
        highlight=False,
    )
    for v in model.versions:
        console.print(f"  v{v.version} [{v.stage}] {v.description}", highlight=False)
    if history:
        _print_history(history)


@app.command("history")
@handle_errors
def history_cmd(
    name: Annotated[str, typer.Argument(help="Registered model.")],
    at: AtOpt = None,
    json: JsonOpt = False,
) -> None:
    """The ledger of production and staging changes: who moved which alias, from which
    version to which, when and why; with --at, the versions the aliases pointed at then."""
    from mlops.lifecycle import ledger

    moment = parse_moment(at)
    found = ledger.model_history(settings(), name, moment)
    if json:
        print_json(found)
        return
    if moment is not None:
        console.print(
            f"At {moment:%Y-%m-%d %H:%M:%S}: production v{found.production_at or '-'}, "
            f"staging v{found.staging_at or '-'}",
            highlight=False,
        )
    table = Table(title=f"Alias changes of {name}, newest first")
    for column in ("when", "alias", "from", "to", "by", "why", "deployment"):
        table.add_column(column, overflow="fold")
    for c in found.changes:
        table.add_row(
            f"{c.changed_at:%Y-%m-%d %H:%M:%S}",
            c.alias,
            f"v{c.from_version}" if c.from_version else "-",
            f"v{c.to_version}" if c.to_version else "-",
            c.changed_by,
            c.reason,
            (c.deployment_id or "")[:8],
        )
    console.print(table)


def _print_history(history: list[DeploymentInfo]) -> None:
    table = Table(title="Deployments (ids can be shortened)")
    for column in ("id", "kind", "v", "target", "status", "by", "when", "error"):
        table.add_column(column, no_wrap=column != "error", overflow="fold")
    for d in history:
        table.add_row(
            d.id[:8],
            d.kind,
            d.version,
            d.target_stage,
            _styled(d.status),
            d.requested_by,
            d.created_at.strftime("%m-%d %H:%M"),
            d.error or "",
        )
    console.print(table)


def stage_table(info: DeploymentInfo) -> Table:
    """Stages with status, time and gate results of a deployment (and its approvals, when
    it asked for some, before production)."""
    table = Table(
        title=f"{info.kind} {info.model_name} v{info.version} -> {info.target_stage}: {info.status}"
    )
    for column in ("stage", "status", "seconds", "detail"):
        table.add_column(column)
    for stage in info.stages:
        if stage.name == "production" and info.approvals_required:
            table.add_row("approval", _styled(_approval_status(info)), "", _approvals(info))
        gates = "\n".join(f"{'✓' if g.passed else '✗'} {g.name}: {g.message}" for g in stage.gates)
        table.add_row(
            stage.name,
            _styled(stage.status),
            f"{stage.seconds:.2f}" if stage.seconds is not None else "",
            gates or stage.message,
        )
    return table


def _approval_status(info: DeploymentInfo) -> str:
    if info.approved:
        return "passed"
    return info.status if info.status in ("awaiting_approval", "rejected") else "failed"


def _approvals(info: DeploymentInfo) -> str:
    lines = [f"{info.approvals_given} of {info.approvals_required} approvals"]
    if info.status == "awaiting_approval" and info.approval_expires_at:
        lines[0] += f", until {info.approval_expires_at:%Y-%m-%d %H:%M} UTC"
    lines += [
        f"{'✓' if d.decision == 'approve' else '✗'} {d.approver}: {d.comment}"
        for d in info.approvals
    ]
    return "\n".join(lines)


def _follow(started: Started[DeploymentInfo]) -> DeploymentInfo:
    """Redraw the stage table while the deployment runs in this process."""
    from rich.live import Live

    with Live(stage_table(started.record()), console=console) as live:
        while started.running:
            started.join(0.25)
            live.update(stage_table(started.record()))
    return started.record()


def _finish(info: DeploymentInfo, json: bool) -> None:
    if json:
        print_json(info)
    if info.status == "awaiting_approval":
        waiting = (
            f"Deployment {info.id} awaits approval ({info.approvals_given} of "
            f"{info.approvals_required}, until {info.approval_expires_at:%Y-%m-%d %H:%M} UTC): "
            "production has not moved."
        )
        err_console.print(waiting, highlight=False, soft_wrap=True)
        err_console.print(
            f"Approvers other than {info.requested_by}: mlops models approve {info.id[:8]} "
            "--comment '...' (or reject).",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(AWAITING_APPROVAL_EXIT)
    if info.status != "succeeded":
        failed(f"Deployment {info.id} {info.status}: {info.error}", DEPLOYMENT_FAILED_EXIT)


@app.command("deploy")
@handle_errors
def deploy_cmd(
    name: Annotated[str, typer.Argument(help="Registered model.")],
    version: Annotated[str, typer.Argument(help="Version to deploy.")],
    target: Annotated[str, typer.Option("--target", "-t", help="staging or production.")] = (
        "production"
    ),
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why; kept in the audit record.")
    ] = "",
    json: JsonOpt = False,
) -> None:
    """Deploy a version through validate -> staging (-> production), showing each stage
    live. Exit code 10 when a gate fails; production is then unchanged. When
    config/gates.yaml asks for `approvals`, it stops after staging and exits 14: approvers
    other than you then run `mlops models approve ID`."""
    from mlops.errors import checked
    from mlops.orchestration import configure_prefect
    from mlops.usecases import deployments as use
    from mlops.users import local_principal

    config = settings(reap=True)
    body = checked(
        use.DeployRequest, {"version": version, "target_stage": target, "reason": reason}
    )
    configure_prefect(config, wait=False)  # starts while the request is checked
    _finish(_follow(use.deploy(config, local_principal(config), name, body)), json)


def _decide(deployment: str, decision: Decision, comment: str, json: bool) -> None:
    from mlops.approvals import DecisionRequest
    from mlops.errors import checked
    from mlops.lifecycle.deployments import resolve_deployment_id
    from mlops.orchestration import configure_prefect
    from mlops.roles import Role
    from mlops.usecases import deployments as use
    from mlops.users import cli_user

    config = settings(reap=True)
    body = checked(DecisionRequest, {"comment": comment})
    deployment_id = resolve_deployment_id(config, deployment)
    caller = cli_user(config, Role.APPROVER, "Deciding on a deployment")
    configure_prefect(config, wait=False)
    started = use.decide(config, caller, deployment_id, decision, body)
    _finish(_follow(started), json)


@app.command("approve")
@handle_errors
def approve_cmd(
    deployment: Annotated[str, typer.Argument(help="Deployment id (can be shortened).")],
    comment: CommentOpt = "",
    json: JsonOpt = False,
) -> None:
    """Approve a deployment awaiting approval, as MLOPS_AUTHOR, who must be a user with the
    approver role (approvers other than its requester, once each). The approval that
    completes the count runs the production stage here, live; exit code 14 while more
    approvals are needed."""
    _decide(deployment, "approve", comment, json)


@app.command("reject")
@handle_errors
def reject_cmd(
    deployment: Annotated[str, typer.Argument(help="Deployment id (can be shortened).")],
    comment: CommentOpt = "",
    json: JsonOpt = False,
) -> None:
    """Reject a deployment awaiting approval: it ends as rejected, production unchanged
    (exit code 10, like any deployment that did not reach its target)."""
    _decide(deployment, "reject", comment, json)


@app.command("acknowledge")
@handle_errors
def acknowledge_cmd(
    name: Annotated[str, typer.Argument(help="Registered model.")],
    comment: CommentOpt = "",
    json: JsonOpt = False,
) -> None:
    """Acknowledge an alias move made outside the platform (the MLflow UI), as MLOPS_AUTHOR
    (a user with the approver role):
    recorded in the ledger, it lets `mlops models rollback` restore the version the platform
    last put in production."""
    from mlops.approvals import DecisionRequest
    from mlops.errors import checked
    from mlops.lifecycle import ledger
    from mlops.roles import Role
    from mlops.users import cli_user

    config = settings()
    body = checked(DecisionRequest, {"comment": comment})
    caller = cli_user(config, Role.APPROVER, "Acknowledging a move")
    done = ledger.acknowledge(config, name, caller, body.comment)
    if json:
        print_json(done)
        return
    for change in done:
        console.print(
            f"Acknowledged: {change.alias} of {name} is v{change.to_version} "
            "(moved outside the platform).",
            highlight=False,
        )


@app.command("rollback")
@handle_errors
def rollback_cmd(
    name: str,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why; kept in the audit record.")
    ] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json: JsonOpt = False,
) -> None:
    """Restore the production version before the current one (recorded as a deployment)."""
    from mlops.errors import checked
    from mlops.orchestration import configure_prefect
    from mlops.usecases import deployments as use

    config = settings(reap=True)
    body = checked(use.RollbackRequest, {"reason": reason})
    plan = use.rollback_plan(config, name)
    if not yes:
        typer.confirm(f"Roll {name} back from v{plan.current} to v{plan.restore}?", abort=True)
    configure_prefect(config, wait=False)
    started = use.roll_back(config, config.author, name, body, expected_current=plan.current)
    _finish(_follow(started), json)


@app.command("status")
@handle_errors
def status_cmd(
    deployment: Annotated[
        Optional[str], typer.Argument(help="Deployment id (default: the latest).")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="History of this model.")] = None,
    json: JsonOpt = False,
) -> None:
    """A deployment's stages and gates, or the deployment history."""
    from mlops.lifecycle.deployments import (
        get_deployment,
        list_deployments,
        resolve_deployment_id,
    )

    config = settings(reap=True)
    if deployment:
        info = get_deployment(config, resolve_deployment_id(config, deployment))
        print_json(info) if json else console.print(stage_table(info))
        return
    history = list_deployments(config, model, limit=20)
    if json:
        print_json(history)
    elif history:
        _print_history(history)
    else:
        console.print("No deployments yet.")


def predict_cmd(
    tickers: Annotated[list[str], typer.Argument(help="Tickers to score.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model.")] = (
        "direction-model"
    ),
    stage: Annotated[str, typer.Option(help="production or staging.")] = "production",
    json: JsonOpt = False,
) -> None:
    """Predict next-day direction for tickers from their latest online features."""
    from mlops.lifecycle.serving import PredictRequest, predict

    result = predict(
        settings(), model, PredictRequest.model_validate({"tickers": tickers, "stage": stage})
    )
    if json:
        print_json(result)
        return
    table = Table(title=f"{result.model} v{result.version} ({result.stage})")
    for column in ("ticker", "P(up)", "direction"):
        table.add_column(column)
    for p in result.predictions:
        table.add_row(p.ticker, f"{p.probability_up:.4f}", p.direction)
    console.print(table)
