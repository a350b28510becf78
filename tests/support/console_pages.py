"""What the console's integration tests share: signing a TestClient in with an API token,
and reading the session's CSRF token off a page."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from mlops.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf(client: TestClient, path: str) -> str:
    """The CSRF token a page at `path` carries for this client's session."""
    page = client.get(path)
    match = CSRF.search(page.text)
    assert match, (
        f"the page carries the session's CSRF token: {page.status_code} {page.text[:2000]}"
    )
    return match.group(1)


def sign_in(client: TestClient, settings: Settings, target: str, token: str | None = None) -> None:
    """Sign the client's session in (with `token`; by default the bootstrap admin's); the
    console redirects to `target`."""
    response = client.post(
        "/signin", data={"token": token or settings.token, "next": target}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == target
