"""Experiments: the list (sorted, filtered, searched, paged) with its create form and the
comparison chart of the ticked experiments, and an experiment's page of runs with a metric
chart, a line per run."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import InvalidInputError, MlopsError
from mlops.roles import Role
from mlops.web import charts
from mlops.web.common import (
    REFUSED,
    bounded_int,
    caller_of,
    checked_form,
    error_page,
    linker,
    needs_reading,
    page,
    settings_of,
)
from mlops.web.models.common import first_value, invalid_input

router = APIRouter(include_in_schema=False)

PAGE_SIZES = (10, 25, 50, 100)
RUN_PAGE_SIZE = 25
MAX_CHART_LINES = 10
PREFERRED_METRICS = ("cv_roc_auc", "roc_auc", "accuracy", "staged_log_loss")
EXPERIMENT_SORTS = (
    ("updated", "last activity"),
    ("created", "created"),
    ("name", "name"),
    ("run_count", "runs"),
    ("status", "status"),
)


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
        "page": bounded_int(params.get("page"), 1, 1, 1_000_000),
        "page_size": bounded_int(params.get("page_size"), 25, 1, experiments.MAX_PAGE_SIZE),
    }
    list_error: str | None = None
    try:
        query = experiments.ExperimentQuery.model_validate(raw)
        listing = experiments.list_experiments(settings, query)
    except (ValidationError, MlopsError) as exc:
        error = invalid_input(exc) if isinstance(exc, ValidationError) else exc
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
        link=linker("/experiments", current),
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
        form = await checked_form(request, Role.RESEARCHER, "Creating an experiment")
        values = {k: first_value(form, k) for k in ("name", "description", "tags")}
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
            raise invalid_input(exc, hint) from exc
        created = await run_in_threadpool(
            experiments.create_experiment, settings_of(request), body, caller_of(request)
        )
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
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
    page_size = bounded_int(params.get("max_runs"), RUN_PAGE_SIZE, 1, 1000)
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
        link=linker(f"/experiments/{experiment_id}", current),
    )
