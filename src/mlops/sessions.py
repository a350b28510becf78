"""The console's sign-in session, which the API also honours (a signed-in console may call
the API from the same origin): the cookie's name, what it keeps of the token, and the check.
Shared by `api/` and `web/`, so neither imports the other."""

from __future__ import annotations

import hashlib
import secrets

from starlette.requests import Request

from mlops.settings import Settings

SESSION_COOKIE = "mlops_console"


def fingerprint(token: str) -> str:
    """What the session keeps of the token it was signed in with."""
    return hashlib.sha256(f"console:{token}".encode()).hexdigest()


def session_secret(settings: Settings) -> str:
    """The key the session cookie is signed with (changes with the token)."""
    return hashlib.sha256(f"console-session:{settings.token}".encode()).hexdigest()


def signed_in(request: Request) -> bool:
    """Whether the session was signed in with the current API token."""
    settings: Settings = request.app.state.settings
    mark = request.session.get("auth")
    return isinstance(mark, str) and secrets.compare_digest(
        mark.encode(), fingerprint(settings.token).encode()
    )
