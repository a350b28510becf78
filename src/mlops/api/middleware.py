"""The app's own middleware, pure ASGI: Starlette's `BaseHTTPMiddleware` runs the rest of
the app in a task of its own behind memory streams, which cost more per request than a
one-ticker online lookup itself."""

from __future__ import annotations

import threading
import uuid

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"


class RequestId:
    """Each request gets an id (the caller's `X-Request-ID`, or a new one) in
    `request.state.request_id`, and its response carries it back in that header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class AfterWarmUp:
    """Python can deadlock when two threads import MLflow's modules at once: requests
    under `paths` (those that use MLflow) wait until the warm-up thread has imported it."""

    def __init__(
        self, app: ASGIApp, warmed: threading.Event, paths: tuple[str, ...], timeout_s: float
    ) -> None:
        self.app = app
        self.warmed = warmed
        self.paths = paths
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waits = scope["type"] == "http" and scope["path"].startswith(self.paths)
        if waits and not self.warmed.is_set():
            await run_in_threadpool(self.warmed.wait, self.timeout_s)
        await self.app(scope, receive, send)
