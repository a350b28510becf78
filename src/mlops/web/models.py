"""The models section: experiments (list, creation, detail with runs, metric charts), the
model registry as cards with stage chips and a Deploy form, deployments with a live stepper
of their stages and gates, and rollback (confirmed on a page of its own, no JavaScript).

Pages call the lifecycle functions the API uses (`mlops.lifecycle.experiments`,
`comparison`, `registry`, `deployments`, and `mlops.orchestration.start_deployment`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import AuthError, ConflictError, InvalidInputError, MlopsError, problems
from mlops.web import charts
from mlops.web.common import checked_form, error_page, needs_reading, page, quiet, settings_of

if TYPE_CHECKING:
    from pydantic import ValidationError

    from mlops.lifecycle.deployments import DeploymentInfo
    from mlops.settings import Settings

router = APIRouter(include_in_schema=False)

CALLER = "console"
PAGE_SIZES = (10, 25, 50, 100)
RUN_PAGE_SIZE = 25
MAX_CHART_LINES = 10
DEPLOYMENTS_PAGE = 25
PREFERRED_METRICS = ("cv_roc_auc", "roc_auc", "accuracy", "staged_log_loss")
EXPERIMENT_SORTS = (
    ("updated", "last activity"),
    ("created", "created"),
    ("name", "name"),
    ("run_count", "runs"),
    ("status", "status"),
)


# ------------------------------------------------------------------------------ helpers


def _linker(path: str, params: Mapping[str, Any]) -> Callable[..., str]:
    """A function giving this page's URL with some query parameters changed (None drops)."""

    def link(**changes: Any) -> str:
        merged = {**params, **changes}
        query = {k: v for k, v in merged.items() if v not in (None, "", [])}
        return f"{path}?{urlencode(query, doseq=True)}" if query else path

    return link


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)


def _invalid(exc: ValidationError, hint: str = "") -> InvalidInputError:
    """A pydantic validation error as the platform's 422, in words."""
    return InvalidInputError(problems(exc) + (f" ({hint})" if hint else ""))


