"""Run benchmark suites on model versions: the request is checked completely (unknown suites
or versions are refused before anything is recorded), recorded, and run as the `evaluate`
flow in a background thread of this process, or (cluster profile) on a worker of the work
pool."""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel, Field

from mlops.evaluation import records, service
from mlops.evaluation.records import EvaluationInfo
from mlops.evaluation.results import ModelRef
from mlops.evaluation.runner import EXPLAIN_ROWS
from mlops.settings import Settings
from mlops.usecases.started import Started


class EvaluationRequest(BaseModel):
    """An evaluation as the API's body, the console's run form and `mlops eval run` give it."""

    suites: list[str] = Field(min_length=1, description="Suite names (GET /benchmarks).")
    models: list[ModelRef] = Field(min_length=1, description="Versions, by number or alias.")
    explain: bool = Field(default=True, description="Explain each version with SHAP.")
    explain_rows: int = Field(
        default=EXPLAIN_ROWS, ge=10, le=EXPLAIN_ROWS, description="Rows SHAP samples."
    )
    reason: str = Field(default="", max_length=2000, description="Kept in the record.")


def evaluate(
    settings: Settings, caller: str, request: EvaluationRequest
) -> Started[EvaluationInfo]:
    """Record the run and start it. Its `wait()` returns once every result is recorded;
    the plots are drawn after that (`plots` in the record says when they are in)."""
    from mlops.orchestration import start_evaluation

    evaluation_id = service.request_evaluation(
        settings,
        request.suites,
        request.models,
        request.explain,
        caller,
        request.reason,
        request.explain_rows,
    )
    thread = start_evaluation(settings, evaluation_id)
    return Started(
        evaluation_id,
        thread,
        partial(records.get, settings),
        finished=lambda timeout: service.wait_finished(evaluation_id, timeout),
        done=_ended,
    )


def _ended(info: EvaluationInfo) -> bool:
    """Results and plots are in (work on a worker is followed through its record)."""
    return info.status in records.EVALUATIONS.statuses.ends and info.plots != "pending"
