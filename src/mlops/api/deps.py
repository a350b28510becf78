"""Request dependencies: the settings of the app, and who the caller is and may do.

They are `async def` because they hardly ever wait: FastAPI runs a plain `def` dependency
in its thread pool, and those hand-offs between threads cost more than a one-ticker online
lookup. A token's user is read from the database at most once per `users.CACHE_SECONDS`
per process (one indexed read, on the event loop); every other call finds it in memory."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlops.errors import AuthError, StoreUnavailableError
from mlops.roles import Principal, Role
from mlops.sessions import proxy_principal
from mlops.settings import Settings
from mlops.users import resolve

_bearer = HTTPBearer(auto_error=False)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def principal_of(
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
    request: Request | None = None,
) -> Principal:
    """The user of a bearer token (`mlops.users`), else (with the request) the user a
    trusted proxy names; `AuthError` (401) naming why not."""
    if credentials is None and request is not None:
        proxied = proxy_principal(settings, request)
        if proxied is not None:
            return proxied
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("This call needs a bearer token: send 'Authorization: Bearer <token>'.")
    return resolve(settings, credentials.credentials)


_ROLE = "__mlops_role__"


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: a valid bearer token whose user has at least `role` (401, 403); the
    caller. The request gate reads the role to refuse before the body is read."""

    async def dependency(
        request: Request,
        settings: SettingsDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = principal_of(settings, credentials, request)
        principal.require(role, f"{request.method} {request.url.path}")
        return principal

    setattr(dependency, _ROLE, role)
    dependency.__name__ = f"require_{role.value}"
    return dependency


def role_of(call: object) -> Role | None:
    """The role a dependency made by `require_role` asks for (None for any other)."""
    return getattr(call, _ROLE, None)


async def read_access(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Reads: open unless the profile says reads need a token too (any user's). A console
    session signed in counts (its pages link to plots and downloads of the API)."""
    if settings.reads_require_auth and not (credentials is None and _console_session(request)):
        principal_of(settings, credentials, request)


def sees_store_details(
    request: Request, settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> bool:
    """/healthz is open to all: where reads are protected (production), only a caller with
    read access sees hosts, ports, database names and paths of the stores."""
    if not settings.shared and not settings.reads_require_auth:
        return True
    if credentials is None:
        return _console_session(request)
    try:
        principal_of(settings, credentials)
    except AuthError:
        return False
    except StoreUnavailableError:  # the users are in the metadata database, which is down:
        # the state folder's own token still sees what is down, where and why
        return secrets.compare_digest(credentials.credentials.encode(), settings.token.encode())
    return True


def _console_session(request: Request) -> bool:
    from mlops.sessions import signed_in

    return "session" in request.scope and signed_in(request) is not None


Researcher = Annotated[Principal, Depends(require_role(Role.RESEARCHER))]
"""The caller of a route that researchers may call (and approvers, admins)."""
Approver = Annotated[Principal, Depends(require_role(Role.APPROVER))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
