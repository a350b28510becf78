"""Request dependencies: the settings of the app and bearer-token checks.

They are `async def` because they never wait on anything: FastAPI runs a plain `def`
dependency in its thread pool, and those hand-offs between threads cost more than a
one-ticker online lookup."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlops.errors import AuthError
from mlops.settings import Settings

_bearer = HTTPBearer(auto_error=False)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def _check_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("This call needs a bearer token: send 'Authorization: Bearer <token>'.")
    if not secrets.compare_digest(credentials.credentials.encode(), settings.token.encode()):
        raise AuthError("Invalid bearer token.")
    return "api-token"


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Mutating calls: a valid bearer token is required; returns the caller's name."""
    return _check_token(settings, credentials)


async def read_access(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reads: open unless the profile says reads need the token too. A console session
    signed in with the token counts (its pages link to plots and downloads of the API)."""
    if settings.reads_require_auth and not (credentials is None and _console_session(request)):
        _check_token(settings, credentials)


def sees_store_details(
    request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> bool:
    """/healthz is open to all: where reads are protected (production), only a caller with
    read access sees hosts, ports, database names and paths of the stores."""
    if settings.profile != "production" and not settings.reads_require_auth:
        return True
    if credentials is None:
        return _console_session(request)
    try:
        _check_token(settings, credentials)
    except AuthError:
        return False
    return True


def _console_session(request: Request) -> bool:
    from mlops.sessions import signed_in

    return "session" in request.scope and signed_in(request)


Caller = Annotated[str, Depends(require_token)]
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
