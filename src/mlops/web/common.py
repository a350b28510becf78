"""What every console page shares: settings, sign-in state, CSRF, rendering and errors.

Reads follow the API's rule (open in the local profile, token in production). Mutating
actions need the session to be signed in with a user's API token whose role allows the
action, and carry the session's CSRF token in the form (`checked_form`); the session
cookie is signed and SameSite=strict. The action is recorded under the user's name
(`caller_of`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from mlops.errors import AuthError, ForbiddenError, MlopsError
from mlops.roles import Principal, Role
from mlops.sessions import signed_in
from mlops.settings import Settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["roles"] = Role  # what a form needs: signed_in.role.allows(roles.APPROVER)
T = TypeVar("T")


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    settings = settings_of(request)
    return templates.TemplateResponse(
        request,
        name,
        {
            "signed_in": signed_in(request),  # the Principal, or None
            "csrf": csrf_token(request),
            "mlflow_url": settings.mlflow_url,
            "prefect_url": settings.prefect_url.removesuffix("/api"),  # the UI, not the API
            **context,
        },
        status_code=status,
    )


def needs_reading(request: Request) -> RedirectResponse | None:
    """In profiles where reads need the token, an anonymous visitor goes to sign in."""
    if settings_of(request).reads_require_auth and signed_in(request) is None:
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
    return None


async def checked_form(request: Request, role: Role, action: str) -> dict[str, Any]:
    """The posted form of a mutating action: signed in as a user with `role` (at least),
    with the session's CSRF token. `action` names it in a refusal ("Deploying")."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str):
        raise AuthError("The form has expired: reload the page and try again.")
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a 403).
    if not secrets.compare_digest(sent.encode(), expected.encode()):
        raise AuthError("The form has expired: reload the page and try again.")
    principal = signed_in(request)
    if principal is None:
        raise AuthError("Sign in with your API token to do this.")
    principal.require(role, action)
    request.state.principal = principal
    return {key: form.getlist(key) for key in form}


REFUSED = (AuthError, ForbiddenError)
"""What `checked_form` raises: a page of its own, not a message on the form."""


def caller_of(request: Request) -> str:
    """The name of the user whose form `checked_form` accepted."""
    principal: Principal = request.state.principal
    return principal.name


def error_page(request: Request, exc: MlopsError) -> HTMLResponse:
    return page(request, "error.html", status=exc.http_status, error=exc)


def quiet(read: Callable[[], T], default: T) -> T:
    """A panel whose backend is down shows its empty state rather than failing the page."""
    try:
        return read()
    except Exception:
        return default


def linker(path: str, params: Mapping[str, Any]) -> Callable[..., str]:
    """A function giving this page's URL with some query parameters changed: None, "",
    False or [] drops one (0 is kept); a list repeats the parameter."""

    def link(**changes: Any) -> str:
        merged = {**params, **changes}
        query = {
            k: v
            for k, v in merged.items()
            if v is not None and v is not False and v not in ("", [])
        }
        return f"{path}?{urlencode(query, doseq=True)}" if query else path

    return link


def bounded_int(value: str | None, default: int, low: int = 1, high: int = 10**9) -> int:
    """A query parameter as a whole number within [low, high]; the default when missing or
    not a number."""
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)
