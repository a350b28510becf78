"""`mlops users ...` and `mlops tokens ...`: who may use the platform, with which role, and
their personal API tokens. Run on the state folder itself (its owner administers it); the
API offers the same to admins (`/api/v1/users`, `/api/v1/tokens`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlops.cli.common import JsonOpt, console, handle_errors, print_json, settings
from mlops.roles import Role

if TYPE_CHECKING:
    from mlops.settings import Settings

users_app = typer.Typer(
    help="Users and their roles: viewer < researcher < approver < admin.", no_args_is_help=True
)
tokens_app = typer.Typer(
    help="Personal API tokens: shown once, stored hashed, revocable.", no_args_is_help=True
)

RoleArg = Annotated[Role, typer.Argument(help="viewer, researcher, approver or admin.")]


def _state_folder() -> Settings:
    """The settings, with the state folder made if this is its first command."""
    config = settings()
    config.ensure_dirs()
    return config


@users_app.command("add")
@handle_errors
def add_cmd(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '.', '_', '-'.")],
    role: RoleArg,
    email: Annotated[str | None, typer.Option(help="Shown next to the name.")] = None,
    json: JsonOpt = False,
) -> None:
    """Add a user with a role (then give them a token: `mlops tokens create NAME`)."""
    from mlops.users import add_user

    config = _state_folder()
    user = add_user(config, name, role, by=config.author, email=email)
    if json:
        print_json(user)
        return
    console.print(f"Added {user.name} ({user.role.value}).")


@users_app.command("list")
@handle_errors
def list_cmd(json: JsonOpt = False) -> None:
    """List users with their role and whether they are disabled."""
    from mlops.users import list_users

    found = list_users(_state_folder())
    if json:
        print_json(found)
        return
    table = Table("name", "role", "email", "state", "created", "by")
    for user in found:
        state = "disabled" if user.disabled else "active"
        created = f"{user.created_at:%Y-%m-%d %H:%M}"
        table.add_row(user.name, user.role.value, user.email or "", state, created, user.created_by)
    console.print(table)


@users_app.command("set-role")
@handle_errors
def set_role_cmd(name: str, role: RoleArg, json: JsonOpt = False) -> None:
    """Change a user's role (the last enabled admin keeps theirs)."""
    from mlops.users import set_role

    user = set_role(_state_folder(), name, role)
    if json:
        print_json(user)
        return
    console.print(f"{user.name} is now a {user.role.value}.")


@users_app.command("disable")
@handle_errors
def disable_cmd(
    name: str,
    enable: Annotated[bool, typer.Option("--enable", help="Enable the user again.")] = False,
    json: JsonOpt = False,
) -> None:
    """Disable a user: their tokens stop working and their console sessions end."""
    from mlops.users import set_disabled

    user = set_disabled(_state_folder(), name, disabled=not enable)
    if json:
        print_json(user)
        return
    console.print(f"{user.name} is {'disabled' if user.disabled else 'enabled'}.")


@tokens_app.command("create")
@handle_errors
def create_cmd(
    user: Annotated[str, typer.Argument(help="Whose token it is.")],
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "cli",
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", help="Default: never.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Create a token for a user and print it once (it is not stored, only its hash)."""
    from mlops.users import create_token

    token = create_token(_state_folder(), user, name, expires_in_days)
    if json:
        print_json(token)
        return
    until = f"until {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else "no expiry"
    console.print(f"Token {token.id} '{token.name}' for {token.user} ({until}):")
    typer.echo(token.token)
    console.print("Keep it now: it is not shown again.", style="yellow")


@tokens_app.command("list")
@handle_errors
def tokens_list_cmd(
    user: Annotated[str | None, typer.Argument(help="Only this user's tokens.")] = None,
    json: JsonOpt = False,
) -> None:
    """List tokens (their first characters, never the tokens) and their state."""
    from mlops.users import list_tokens

    found = list_tokens(_state_folder(), user)
    if json:
        print_json(found)
        return
    table = Table("id", "user", "name", "starts with", "state", "created", "expires")
    for token in found:
        expires = f"{token.expires_at:%Y-%m-%d %H:%M}" if token.expires_at else ""
        created = f"{token.created_at:%Y-%m-%d %H:%M}"
        table.add_row(
            str(token.id), token.user, token.name, token.hint, token.state, created, expires
        )
    console.print(table)


@tokens_app.command("revoke")
@handle_errors
def revoke_cmd(token_id: int, json: JsonOpt = False) -> None:
    """Revoke a token: calls with it are refused (in other processes within 2 s)."""
    from mlops.users import revoke_token

    token = revoke_token(_state_folder(), token_id)
    if json:
        print_json(token)
        return
    console.print(f"Token {token.id} '{token.name}' of {token.user} is revoked.")
