"""What an evaluation is asked about and what it finds: the model versions it judges and
one result per version and suite. Shared by the runner, its MLflow tracking, the records
and the comparison, so none of them imports another for its types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from mlops.evaluation.checks import TestResult
from mlops.evaluation.data import DataRange

Verdict = Literal["passed", "failed", "error"]


class ModelRef(BaseModel):
    """A model version to evaluate: by number, or by alias (production, staging)."""

    name: str = Field(min_length=1, max_length=250)
    version: str | None = Field(default=None, max_length=20)
    alias: str | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _one_of(self) -> ModelRef:
        if (self.version is None) == (self.alias is None):
            raise ValueError("give exactly one of version and alias")
        return self


class ReferenceMetrics(BaseModel):
    version: str
    metrics: dict[str, float]


class SuiteResult(BaseModel):
    """One model version on one suite."""

    model_name: str
    version: str
    suite: str
    status: Verdict
    counts: dict[str, int]
    tests: list[TestResult]
    metrics: dict[str, float] = Field(description="Standard metrics on the suite's rows.")
    production: ReferenceMetrics | None = Field(
        default=None, description="The production version's metrics on the same rows."
    )
    data: DataRange
    mlflow_run_id: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.model_name} v{self.version}"
