"""The evaluation section: suites with checkboxes and a Run button, results with Pass/Fail
per test and metric, the comparison bar charts and the SHAP explanations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mlops.errors import InvalidInputError, MlopsError, checked
from mlops.roles import Role
from mlops.settings import Settings
from mlops.web import charts
from mlops.web.common import (
    REFUSED,
    caller_of,
    checked_form,
    error_page,
    needs_reading,
    page,
    quiet,
    settings_of,
)

router = APIRouter(include_in_schema=False)


def _evaluation_page(request: Request, status: int = 200, **extra: Any) -> HTMLResponse:
    from mlops.evaluation.records import last_runs, list_evaluations
    from mlops.evaluation.suites import list_suite_files
    from mlops.lifecycle.registry import ModelQuery, list_models

    settings = settings_of(request)
    models: list[Any] = quiet(lambda: list_models(settings, ModelQuery(page_size=200)).items, [])
    return page(
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
    if (redirect := needs_reading(request)) is not None:
        return redirect
    return _evaluation_page(request)


@router.post("/evaluation/run", response_model=None)
async def evaluation_run(request: Request) -> Response:
    """Start an evaluation of the ticked suites on the chosen versions."""
    from fastapi.concurrency import run_in_threadpool

    from mlops.usecases.evaluations import EvaluationRequest, evaluate

    try:
        form = await checked_form(request, Role.RESEARCHER, "Running an evaluation")
        suites, versions = form.get("suite", []), form.get("model", [])
        if not suites or not versions:
            raise InvalidInputError("Tick at least one suite and one model version.")
        models = []
        for item in versions:
            name, _, version = str(item).rpartition(":")
            models.append({"name": name, "version": version})
        body = checked(
            EvaluationRequest,
            {"suites": [str(s) for s in suites], "models": models, "explain": "explain" in form},
        )
        started = await run_in_threadpool(evaluate, settings_of(request), caller_of(request), body)
    except MlopsError as exc:
        if isinstance(exc, REFUSED):
            return error_page(request, exc)
        return _evaluation_page(request, status=exc.http_status, form_error=exc.message)
    return RedirectResponse(f"/evaluation/results/{started.id}", status_code=303)


@router.get("/evaluation/results/{evaluation_id}", response_class=HTMLResponse, response_model=None)
def evaluation_result(request: Request, evaluation_id: str) -> Response:
    """A run: pass/fail per test and metric, the comparison chart, the explanations."""
    from markdown_it import MarkdownIt

    from mlops.evaluation.records import explanations, get

    if (redirect := needs_reading(request)) is not None:
        return redirect
    settings = settings_of(request)
    try:
        info = get(settings, evaluation_id)
    except MlopsError as exc:
        return error_page(request, exc)
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
    experiment = quiet(lambda: _evaluation_experiment(settings), None)
    return page(
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
