"""Users and API tokens (admins), and who the caller is (any user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from mlops.api.deps import Admin, SettingsDep, require_role
from mlops.api.errors import READ_ERRORS, WRITE_ERRORS
from mlops.errors import ConflictError
from mlops.roles import Principal, Role
from mlops.users import (
    MAX_EXPIRY_DAYS,
    NewToken,
    TokenInfo,
    UserInfo,
    add_user,
    create_token,
    get_user,
    list_tokens,
    list_users,
    revoke_token,
    set_disabled,
    set_role,
)

router = APIRouter(tags=["users"], responses=READ_ERRORS)
AnyUser = Annotated[Principal, Depends(require_role(Role.VIEWER))]


class Me(BaseModel):
    name: str
    role: Role


class NewUser(BaseModel):
    name: str = Field(description="Lowercase letters, digits, '.', '_', '-' (1 to 64).")
    role: Role
    email: str | None = Field(None, max_length=320)


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = Field(None, description="Disabled users' tokens stop working.")


class TokenRequest(BaseModel):
    user: str
    name: str = Field("api", min_length=1, max_length=100, description="What it is for.")
    expires_in_days: float | None = Field(
        None, gt=0, le=MAX_EXPIRY_DAYS, description="Default: never."
    )


@router.get("/me", response_model=Me)
async def me(caller: AnyUser) -> Me:
    """The user the bearer token belongs to, and their role."""
    return Me(name=caller.name, role=caller.role)


@router.get("/users", response_model=list[UserInfo], responses=WRITE_ERRORS)
async def users(settings: SettingsDep, caller: Admin) -> list[UserInfo]:
    return await run_in_threadpool(list_users, settings)


@router.post("/users", response_model=UserInfo, status_code=201, responses=WRITE_ERRORS)
async def create_user(body: NewUser, settings: SettingsDep, caller: Admin) -> UserInfo:
    """Add a user (409 if the name is taken)."""
    return await run_in_threadpool(
        add_user, settings, body.name, body.role, caller.name, body.email
    )


@router.patch("/users/{name}", response_model=UserInfo, responses=WRITE_ERRORS)
async def change_user(
    name: str, body: UserChange, settings: SettingsDep, caller: Admin
) -> UserInfo:
    """Change a user's role or disable (enable) them; the last enabled admin stays one."""

    def change() -> UserInfo:
        if body.role is not None:
            set_role(settings, name, body.role)
        if body.disabled is not None:
            set_disabled(settings, name, body.disabled)
        return get_user(settings, name)

    return await run_in_threadpool(change)


@router.get("/tokens", response_model=list[TokenInfo], responses=WRITE_ERRORS)
async def tokens(
    settings: SettingsDep,
    caller: Admin,
    user: Annotated[str | None, Query(description="Only this user's tokens.")] = None,
) -> list[TokenInfo]:
    """Tokens by their first characters and state (never the tokens)."""
    return await run_in_threadpool(list_tokens, settings, user)


@router.post("/tokens", response_model=NewToken, status_code=201, responses=WRITE_ERRORS)
async def new_token(body: TokenRequest, settings: SettingsDep, caller: Admin) -> NewToken:
    """A new token for a user: the answer is the only time it is shown."""
    return await run_in_threadpool(
        create_token, settings, body.user, body.name, body.expires_in_days
    )


@router.delete("/tokens/{token_id}", response_model=TokenInfo, responses=WRITE_ERRORS)
async def revoke(
    token_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], settings: SettingsDep, caller: Admin
) -> TokenInfo:
    """Revoke a token (calls with it are refused; in other processes within 2 s). Not the
    token of this call (409): that would lock its user out in the middle of their work."""
    if token_id == caller.token_id:
        raise ConflictError(
            "This is the token of this call: revoke it with another admin's token, or with "
            "`mlops tokens revoke` on the state folder.",
            {"id": token_id},
        )
    return await run_in_threadpool(revoke_token, settings, token_id)
