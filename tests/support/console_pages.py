"""What the console's integration tests share: signing a TestClient in with the API token,
and reading the session's CSRF token off a page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from mlops.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf(client: TestClient, path: str) -> str:
    """The CSRF token a page at `path` carries for this client's session."""
    match = CSRF.search(client.get(path).text)
    assert match, "the page carries the session's CSRF token"
    return match.group(1)


def sign_in(client: TestClient, settings: Settings, target: str) -> None:
    """Sign the client's session in; the console redirects to `target`."""
    response = client.post(
        "/signin", data={"token": settings.token, "next": target}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == target
