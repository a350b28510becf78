"""The console's routes: sign-in, the home page and the evaluation section.

Reads follow the API's rule (open in the local profile, token in production). Mutating
actions need the session to be signed in with the API token and carry the session's CSRF
token in the form; the session cookie is signed and SameSite=strict.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from mlops.errors import AuthError, InvalidInputError, MlopsError
from mlops.settings import Settings
from mlops.web import charts

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
SESSION_COOKIE = "mlops_console"


def _fingerprint(token: str) -> str:
    return hashlib.sha256(f"console:{token}".encode()).hexdigest()


def mount_console(app: FastAPI, settings: Settings) -> None:
    """Add the console's pages, static files and session cookie to the platform's app."""
    secret = hashlib.sha256(f"console-session:{settings.token}".encode()).hexdigest()
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie=SESSION_COOKIE,
        same_site="strict",
        https_only=settings.profile == "production",
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def signed_in(request: Request) -> bool:
    """Whether the session was signed in with the current API token."""
    mark = request.session.get("auth")
    return isinstance(mark, str) and secrets.compare_digest(
        mark, _fingerprint(_settings(request).token)
    )


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    settings = _settings(request)
    return templates.TemplateResponse(
        request,
        name,
        {
            "signed_in": signed_in(request),
            "csrf": _csrf(request),
            "mlflow_url": settings.mlflow_url,
            "prefect_url": settings.prefect_url,
            **context,
        },
        status_code=status,
    )


def _needs_reading(request: Request) -> RedirectResponse | None:
    """In profiles where reads need the token, an anonymous visitor goes to sign in."""
    if _settings(request).reads_require_auth and not signed_in(request):
        return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
    return None


async def _checked_form(request: Request) -> dict[str, Any]:
    """The posted form of a mutating action: signed in, with the session's CSRF token."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str):
        raise AuthError("The form has expired: reload the page and try again.")
    if not secrets.compare_digest(sent, expected):
        raise AuthError("The form has expired: reload the page and try again.")
    if not signed_in(request):
        raise AuthError("Sign in with the API token to do this.")
    return {key: form.getlist(key) for key in form}


def _error_page(request: Request, exc: MlopsError) -> HTMLResponse:
    return _page(request, "error.html", status=exc.http_status, error=exc)


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, "signin.html", next=next if next.startswith("/") else "/")


@router.post("/signin", response_model=None)
async def signin(request: Request) -> Response:
    form = await request.form()
    token, target = str(form.get("token", "")), str(form.get("next", "/"))
    target = target if target.startswith("/") and not target.startswith("//") else "/"
    if not secrets.compare_digest(token.encode(), _settings(request).token.encode()):
        return _page(request, "signin.html", status=401, next=target, error="Invalid token.")
    request.session.clear()
    request.session["auth"] = _fingerprint(token)
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

    if (redirect := _needs_reading(request)) is not None:
        return redirect
    settings = _settings(request)
    health = check_health(settings, services=True)
    return _page(
        request,
        "home.html",
        health=health,
        ingests=latest_runs(settings, limit=5),
        deployments=_quiet(lambda: list_deployments(settings, None, 5, 0), []),
        evaluations=list_evaluations(settings, limit=5),
        prompts=_recent_prompts(settings),
    )


def _quiet(read: Any, default: Any) -> Any:
    """A home-page panel whose backend is down shows empty rather than failing the page."""
    try:
        return read()
    except Exception:
        return default


def _recent_prompts(settings: Settings) -> list[Any]:
    from mlops.prompts.store import open_store

    items = _quiet(lambda: open_store(settings).list_templates(), [])
    return sorted(items, key=lambda t: t.updated, reverse=True)[:5]


# --- evaluation --------------------------------------------------------------------------


def _evaluation_page(request: Request, status: int = 200, **extra: Any) -> HTMLResponse:
    from mlops.evaluation.records import last_runs, list_evaluations
    from mlops.evaluation.suites import list_suite_files
    from mlops.lifecycle.registry import ModelQuery, list_models

    settings = _settings(request)
    models = _quiet(lambda: list_models(settings, ModelQuery(page_size=200)).items, [])
    return _page(
        request,
        "evaluation/index.html",
        status=status,
        suites=list_suite_files(settings),
        last=last_runs(settings),
        models=models,
        runs=list_evaluations(settings, limit=20),
        **extra,
    )


