"""`mlops features ...`: the catalog, version history, diff and rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.table import Table

from mlops.cli.common import JsonOpt, console, handle_errors, print_json, settings

app = typer.Typer(
    help="Browse features, their versions and statistics; diff and roll back.", no_args_is_help=True
)


@app.command("list")
@handle_errors
def list_cmd(
    dtype: Annotated[
        Optional[str], typer.Option("--type", help="Feast dtype, e.g. Float64.")
    ] = None,
    view: Annotated[Optional[str], typer.Option(help="Only this feature view.")] = None,
    search: Annotated[Optional[str], typer.Option("--search", "-s", help="Substring.")] = None,
    updated_after: Annotated[Optional[datetime], typer.Option(help="Updated at/after.")] = None,
    page: int = 1,
    page_size: int = 50,
    json: JsonOpt = False,
) -> None:
    """List features with type, view, latest version and last update."""
    from mlops.features.catalog import FeatureFilter, list_features

    filters = FeatureFilter(
        dtype=dtype,
        view=view,
        q=search,
        updated_after=updated_after,
        page=page,
        page_size=page_size,
    )
    result = list_features(settings(), filters)
    if json:
        print_json(result)
        return
    table = Table(title=f"Features ({result.total})")
    for column in ("name", "view", "type", "version", "updated", "description"):
        table.add_column(column, no_wrap=column != "description")
    for f in result.items:
        table.add_row(
            f.name,
            f.feature_view,
            f.dtype,
            f"v{f.latest_version}",
            f.last_updated.strftime("%Y-%m-%d %H:%M"),
            f.description,
        )
    console.print(table)


@app.command("show")
@handle_errors
def show_cmd(
    name: Annotated[str, typer.Argument(help="Feature name or 'view:feature'.")],
    version: Annotated[Optional[int], typer.Option(help="Statistics of this version.")] = None,
    json: JsonOpt = False,
) -> None:
    """Show a feature's metadata, statistics and sample rows."""
    from mlops.features.catalog import feature_detail

    detail = feature_detail(settings(), name, version)
    if json:
        print_json(detail)
        return
    console.print(
        f"[bold]{detail.feature_view}:{detail.name}[/] ({detail.dtype}) "
        f"v{detail.latest_version} - {detail.description}"
    )
    console.print(f"owner {detail.owner}; tags {detail.tags}; updated {detail.last_updated}")
    if detail.statistics:
        stats = detail.statistics
        table = Table(title=f"Statistics (v{detail.statistics_version})")
        for key in ("count", "nulls", "min", "max", "mean", "std"):
            table.add_column(key)
        table.add_row(
            *(
                f"{stats[k]:.6g}" if isinstance(stats[k], float) else str(stats[k])
                for k in ("count", "nulls", "min", "max", "mean", "std")
            )
        )
        console.print(table)
        console.print(
            "quantiles: "
            + ", ".join(f"{k}={v:.4g}" for k, v in stats["quantiles"].items() if v is not None)
        )
    samples = Table(title="Latest rows")
    for column in ("ticker", "time", "value"):
        samples.add_column(column)
    for row in detail.samples:
        samples.add_row(row["ticker"], row["event_timestamp"], str(row["value"]))
    console.print(samples)


@app.command("history")
@handle_errors
def history_cmd(
    view: Annotated[str, typer.Argument(help="Feature view (or a feature of it).")],
    json: JsonOpt = False,
) -> None:
    """Version history of a feature view."""
    from mlops.errors import NotFoundError
    from mlops.features import versions
    from mlops.features.catalog import find_feature

    config = settings()
    try:
        history = versions.history(config, view)
    except NotFoundError:
        history = versions.history(config, find_feature(config, view).feature_view)
    if json:
        print_json(history)
        return
    table = Table(title=f"History of {history[0].view_name}")
    for column in ("version", "kind", "origin", "author", "when", "message", "active"):
        table.add_column(column)
    for v in history:
        table.add_row(
            f"v{v.version}",
            v.change_kind,
            v.origin,
            v.author,
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            v.message,
            "*" if v.active else "",
        )
    console.print(table)


@app.command("diff")
@handle_errors
def diff_cmd(view: str, from_version: int, to_version: int, json: JsonOpt = False) -> None:
    """Diff two versions of a feature view."""
    from mlops.features import versions

    diff = versions.diff(settings(), view, from_version, to_version)
    if json:
        print_json(diff)
        return
    for change in diff.features:
        console.print(f"{change.change:>8}  {change.name}")
    console.print(diff.unified or "No differences.", highlight=False)


@app.command("rollback")
@handle_errors
def rollback_cmd(
    view: str,
    version: int,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Make an older version of a feature view active again (re-materialized)."""
    from mlops.features.rollback import rollback_view

    config = settings()
    if not yes:
        typer.confirm(f"Roll back {view} to version {version}?", abort=True)
    with console.status(f"Rolling back {view} and re-materializing..."):
        info = rollback_view(config, view, version, config.author, message)
    console.print(f"[green]{view} is now at v{info.version} (definition of v{version}).[/]")


@app.command("repair")
@handle_errors
def repair_cmd() -> None:
    """Recompute every feature and label from the stored bars, as a new snapshot.

    The bars are the source of truth. Use it after a change of the feature code, or to
    check a store: it writes one new snapshot (readers see the old one until it is
    complete), loads the latest values into the online store, records statistics, and
    removes what killed writers left behind."""
    from mlops.features.ingest import repair_offline

    with console.status("Recomputing features and labels from the bars..."):
        summary = repair_offline(settings())
    console.print(summary, highlight=False)
