"""`mlops datasets ...`: build, list and download training datasets."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from mlops.cli.common import console, handle_errors, print_json, settings

app = typer.Typer(
    help="Build, list and download point-in-time correct training datasets.", no_args_is_help=True
)


@app.command("create")
@handle_errors
def create_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name (letters, digits, '_', '-', '.').")],
    feature: Annotated[
        Optional[list[str]],
        typer.Option(
            "--feature", "-f", help="Feature ('view:feature' or name); repeat. Default: service."
        ),
    ] = None,
    service: Annotated[Optional[str], typer.Option(help="Feature service.")] = None,
    ticker: Annotated[
        Optional[list[str]], typer.Option("--ticker", "-t", help="Ticker; repeat. Default: all.")
    ] = None,
    start: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"])] = None,
    end: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"])] = None,
    label: Annotated[bool, typer.Option("--label/--no-label", help="Add the label.")] = True,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a training dataset from features, tickers and a time range."""
    from mlops.features.datasets import DatasetRequest, create_dataset

    config = settings()
    request = DatasetRequest(
        name=name,
        features=feature or [],
        feature_service=service,
        tickers=ticker or [],
        start=start.date() if start else None,
        end=end.date() if end else None,
        include_label=label,
    )
    with console.status(f"Joining features point-in-time for '{name}'..."):
        info = create_dataset(config, request, config.author)
    if json:
        print_json(info)
        return
    console.print(
        f"[green]Dataset {info.name}: {info.rows} rows, {len(info.features)} features, "
        f"{len(info.tickers)} tickers, {info.start:%Y-%m-%d} to {info.end:%Y-%m-%d}.[/]"
    )


@app.command("list")
@handle_errors
def list_cmd(json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List training datasets."""
    from mlops.features.datasets import list_datasets

    items = list_datasets(settings())
    if json:
        print_json(items)
        return
    table = Table(title=f"Datasets ({len(items)})")
    for column in ("name", "rows", "features", "tickers", "range", "created"):
        table.add_column(column)
    for d in items:
        table.add_row(
            d.name,
            str(d.rows),
            str(len(d.features)),
            str(len(d.tickers)),
            f"{d.start:%Y-%m-%d}..{d.end:%Y-%m-%d}",
            f"{d.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command("download")
@handle_errors
def download_cmd(
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder.")] = Path("."),
    format: Annotated[str, typer.Option(help="parquet or csv")] = "parquet",
) -> None:
    """Write a dataset to a local file as parquet or CSV."""
    from mlops.errors import InvalidInputError
    from mlops.features.datasets import export_dataset

    if format not in ("parquet", "csv"):
        raise InvalidInputError("--format must be parquet or csv.")
    path = export_dataset(settings(), name, output, format)  # type: ignore[arg-type]
    console.print(f"Wrote {path}")