@router.get("/evaluation", response_class=HTMLResponse, response_model=None)
def evaluation_index(request: Request) -> Response:
    """Suites with their tests and last run, the run form, and recent runs."""
    if (redirect := _needs_reading(request)) is not None:
        return redirect
    return _evaluation_page(request)


@router.post("/evaluation/run", response_model=None)
async def evaluation_run(request: Request) -> Response:
    """Start an evaluation of the ticked suites on the chosen versions."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.evaluation.runner import ModelRef
    from mlops.evaluation.service import request_evaluation
    from mlops.orchestration import start_evaluation

    try:
        form = await _checked_form(request)
        suites, versions = form.get("suite", []), form.get("model", [])
        if not suites or not versions:
            raise InvalidInputError("Tick at least one suite and one model version.")
        refs = []
        for item in versions:
            name, _, version = str(item).rpartition(":")
            refs.append(ModelRef(name=name, version=version))
        settings = _settings(request)
        evaluation_id = await run_in_threadpool(
            request_evaluation,
            settings,
            [str(s) for s in suites],
            refs,
            "explain" in form,
            "console",
            "",
        )
    except MlopsError as exc:
        if isinstance(exc, AuthError):
            return _error_page(request, exc)
        return _evaluation_page(request, status=exc.http_status, form_error=exc.message)
    start_evaluation(settings, evaluation_id)
    return RedirectResponse(f"/evaluation/results/{evaluation_id}", status_code=303)


@router.get("/evaluation/results/{evaluation_id}", response_class=HTMLResponse, response_model=None)
def evaluation_result(request: Request, evaluation_id: str) -> Response:
    """A run: pass/fail per test and metric, the comparison chart, the explanations."""
    from markdown_it import MarkdownIt

    from mlops.evaluation.records import explanations, get

    if (redirect := _needs_reading(request)) is not None:
        return redirect
    settings = _settings(request)
    try:
        info = get(settings, evaluation_id)
    except MlopsError as exc:
        return _error_page(request, exc)
    metrics = sorted({m for r in info.results for m in r.metrics})
    comparison = [
        (
            block.suite,
            [
                charts.bar_chart(
                    f"{metric.metric} ({'higher' if metric.higher_is_better else 'lower'} is "
                    "better)",
                    [
                        charts.Bar(
                            bar.label,
                            bar.value,
                            bar.best,
                            "best"
                            if bar.best
                            else f"{bar.diff_from_best_pct:+.1f}% vs best"
                            if bar.diff_from_best_pct is not None
                            else "",
                        )
                        for bar in metric.bars
                    ],
                )
                for metric in block.metrics
            ],
        )
        for block in info.comparison
    ]
    markdown = MarkdownIt("commonmark", {"html": False})
    explained = []
    for item in explanations(settings, evaluation_id):
        if "importance" in item:
            item["summary_html"] = markdown.render(item["summary_markdown"])
            item["chart"] = charts.bar_chart(
                f"mean |SHAP| of {item['model_name']} v{item['version']}",
                [
                    charts.Bar(f["feature"], f["mean_abs_shap"], i == 0, f["direction"])
                    for i, f in enumerate(item["importance"])
                ],
            )
        explained.append(item)
    running = info.status in ("pending", "running") or info.plots == "pending"
    experiment = _quiet(lambda: _evaluation_experiment(settings), None)
    return _page(
        request,
        "evaluation/result.html",
        info=info,
        metrics=metrics,
        comparison=comparison,
        explained=explained,
        refresh=running,
        experiment=experiment,
    )


def _evaluation_experiment(settings: Settings) -> str | None:
    from mlops.evaluation.tracking import EXPERIMENT
    from mlops.lifecycle import mlflow_backend

    found = mlflow_backend.client(settings).get_experiment_by_name(EXPERIMENT)
    return str(found.experiment_id) if found else None
