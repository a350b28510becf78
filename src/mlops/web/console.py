"""The console's app wiring and its own pages: sign-in, sign-out and the home page. Each
area has its module of pages (`evaluation`, `features`) or, when it is large, a package with
a module per page group (`models`, `prompts`), all built on `common`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from mlops.errors import AuthError
from mlops.sessions import SESSION_COOKIE, session_secret, sign_in
from mlops.settings import Settings
from mlops.web import evaluation, features, models, prompts
from mlops.web.common import HERE, needs_reading, page, quiet, settings_of

router = APIRouter(include_in_schema=False)
SECTIONS = (router, evaluation.router, features.router, *models.ROUTERS, *prompts.ROUTERS)


def mount_console(app: FastAPI, settings: Settings) -> Sequence[APIRouter]:
    """Add the console's pages, static files and session cookie to the platform's app;
    returns the routers of its pages (the app's request gate applies its rules to them)."""
    secret = session_secret(settings)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        same_site="strict",
        https_only=settings.shared,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for section in SECTIONS:
        app.include_router(section)
    return SECTIONS


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, next: str = "/") -> HTMLResponse:
    return page(request, "signin.html", next=next if next.startswith("/") else "/")


@router.post("/signin", response_model=None)
async def signin(request: Request) -> Response:
    form = await request.form()
    token, target = str(form.get("token", "")), str(form.get("next", "/"))
    target = target if target.startswith("/") and not target.startswith("//") else "/"
    try:
        sign_in(request, token.strip())
    except AuthError as exc:
        return page(request, "signin.html", status=401, next=target, error=exc.message)
    return RedirectResponse(target, status_code=303)


@router.post("/signout", response_model=None)
async def signout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@router.get("/", response_class=HTMLResponse, response_model=None)
def home(request: Request) -> Response:
    """Health of each component and recent activity."""
    from mlops.evaluation.records import list_evaluations
    from mlops.features.ingest import latest_runs
    from mlops.health import check_health
    from mlops.lifecycle.deployments import list_deployments

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    health = check_health(settings, services=True)
    no_deployments: list[Any] = []
    return page(
        request,
        "home.html",
        health=health,
        ingests=latest_runs(settings, limit=5),
        deployments=quiet(lambda: list_deployments(settings, None, 5, 0), no_deployments),
        evaluations=list_evaluations(settings, limit=5),
        prompts=_recent_prompts(settings),
        flow_runs=_recent_flow_runs(settings)
        if health.components["prefect"].status == "ok"
        else [],
    )


def _recent_flow_runs(settings: Settings) -> list[dict[str, Any]]:
    """The latest flow runs of the Prefect server of `mlops up` (any flow, any trigger)."""
    import httpx

    def read() -> list[dict[str, Any]]:
        response = httpx.post(
            f"{settings.prefect_url}/flow_runs/filter",
            json={"sort": "START_TIME_DESC", "limit": 5},
            timeout=1.0,
        )
        response.raise_for_status()
        runs: list[dict[str, Any]] = response.json()
        return runs

    none: list[dict[str, Any]] = []
    return quiet(read, none)


def _recent_prompts(settings: Settings) -> list[Any]:
    """The latest release events (publish, rollback, archive, restore) of every template."""
    from mlops.prompts.store import open_store

    def releases() -> list[Any]:
        index = open_store(settings).index
        index.refresh()
        events = [(name, e) for name, t in index.templates.items() for e in t.releases]
        return sorted(events, key=lambda item: item[1].time, reverse=True)[:5]

    none: list[Any] = []
    return quiet(releases, none)
