"""`mlops db ...`: the metadata database's schema migrations, for operators.

Every command, `mlops up` and `mlops api` upgrade the database when they open it (under a
lock, so two processes never migrate at once); these commands show where it stands and
upgrade it on purpose, e.g. before starting several API workers after an upgrade.
"""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from mlops.cli.common import JsonOpt, console, handle_errors, print_json, settings

app = typer.Typer(help="The metadata database's schema (Alembic migrations).", no_args_is_help=True)


def _describe(revision: str | None, head: str, pending: int) -> str:
    if revision is None:
        return f"empty (no migration applied; the newest is {head})"
    if not pending:
        return f"at {revision}, the newest migration"
    return f"at {revision}, {pending} migration{'s' if pending > 1 else ''} behind {head}"


@app.command("current")
@handle_errors
def current_cmd(json: JsonOpt = False) -> None:
    """Show the migration the metadata database is at, and what an upgrade would apply."""
    from mlops.db import schema_state

    state = schema_state(settings().metadata_url)
    if json:
        print_json({**asdict(state), "head": state.head})
        return
    console.print(f"{state.url}: {_describe(state.revision, state.head, len(state.pending))}.")
    for migration in state.pending:
        console.print(f"  would apply {migration.revision}: {migration.message}", highlight=False)


@app.command("history")
@handle_errors
def history_cmd(json: JsonOpt = False) -> None:
    """List every migration, oldest first, marking those the database has."""
    from mlops.db import schema_state

    state = schema_state(settings().metadata_url)
    if json:
        print_json([asdict(m) for m in state.migrations])
        return
    table = Table("revision", "applied", "what it changes", title=state.url)
    for migration in state.migrations:
        mark = "yes" + (" (current)" if migration.revision == state.revision else "")
        table.add_row(migration.revision, mark if migration.applied else "no", migration.message)
    console.print(table)


@app.command("upgrade")
@handle_errors
def upgrade_cmd(json: JsonOpt = False) -> None:
    """Apply the migrations the metadata database lacks (every row is kept)."""
    from mlops.db import upgrade_database

    before, after = upgrade_database(settings().metadata_url)
    applied = [m.revision for m in before.pending]
    if json:
        print_json(
            {"url": after.url, "from": before.revision, "to": after.revision, "applied": applied}
        )
        return
    if not applied:
        console.print(f"{after.url}: already {_describe(after.revision, after.head, 0)}.")
        return
    console.print(
        f"{after.url}: upgraded from {before.revision or 'an empty database'} to "
        f"{after.revision}, applying {', '.join(applied)}."
    )
