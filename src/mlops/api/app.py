"""The FastAPI application: routers under /api/v1, JSON errors, request ids, /healthz."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops import __version__
from mlops.api.deps import BearerCredentials, read_access, sees_store_details
from mlops.api.errors import error_response
from mlops.api.gate import RequestGate, RouteTable
from mlops.api.middleware import AfterWarmUp, RequestId
from mlops.api.routes import (
    datasets,
    evaluation,
    experiments,
    features,
    ingests,
    models,
    prompts,
    users,
)
from mlops.errors import MlopsError
from mlops.health import Health, check_health
from mlops.reaper import ScheduledReaper
from mlops.settings import Settings, load_settings
from mlops.stores import store_outage

API_PREFIX = "/api/v1"
API_ROUTERS = (
    features.router,
    ingests.router,
    datasets.router,
    experiments.router,
    models.router,
    prompts.router,
    evaluation.router,
    users.router,
)
log = logging.getLogger("mlops.api")


def _error(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any],
    request: Request,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return error_response(status, code, message, details, request_id, headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MlopsError)
    async def domain_error(request: Request, exc: MlopsError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message, exc.details, request)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(ValidationError)
    async def invalid_request(
        request: Request, exc: RequestValidationError | ValidationError
    ) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return _error(422, "invalid_input", message, {"errors": errors}, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        headers = dict(exc.headers or {})  # e.g. `WWW-Authenticate` of a 401
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only; GET and POST
            # of one path are often two routes here.
            headers["Allow"] = ", ".join(request.app.state.routes.methods(request.url.path))
        return _error(exc.status_code, code, str(exc.detail), {}, request, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        outage = store_outage(exc)
        if outage is not None:  # an outage no domain code mapped: still a 503 naming the store
            log.warning("%s on %s %s", outage.message, request.method, request.url.path)
            response = _error(503, outage.code, outage.message, outage.details, request)
        else:
            log.exception("Unhandled error on %s %s", request.method, request.url.path)
            response = _error(
                500, "internal_error", "Internal error; see the server log.", {}, request
            )
        # This handler runs outside the request-id middleware: set the header here too.
        response.headers["X-Request-ID"] = getattr(request.state, "request_id", "")
        return response


MLFLOW_PATHS = (
    f"{API_PREFIX}/ml",
    f"{API_PREFIX}/evaluation",
    f"{API_PREFIX}/prompt",
    "/evaluation",
)
"""Requests that import MLflow: they wait for the warm-up rather than import it beside it."""
WARM_UP_WAIT_SECONDS = 120


def _warm_up(settings: Settings, done: threading.Event) -> None:
    """Import MLflow and open its store once, so the first model request does not pay the
    ~5 s of imports and schema checks; then warm what a first deployment or evaluation
    would otherwise pay for (Feast, the Prefect server of this process, a first flow)."""
    try:
        from mlops.lifecycle.mlflow_backend import import_mlflow, tracking_engine

        import_mlflow()
        tracking_engine(settings)
    except Exception as exc:  # the request that needs MLflow will report the problem
        outage = store_outage(exc)
        if outage is not None:
            log.warning("MLflow warm-up: %s", outage.message)
        else:
            log.warning("MLflow warm-up failed", exc_info=True)
    finally:
        done.set()
    for step in (_warm_ingests, _warm_models, _warm_feast, _warm_prefect):
        try:
            step(settings)
        except Exception:  # only a warm-up: the first real use reports problems
            log.warning("warm-up step %s failed", step.__name__, exc_info=True)


def _warm_models(settings: Settings) -> None:
    """What a deployment's gates load: sklearn models (MLflow reads them with skops, ~10 s
    to import), GX for the inference-feature checks (~6 s), matplotlib for the plots."""
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401

    from mlops.features.validation import prepare_validation

    prepare_validation()


def _warm_feast(settings: Settings) -> None:
    from mlops.features.offline_state import store_is_empty
    from mlops.features.store import open_store

    if not store_is_empty(settings):
        open_store(settings).list_feature_views()


def _serves_flows(settings: Settings) -> bool:
    """This API runs flows itself (not the cluster profile's workers), and Prefect was set
    up by `mlops api` / `mlops up`, not left to an embedding program."""
    from mlops import prefect_server

    if settings.uses_work_pool:  # the pool's workers run them
        return False
    url = os.environ.get("PREFECT_API_URL")
    shared = url is not None and url in (settings.prefect_url, settings.prefect_api_url)
    return prefect_server.current() is not None or shared


def _warm_ingests(settings: Settings) -> None:
    """Start the fork server of uploaded ingests (`ingest_jobs`): it imports GX, Feast and
    Prefect in a process of its own while the API answers."""
    if _serves_flows(settings):
        from mlops.features import ingest_jobs

        ingest_jobs.warm()


def _warm_prefect(settings: Settings) -> None:
    from mlops import prefect_server

    if not _serves_flows(settings):
        return
    prefect_server.wait_until_ready()
    from flows.warm_up import warm_up_flow

    warm_up_flow()


FrontEnd = Callable[[FastAPI, Settings], Sequence[APIRouter]]
"""Mounts pages on the app (the web console, `mlops.app`); returns their routers."""


def create_api(settings: Settings | None = None, front_end: FrontEnd | None = None) -> FastAPI:
    """The REST API for the given settings (default: from the environment), with the pages
    of ``front_end`` on the same app behind the same request gate."""
    settings = settings or load_settings()
    settings.ensure_dirs()

    warmed = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmed.clear()
        threading.Thread(
            target=_warm_up, args=(settings, warmed), name="warm-up", daemon=True
        ).start()
        app.state.reaper.start()  # closes the runs of dead processes, now and on a schedule
        try:
            yield
        finally:
            await app.state.reaper.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="MLOps platform",
        version=__version__,
        description="Feature store, model lifecycle, evaluation and prompt governance.",
        openapi_url=None,  # served by `_add_docs`, behind `read_access` like every read
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.reaper = ScheduledReaper(settings, settings.reap_every_s)

    # Each added middleware wraps those before it: the request id is set before a
    # request waits for the warm-up.
    app.add_middleware(
        AfterWarmUp, warmed=warmed, paths=MLFLOW_PATHS, timeout_s=WARM_UP_WAIT_SECONDS
    )
    app.add_middleware(RequestId)

    _install_error_handlers(app)
    for router in API_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    pages = front_end(app, settings) if front_end else ()
    _add_docs(app)

    @app.get("/healthz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    def healthz(request: Request, credentials: BearerCredentials) -> JSONResponse:
        """Health of each store; 503 when one is down. Where reads need the token, callers
        without it see each store's name and status only."""
        health = check_health(
            settings, show_details=sees_store_details(request, settings, credentials)
        )
        return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)

    routers = [(API_PREFIX, r.routes) for r in API_ROUTERS] + [("", r.routes) for r in pages]
    app.state.routes = RouteTable([*routers, ("", app.router.routes)], settings)
    # Added last, so outermost: refusals happen before any other middleware reads the body.
    app.add_middleware(RequestGate, settings=settings, table=app.state.routes)
    return app


def _add_docs(app: FastAPI) -> None:
    """The OpenAPI document and its Swagger UI, open or behind the token like other reads."""
    openapi_url = f"{API_PREFIX}/openapi.json"

    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - API")

    for path, endpoint in ((openapi_url, openapi), ("/docs", docs)):
        app.add_api_route(
            path, endpoint, dependencies=[Depends(read_access)], include_in_schema=False
        )
