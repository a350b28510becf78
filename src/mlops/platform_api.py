"""Finding the API that serves this state folder, for commands that hand work to it.

`mlops up` names its API in ``run/services.json``; `mlops api` writes ``run/api.json``
while it serves. Either counts only while the process that wrote it is alive, and only
when the API answers with this folder's token (an older API without the route, or another
folder's, is not used).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from mlops.runs import current_owner, owner_alive
from mlops.settings import Settings

__all__ = ["API_FILE", "SERVICES_FILE", "registered", "running_api", "services_record"]

API_FILE = "api.json"
SERVICES_FILE = "services.json"
PROBE_PATH = "/api/v1/ingests?limit=1"
PROBE_TIMEOUT_S = 10.0
"""How long a live API's answer is awaited: a busy one (a loaded host, a heavy ingest) still
gets the files; a dead owner, a refused connection or another folder's token fall back at
once."""


@contextlib.contextmanager
def registered(settings: Settings, url: str) -> Iterator[None]:
    """Name this process's API in ``run/api.json`` while the block serves it."""
    settings.ensure_dirs()
    path = settings.run_dir / API_FILE
    tmp = path.with_name(f".{API_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps({"url": url, "owner": current_owner()}))
    tmp.replace(path)
    try:
        yield
    finally:
        if _read(path).get("owner") == current_owner():
            path.unlink(missing_ok=True)


def services_record(settings: Settings) -> dict[str, object]:
    """What the running (or a killed) `mlops up` of this state folder wrote of its services;
    empty when there is none."""
    return _read(settings.run_dir / SERVICES_FILE)


def running_api(settings: Settings, passed_over: Callable[[str], None] | None = None) -> str | None:
    """The URL of the live API of this state folder, or None. A live API that does not
    answer (in `PROBE_TIMEOUT_S`, or with an error) is passed over, and `passed_over` is
    told why, so that a caller that then works alone can say so."""
    services = services_record(settings)
    children = services.get("children")
    alone = _read(settings.run_dir / API_FILE)
    candidates = [
        (services.get("api"), children.get("api") if isinstance(children, dict) else None),
        (alone.get("url"), alone.get("owner")),
    ]
    for url, owner in candidates:
        if not (isinstance(url, str) and isinstance(owner, str) and owner_alive(owner)):
            continue
        problem = _problem(settings, url)
        if problem is None:
            return url
        if passed_over is not None:
            passed_over(f"the platform's API at {url} runs but {problem}")
    return None


def _problem(settings: Settings, url: str) -> str | None:
    """Why the API at `url` cannot take work, or None when it answers."""
    try:
        response = httpx.get(
            url + PROBE_PATH,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=PROBE_TIMEOUT_S,
        )
    except httpx.TimeoutException:
        return f"did not answer in {PROBE_TIMEOUT_S:.0f} s"
    except httpx.HTTPError as exc:
        return f"could not be reached ({type(exc).__name__})"
    if response.status_code != 200:
        return f"answered {response.status_code} (another state folder's token?)"
    return None


def _read(path: Path) -> dict[str, object]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