def _first(form: Mapping[str, list[Any]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return str(values[0]).strip()


def _mlflow_run_url(settings: Settings, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI (its experiment id read from the run)."""
    if not run_id:
        return None
    from mlops.lifecycle import mlflow_backend

    run = mlflow_backend.client(settings).get_run(run_id)
    return f"{settings.mlflow_url}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


# -------------------------------------------------------------------------- experiments


def _experiments_page(request: Request, status: int = 200, **extra: Any) -> HTMLResponse:
    """The experiment list (sorted, filtered, searched, paged), its create form and the
    comparison chart of the ticked experiments."""
    from pydantic import ValidationError

    from mlops.lifecycle import comparison, experiments

    settings = settings_of(request)
    params = request.query_params
    raw: dict[str, Any] = {
        "sort": params.get("sort") or "updated",
        "order": params.get("order") or "desc",
        "status": params.get("status") or "active",
        "search": params.get("search") or None,
        "tag": params.get("tag") or None,
        "metric": params.get("metric") or "roc_auc",
        "page": _int(params.get("page"), 1, 1, 1_000_000),
        "page_size": _int(params.get("page_size"), 25, 1, experiments.MAX_PAGE_SIZE),
    }
    list_error: str | None = None
    try:
        query = experiments.ExperimentQuery.model_validate(raw)
        listing = experiments.list_experiments(settings, query)
    except (ValidationError, MlopsError) as exc:
        error = _invalid(exc) if isinstance(exc, ValidationError) else exc
        list_error, status = error.message, error.http_status
        query = experiments.ExperimentQuery(page_size=raw["page_size"])
        listing = experiments.ExperimentPage(items=[], total=0, page=1, page_size=25)
    current = {k: v for k, v in raw.items() if v is not None}
    compare_ids = [c for c in params.getlist("compare") if c]
    compare_metric = params.get("compare_metric") or query.metric
    chart, chart_error = None, None
    if compare_ids:
        current.update(compare=compare_ids, compare_metric=compare_metric)
        try:
            result = comparison.compare(settings, compare_metric, experiments=compare_ids)
            chart = charts.line_chart(
                f"{compare_metric} of each run, by experiment",
                [
                    charts.Series(
                        s.label,
                        [(float(i + 1), p.y) for i, p in enumerate(s.points)],
                        s.id == result.best_series,
                    )
                    for s in result.series
                ],
                x_label="run (in start order)",
                y_label=compare_metric,
            )
            if not any(s.points for s in result.series):
                chart_error = f"No run of these experiments logged {compare_metric}."
        except MlopsError as exc:
            chart_error = f"{exc.http_status}: {exc.message}"
    pages = max(1, -(-listing.total // query.page_size))
    return page(
        request,
        "models/experiments.html",
        status=status,
        listing=listing,
        query=query,
        pages=pages,
        link=_linker("/experiments", current),
        sorts=EXPERIMENT_SORTS,
        page_sizes=PAGE_SIZES,
        list_error=list_error,
        compare_ids=compare_ids,
        compare_metric=compare_metric,
        chart=chart,
        chart_error=chart_error,
        form=extra.pop("form", {}),
        **extra,
    )


@router.get("/experiments", response_class=HTMLResponse, response_model=None)
def experiments_index(request: Request) -> Response:
    """Experiments: sortable, filterable, searchable and paged; create form; comparison."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _experiments_page(request)


@router.post("/experiments", response_model=None)
async def experiment_create(request: Request) -> Response:
    """Create an experiment; a taken (409) or invalid (422) name is shown on the form."""
    from fastapi.concurrency import run_in_threadpool
    from pydantic import ValidationError

    from mlops.lifecycle import experiments

    values: dict[str, str] = {}
    try:
        form = await checked_form(request)
        values = {k: _first(form, k) for k in ("name", "description", "tags")}
        tags = {}
        for line in values["tags"].splitlines():
            if line.strip():
                key, sep, value = line.partition("=")
                if not sep or not key.strip():
                    raise InvalidInputError(f"Tag '{line.strip()}' is not key=value.")
                tags[key.strip()] = value.strip()
        try:
            body = experiments.ExperimentCreate(
                name=values["name"], description=values["description"], tags=tags
            )
        except ValidationError as exc:
            hint = experiments.ExperimentCreate.model_fields["name"].description or ""
            raise _invalid(exc, hint) from exc
        created = await run_in_threadpool(experiments.create_experiment, settings_of(request), body)
    except MlopsError as exc:
        if isinstance(exc, AuthError):
            return error_page(request, exc)
        return _experiments_page(request, status=exc.http_status, form_error=exc, form=values)
    return RedirectResponse(f"/experiments/{created.id}", status_code=303)


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse, response_model=None)
def experiment_detail(request: Request, experiment_id: str) -> Response:
    """An experiment with a page of its runs and a chart of one metric, a line per run."""
    from mlops.lifecycle import comparison, experiments

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    params = request.query_params
    order = params.get("order_by") or "start_time DESC"
    run_filter = params.get("filter") or ""
    page_token = params.get("page_token") or None
    page_size = _int(params.get("max_runs"), RUN_PAGE_SIZE, 1, 1000)
    runs_error: str | None = None
    try:
        detail = experiments.get_experiment(
            settings, experiment_id, page_size, page_token, order, run_filter
        )
    except MlopsError as exc:
        if not isinstance(exc, InvalidInputError):
            return error_page(request, exc)
        runs_error = exc.message
        detail = experiments.get_experiment(settings, experiment_id, page_size)
    runs = detail.runs
    metrics = sorted({m for r in runs for m, v in r.metrics.items() if v is not None})
    metric = params.get("metric") or next((m for m in PREFERRED_METRICS if m in metrics), None)
    metric = metric or (metrics[0] if metrics else None)
    chosen = [r for r in params.getlist("run") if r]
    charted = chosen or [r.run_id for r in runs if metric and r.metrics.get(metric) is not None]
    charted = charted[:MAX_CHART_LINES]
    chart, chart_error = None, None
    if metric and charted:
        try:
            result = comparison.compare(settings, metric, run_ids=charted)
            chart = charts.line_chart(
                f"{metric} by step, one line per run",
                [
                    charts.Series(
                        s.label, [(float(p.x), p.y) for p in s.points], s.id == result.best_series
                    )
                    for s in result.series
                ],
                x_label="step",
                y_label=metric,
            )
        except MlopsError as exc:
            chart_error = f"{exc.http_status}: {exc.message}"
    current = {
        "order_by": None if order == "start_time DESC" else order,
        "filter": run_filter,
        "max_runs": None if page_size == RUN_PAGE_SIZE else page_size,
        "metric": params.get("metric"),
        "run": chosen,
    }
    return page(
        request,
        "models/experiment.html",
        status=422 if runs_error else 200,
        detail=detail,
        experiment=detail.experiment,
        runs=runs,
        metrics=metrics,
        metric=metric,
        charted=set(charted),
        chart=chart,
        chart_error=chart_error,
        runs_error=runs_error,
        order=order,
        run_filter=run_filter,
        page_token=page_token,
        link=_linker(f"/experiments/{experiment_id}", current),
    )


# ----------------------------------------------------------------------------- registry


@router.get("/models", response_class=HTMLResponse, response_model=None)
def models_index(request: Request) -> Response:
    """The registry as cards: versions with Production / Staging / Archived chips, links to
    MLflow, a Deploy form and a Rollback button per model."""
    from pydantic import ValidationError

    from mlops.lifecycle import registry

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    params = request.query_params
    raw: dict[str, Any] = {
        "search": params.get("search") or None,
        "stage": params.get("stage") or None,
        "page": _int(params.get("page"), 1, 1, 1_000_000),
        "page_size": _int(params.get("page_size"), 10, 1, 200),
    }
    status, list_error = 200, None
    try:
        query = registry.ModelQuery.model_validate(raw)
        listing = registry.list_models(settings, query)
    except (ValidationError, MlopsError) as exc:
        error = _invalid(exc) if isinstance(exc, ValidationError) else exc
        status, list_error = error.http_status, error.message
        query = registry.ModelQuery()
        listing = registry.ModelPage(items=[], total=0, page=1, page_size=query.page_size)
    current = {k: v for k, v in raw.items() if v is not None}
    return page(
        request,
        "models/registry.html",
        status=status,
        listing=listing,
        query=query,
        stages=registry.STAGES,
        pages=max(1, -(-listing.total // query.page_size)),
        link=_linker("/models", current),
        list_error=list_error,
    )


def _model_page(request: Request, name: str, status: int = 200, **extra: Any) -> HTMLResponse:
    """One registered model's card and its deployment history."""
    from mlops.lifecycle import deployments, registry

    settings = settings_of(request)
    try:
        model = registry.get_model(settings, name)
    except MlopsError as exc:
        return error_page(request, exc)
    history: list[DeploymentInfo] = quiet(
        lambda: deployments.list_deployments(settings, name, 20, 0), []
    )
    return page(
        request,
        "models/model.html",
        status=status,
        model=model,
        history=history,
        running=next((d for d in history if d.status in ("pending", "running")), None),
        **extra,
    )


@router.get("/models/{name}", response_class=HTMLResponse, response_model=None)
def model_detail(request: Request, name: str) -> Response:
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _model_page(request, name)


async def _launch(request: Request, info: DeploymentInfo) -> Response:
    from fastapi.concurrency import run_in_threadpool

    from mlops.orchestration import start_deployment

    await run_in_threadpool(start_deployment, settings_of(request), info.id)
    return RedirectResponse(f"/deployments/{info.id}", status_code=303)


@router.post("/models/{name}/deploy", response_model=None)
async def model_deploy(request: Request, name: str) -> Response:
    """Start a deployment (validate -> staging -> production) and show its stepper."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.lifecycle import deployments

    try:
        form = await checked_form(request)
        version = _first(form, "version")
        target = _first(form, "target_stage", "production")
        reason = _first(form, "reason")[:2000]
        if not version:
            raise InvalidInputError("Choose the version to deploy.")
        info = await run_in_threadpool(
            deployments.request_deployment,
            settings_of(request),
            name,
            version,
            target,
            CALLER,
            reason,
        )
    except MlopsError as exc:
        if isinstance(exc, AuthError):
            return error_page(request, exc)
        return _model_page(request, name, status=exc.http_status, form_error=exc)
    return await _launch(request, info)


@router.post("/models/{name}/rollback", response_model=None)
async def model_rollback(request: Request, name: str) -> Response:
    """Roll production back to the version before; without `confirm=yes` the answer is a
    page saying which version would be restored, with the confirming form."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.lifecycle import deployments

    settings = settings_of(request)
    try:
        form = await checked_form(request)
        reason = _first(form, "reason")[:2000]
        if _first(form, "confirm") != "yes":
            target, current = await run_in_threadpool(deployments.rollback_target, settings, name)
            return page(
                request,
                "models/confirm.html",
                model_name=name,
                restore=target,
                current=current,
                action=f"/models/{quote(name)}/rollback",
                cancel=f"/models/{quote(name)}",
                reason=reason,
            )
        info = await run_in_threadpool(deployments.request_rollback, settings, name, CALLER, reason)
    except MlopsError as exc:
        if isinstance(exc, AuthError):
            return error_page(request, exc)
        return _model_page(request, name, status=exc.http_status, form_error=exc)
    return await _launch(request, info)


# -------------------------------------------------------------------------- deployments


@router.get("/deployments", response_class=HTMLResponse, response_model=None)
def deployments_index(request: Request) -> Response:
    """Every deployment and rollback, newest first, paged and filtered by model."""
    from mlops.lifecycle import deployments

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    model = request.query_params.get("model") or None
    number = _int(request.query_params.get("page"), 1, 1, 1_000_000)
    rows = deployments.list_deployments(
        settings, model, DEPLOYMENTS_PAGE + 1, (number - 1) * DEPLOYMENTS_PAGE
    )
    return page(
        request,
        "models/deployments.html",
        history=rows[:DEPLOYMENTS_PAGE],
        has_next=len(rows) > DEPLOYMENTS_PAGE,
        number=number,
        model=model,
        link=_linker("/deployments", {"model": model}),
    )


def _deployment_page(
    request: Request, deployment_id: str, status: int = 200, **extra: Any
) -> HTMLResponse:
    from mlops.lifecycle import deployments, registry

    settings = settings_of(request)
    try:
        info = deployments.get_deployment(settings, deployment_id)
    except MlopsError as exc:
        return error_page(request, exc)
    version = quiet(lambda: registry.get_version(settings, info.model_name, info.version), None)
    run_url = quiet(lambda: _mlflow_run_url(settings, version.run_id if version else None), None)
    failed_gates = [
        (stage.name, gate) for stage in info.stages for gate in stage.gates if not gate.passed
    ]
    production = quiet(
        lambda: registry.alias_version(settings, info.model_name, registry.PRODUCTION_ALIAS), None
    )
    running = info.status in ("pending", "running")
    return page(
        request,
        "models/deployment.html",
        status=status,
        info=info,
        run_url=run_url,
        failed_gates=failed_gates,
        production=production,
        can_roll_back=(
            info.status == "succeeded"
            and info.target_stage == "production"
            and production == info.version
        ),
        refresh=running and status == 200,
        running=running,
        **extra,
    )


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse, response_model=None)
def deployment_detail(request: Request, deployment_id: str) -> Response:
    """The stepper: each stage's status and timing, every gate against its threshold."""
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _deployment_page(request, deployment_id)


@router.post("/deployments/{deployment_id}/rollback", response_model=None)
async def deployment_rollback(request: Request, deployment_id: str) -> Response:
    """Roll back the production version this deployment put in place (confirmed first)."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.lifecycle import deployments

    settings = settings_of(request)
    try:
        form = await checked_form(request)
        reason = _first(form, "reason")[:2000]
        if _first(form, "confirm") != "yes":
            info = await run_in_threadpool(deployments.get_deployment, settings, deployment_id)
            if info.status != "succeeded" or info.target_stage != "production":
                raise ConflictError(
                    f"Deployment {deployment_id} did not put a version in production "
                    f"({info.status}, target {info.target_stage}): nothing of it to roll back."
                )
            target, current = await run_in_threadpool(
                deployments.rollback_target, settings, info.model_name, info.version
            )
            return page(
                request,
                "models/confirm.html",
                model_name=info.model_name,
                restore=target,
                current=current,
                action=f"/deployments/{deployment_id}/rollback",
                cancel=f"/deployments/{deployment_id}",
                reason=reason,
            )
        rollback = await run_in_threadpool(
            deployments.request_rollback_of, settings, deployment_id, CALLER, reason
        )
    except MlopsError as exc:
        if isinstance(exc, AuthError):
            return error_page(request, exc)
        return _deployment_page(request, deployment_id, status=exc.http_status, form_error=exc)
    return await _launch(request, rollback)
