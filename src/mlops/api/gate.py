"""The first line of the API: token, role and body size are checked before a body is read.

FastAPI resolves a route's body before its dependencies, so without this gate an
anonymous client could make the server buffer any amount of data only to be told 401.
The gate is pure ASGI and outermost: it finds the route a request is for, answers 401
when that route needs a token that is missing, wrong, revoked or expired, 403 when the
token's user lacks the route's role, and 413 when the body is larger than the route
allows: at once from `Content-Length`, or, for a chunked body, after reading at most the
limit. The routes' own dependencies still check token and role; the gate only makes the
cheap refusals happen first.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.api.deps import read_access, role_of
from mlops.api.errors import error_response
from mlops.errors import AuthError, MlopsError
from mlops.roles import Principal, Role
from mlops.sessions import SESSION_COOKIE
from mlops.settings import Settings
from mlops.users import from_proxy, resolve


@dataclass(frozen=True)
class RoutePolicy:
    role: Role | None
    """The role the route needs (its `require_role` dependency); None: no token needed."""
    is_read: bool
    max_body_bytes: int

    @property
    def needs_token(self) -> bool:
        return self.role is not None


def _calls(dependant: Dependant) -> Iterable[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


Endpoint = TypeVar("Endpoint", bound=Callable[..., object])
_BODY_LIMIT = "__mlops_body_limit__"


def body_limit(limit: Callable[[Settings], int]) -> Callable[[Endpoint], Endpoint]:
    """Give an endpoint a body limit of its own (file uploads), instead of the API's."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _BODY_LIMIT, limit)
        return endpoint

    return mark


def route_policy(route: APIRoute, settings: Settings) -> RoutePolicy:
    """What a route needs, read from its dependencies: `require_role` or `read_access`."""
    calls = set(_calls(route.dependant))
    roles = [role for role in map(role_of, calls) if role is not None]
    # Console pages are not in the schema; their forms (prompt templates) are the largest.
    limit = (
        settings.api_max_body_bytes if route.include_in_schema else settings.console_max_form_bytes
    )
    own: Callable[[Settings], int] | None = getattr(route.endpoint, _BODY_LIMIT, None)
    if own is not None:
        limit = own(settings)
    return RoutePolicy(
        role=max(roles, key=lambda r: r.rank, default=None),
        is_read=read_access in calls,
        max_body_bytes=limit,
    )


class RouteTable:
    """Path patterns, methods and policies of the app's routes, by the routers' prefixes.

    FastAPI resolves included routers lazily, so the app's route list does not show the
    final paths: the table compiles them from each router's routes and the prefix it was
    included with."""

    def __init__(
        self, routers: Iterable[tuple[str, Iterable[BaseRoute]]], settings: Settings
    ) -> None:
        self.default = RoutePolicy(None, False, settings.api_max_body_bytes)
        self.entries: list[tuple[re.Pattern[str], set[str], RoutePolicy]] = []
        for prefix, routes in routers:
            for route in routes:
                if isinstance(route, APIRoute):
                    pattern, _, _ = compile_path(prefix + route.path)
                    methods = route.methods or set()
                    self.entries.append((pattern, methods, route_policy(route, settings)))

    def policy(self, method: str, path: str) -> RoutePolicy:
        for pattern, methods, policy in self.entries:
            if method in methods and pattern.match(path):
                return policy
        return self.default

    def methods(self, path: str) -> list[str]:
        """Every method some route of `path` answers (the `Allow` of a 405)."""
        found: set[str] = set()
        for pattern, methods, _ in self.entries:
            if pattern.match(path):
                found |= methods
        return sorted(found)


