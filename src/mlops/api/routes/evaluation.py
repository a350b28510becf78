"""Evaluation harness endpoints: benchmark suites, runs (suites x model versions) with
pass/fail per test, model comparison, SHAP explanations and the runs' plots."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from mlops.api.deps import Researcher, SettingsDep, read_access
from mlops.api.errors import READ_ERRORS
from mlops.api.started import answer_started, started_responses
from mlops.errors import NotFoundError, UnsafePathError
from mlops.evaluation import records
from mlops.evaluation.comparison import SuiteComparison
from mlops.evaluation.suites import Suite, list_suite_files, load_suite
from mlops.fields import Offset
from mlops.usecases.evaluations import EvaluationRequest, evaluate

router = APIRouter(
    prefix="/evaluation",
    tags=["evaluation"],
    dependencies=[Depends(read_access)],
    responses=READ_ERRORS,
)


class BenchmarkInfo(BaseModel):
    name: str
    description: str
    test_count: int
    test_kinds: list[str]
    path: str
    last_run: records.LastRun | None
    error: dict[str, Any] | None = Field(
        default=None, description="Why the suite file is unusable (file, line, field)."
    )


class BenchmarkDetail(BenchmarkInfo):
    suite: Suite


class ExplainabilityReport(BaseModel):
    evaluation_id: str
    explanations: list[dict[str, Any]]


@router.get("/benchmarks", response_model=list[BenchmarkInfo])
def list_benchmarks(settings: SettingsDep) -> list[BenchmarkInfo]:
    """Every suite of config/suites: name, description, test count, its last run and outcome
    (an invalid file is listed with its error)."""
    last = records.last_runs(settings)
    return [
        BenchmarkInfo(
            name=item.name,
            description=item.suite.description if item.suite else "",
            test_count=len(item.suite.tests) if item.suite else 0,
            test_kinds=sorted({t.kind for t in item.suite.tests}) if item.suite else [],
            path=item.path,
            last_run=last.get(item.name),
            error=item.error,
        )
        for item in list_suite_files(settings)
    ]


@router.get("/benchmarks/{name}", response_model=BenchmarkDetail)
def get_benchmark(name: str, settings: SettingsDep) -> BenchmarkDetail:
    """One suite with its data and every test (404 unknown, 422 invalid file)."""
    suite = load_suite(settings, name)
    path = next(f.path for f in list_suite_files(settings) if f.name == name)
    return BenchmarkDetail(
        name=suite.name,
        description=suite.description,
        test_count=len(suite.tests),
        test_kinds=sorted({t.kind for t in suite.tests}),
        path=path,
        last_run=records.last_runs(settings).get(name),
        suite=suite,
    )


class EvaluationRun(records.EvaluationInfo):
    """An evaluation run as the API shows it: the record, and where to follow it."""

    status_url: str = Field(description="Where the run's progress and results are read.")


def _run_of(request: Request, info: records.EvaluationInfo) -> EvaluationRun:
    url = request.app.url_path_for("get_result", evaluation_id=info.id)
    return EvaluationRun(**dict(info), status_url=str(url))


@router.post(
    "/run",
    responses=started_responses(EvaluationRun),
    response_model=EvaluationRun,
    status_code=202,
)
async def run(
    body: EvaluationRequest,
    settings: SettingsDep,
    caller: Researcher,
    request: Request,
    response: Response,
    wait: Annotated[bool, Query(description="Answer when the run has finished.")] = False,
) -> EvaluationRun:
    """Start the Prefect flow `evaluate` for suites x versions; answers 202 with the run's id
    and status URL at once, or 200 with the results when `wait` (for small runs). Plots are
    drawn after the results are recorded: `plots` says when they are in."""
    started = await run_in_threadpool(evaluate, settings, caller.name, body)
    # `wait`: until the results are recorded; the plots follow (`plots` in the answer)
    return await answer_started(started, wait, response, partial(_run_of, request))


@router.get("/results", response_model=list[records.EvaluationSummary])
def list_results(
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> list[records.EvaluationSummary]:
    """Evaluation runs, newest first."""
    return records.list_evaluations(settings, limit, offset)


@router.get("/results/{evaluation_id}", response_model=EvaluationRun)
def get_result(evaluation_id: str, settings: SettingsDep, request: Request) -> EvaluationRun:
    """Per model and test: metric, value, operator, threshold, passed / failed / error with a
    reason and details; the overall verdict; the comparison; progress while running."""
    return _run_of(request, records.get(settings, evaluation_id))


@router.get("/results/{evaluation_id}/comparison", response_model=list[SuiteComparison])
def get_comparison(evaluation_id: str, settings: SettingsDep) -> list[SuiteComparison]:
    """Per suite and metric: the best version, each one's difference from the best and from
    production in %, as bars."""
    return records.get(settings, evaluation_id).comparison


@router.get("/results/{evaluation_id}/explainability", response_model=ExplainabilityReport)
def get_explainability(evaluation_id: str, settings: SettingsDep) -> ExplainabilityReport:
    """Per version: SHAP feature importance with direction, per-row explanations, stability
    versus the previous version, the Markdown summary and the names of the plots."""
    return ExplainabilityReport(
        evaluation_id=evaluation_id, explanations=records.explanations(settings, evaluation_id)
    )


@router.get(
    "/results/{evaluation_id}/artifacts/{run_id}/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file, typed by its extension.",
            "content": {"image/png": {}, "application/json": {}, "text/markdown": {}},
        }
    },
)
def get_artifact(evaluation_id: str, run_id: str, name: str, settings: SettingsDep) -> FileResponse:
    """A plot or report of one of the run's MLflow runs (PNG, JSON, Markdown)."""
    from mlops.evaluation.tracking import artifact_path

    if "/" in name or "\\" in name or name.startswith("."):
        raise UnsafePathError(f"Artifact names are plain file names, got '{name}'.")
    if run_id not in records.result_run_ids(settings, evaluation_id).values():
        raise NotFoundError(
            f"Run {run_id} is not part of evaluation {evaluation_id}.",
            {"evaluation_id": evaluation_id, "run_id": run_id},
        )
    try:
        return FileResponse(artifact_path(settings, run_id, name))
    except NotFoundError as exc:
        if records.get(settings, evaluation_id).plots == "pending":
            exc.message += " The run's plots are still being drawn: retry in a few seconds."
        raise
