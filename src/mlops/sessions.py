"""The console's sign-in session, which the API also honours (a signed-in console may call
the API from the same origin): the cookie's name, what it keeps of the token, and the check.
Shared by `api/` and `web/`, so neither imports the other.

A session keeps the SHA-256 of the token it was signed in with (the store's key of the
token, never the token): it is signed in as long as that token resolves to an enabled
user (`mlops.users`), so revoking the token or disabling the user signs it out. While the
metadata database is down, pages render as signed out (and changes are refused).
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from mlops.errors import AuthError, StoreUnavailableError
from mlops.roles import Principal
from mlops.settings import Settings
from mlops.users import from_proxy, resolve, resolve_hash, token_hash

SESSION_COOKIE = "mlops_console"
_KEY = "token"


def session_secret(settings: Settings) -> str:
    """The key the session cookie is signed with (changes with the state folder's token)."""
    return hashlib.sha256(f"console-session:{settings.token}".encode()).hexdigest()


def sign_in(request: Request, token: str) -> Principal:
    """Sign the session in as the token's user (`AuthError` when the token does not
    resolve); a new session, so nothing of a previous one is kept."""
    settings: Settings = request.app.state.settings
    principal = resolve(settings, token)
    request.session.clear()
    request.session[_KEY] = token_hash(token)
    return principal


def signed_in(request: Request) -> Principal | None:
    """The user the session is signed in as, while its token is valid."""
    settings: Settings = request.app.state.settings
    digest = request.session.get(_KEY)
    try:
        if not isinstance(digest, str):  # no session: a trusted proxy may name the user
            return proxy_principal(settings, request)
        return resolve_hash(settings, digest)
    except (
        AuthError,
        StoreUnavailableError,
    ):  # pages still render while the users' database is down
        return None


def proxy_principal(settings: Settings, request: Request) -> Principal | None:
    """The user a trusted reverse proxy names in its identity header (`users.from_proxy`):
    the caller of a request without a token, and the console's user without a session."""
    if not settings.trusted_proxy_header:
        return None
    client = request.client.host if request.client else None
    return from_proxy(settings, client, request.headers.get(settings.trusted_proxy_header))
