"""The platform's web server: the REST API (`mlops.api`) and the web console (`mlops.web`)
on one ASGI app, behind one request gate. The only module that imports both: neither front
end imports the other.

    uvicorn --factory mlops.app:create_app
"""

from __future__ import annotations

from fastapi import FastAPI

from mlops.api.app import create_api
from mlops.settings import Settings
from mlops.web.console import mount_console


def create_app(settings: Settings | None = None) -> FastAPI:
    """The platform's ASGI app for the given settings (default: from the environment)."""
    return create_api(settings, front_end=mount_console)
