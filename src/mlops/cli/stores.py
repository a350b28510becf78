"""`mlops stores ...`: accept a new empty store in place of one that was lost."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from mlops.cli.common import console, handle_errors, settings
from mlops.errors import NotFoundError

app = typer.Typer(help="Stores the platform remembers using.", no_args_is_help=True)


class RememberedStore(StrEnum):
    mlflow = "mlflow"


@app.command("forget")
@handle_errors
def forget_cmd(
    store: Annotated[RememberedStore, typer.Argument(help="The store to forget.")],
) -> None:
    """Forget that the platform used this store, so a new empty one is accepted.

    The platform refuses to recreate MLflow's tracking database silently when the one it
    used is missing or empty (its experiments and models would seem gone). Run this only
    when that store is lost for good; then restart the API.
    """
    from mlops.lifecycle.mlflow_backend import forget_tracking_store, public_uri

    config = settings()
    uri = public_uri(config.tracking_uri)
    if not forget_tracking_store(config):
        raise NotFoundError(f"The platform has no record of using {uri}.")
    console.print(f"Forgot {uri}: the next use creates a new empty store.", highlight=False)