class RequestGate:
    """ASGI middleware: 401/403 before the body for token routes, 413 for bodies over the
    limit."""

    def __init__(self, app: ASGIApp, settings: Settings, table: RouteTable) -> None:
        self.app = app
        self.settings = settings
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        policy = self.table.policy(scope["method"], scope["path"])
        if refusal := self._auth_refusal(policy, headers, scope):
            await _reject(
                scope,
                receive,
                send,
                headers,
                refusal.http_status,
                refusal.code,
                refusal.message,
                refusal.details,
            )
            return
        limit = policy.max_body_bytes
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _reject(scope, receive, send, headers, 400, "http_error", "Bad length.")
                return
            if int(length) > limit:
                await _reject(scope, receive, send, headers, 413, *_too_large(limit))
                return
            await self.app(scope, receive, send)  # the server delivers no more than that
            return
        if headers.get("transfer-encoding", b"").lower() == b"chunked":
            body = await _read_at_most(receive, limit)
            if body is None:
                await _reject(scope, receive, send, headers, 413, *_too_large(limit))
                return
            await self.app(scope, _replay(body, receive), send)
            return
        await self.app(scope, receive, send)

    def _auth_refusal(
        self, policy: RoutePolicy, headers: dict[str, bytes], scope: Scope
    ) -> MlopsError | None:
        must_check = policy.needs_token or (policy.is_read and self.settings.reads_require_auth)
        if not must_check:
            return None
        try:
            principal = self._caller(policy, headers, scope)
            if principal is not None and policy.role is not None:
                principal.require(policy.role, f"{scope['method']} {scope['path']}")
        except MlopsError as refusal:  # 401, 403, or 503 when the users' database is down
            return refusal
        return None

    def _caller(
        self, policy: RoutePolicy, headers: dict[str, bytes], scope: Scope
    ) -> Principal | None:
        """A bearer token's user, else the user a trusted proxy names; None for a read
        with the console's session cookie (`read_access` verifies it); else `AuthError`."""
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer":
                raise AuthError(_NEEDS_TOKEN)
            return resolve(self.settings, token.strip().decode("latin-1"))
        proxied = _proxied(self.settings, headers, scope)
        if proxied is not None:
            if scope["method"] not in _SAFE and _CSRF_HEADER not in headers:
                raise AuthError(_PROXY_WRITE)
            return proxied
        if policy.is_read and not policy.needs_token and _has_session(headers):
            return None
        raise AuthError(_NEEDS_TOKEN)


_NEEDS_TOKEN = "This call needs a bearer token: send 'Authorization: Bearer <token>'."


_CSRF_HEADER = "x-requested-with"
_SAFE = ("GET", "HEAD", "OPTIONS")
_PROXY_WRITE = (
    "A call that changes something through the SSO proxy needs the header "
    "'X-Requested-With' (a page of another site cannot send it), or a bearer token."
)
"""A browser sends the proxy's cookie to the proxy whatever page made the request, so a
write named by the proxy alone could be forged by another site; a custom header cannot
be sent cross-site without a CORS preflight, which the API never grants."""


def _proxied(settings: Settings, headers: dict[str, bytes], scope: Scope) -> Principal | None:
    """The user a trusted proxy names (`users.from_proxy`), for a request without a token."""
    if not settings.trusted_proxy_header:
        return None
    named = headers.get(settings.trusted_proxy_header.lower())
    client = scope.get("client")
    return from_proxy(
        settings, client[0] if client else None, None if named is None else named.decode("latin-1")
    )


def _has_session(headers: dict[str, bytes]) -> bool:
    """Whether the console's session cookie was sent (`read_access` verifies its signature)."""
    return f"{SESSION_COOKIE}=".encode() in headers.get("cookie", b"")


def _too_large(limit: int) -> tuple[str, str]:
    return "payload_too_large", f"The request body is larger than this call allows ({limit} bytes)."


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole chunked body, or None as soon as it exceeds `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def wrapped() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


async def _reject(
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, bytes],
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> None:
    request_id = headers.get("x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
    extra = {"X-Request-ID": request_id, "Connection": "close"}
    if status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    response = error_response(status, code, message, details or {}, request_id, extra)
    await response(scope, receive, send)
