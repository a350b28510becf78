"""Promotion gates of a deployment's validate stage, configured in `config/gates.yaml`.

Each gate gives a `GateResult` with the measured value, the threshold and the operator, so a
deployment record says exactly what passed or failed. The gates, in order: the gate config
is valid, the model loads, its signature fits the served features, a smoke prediction on the
latest data works, Great Expectations accepts the inference features, the metric thresholds
hold on the holdout, and the candidate is not worse than production by more than a margin.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlops.errors import ConfigError, field_of, problems
from mlops.lifecycle.metrics import KNOWN_METRICS, finite_or_none, higher_is_better
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

GATES_FILE = "gates.yaml"
Operator = Literal[">=", "<=", ">", "<"]
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
SERVED_TYPES = {"Float64": "double", "Float32": "float", "Int64": "long", "Int32": "integer"}


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Operator
    value: float


class ChampionGate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = "roc_auc"
    max_regression: float = Field(ge=0.0, description="Allowed drop versus production.")


class ApprovalPolicy(BaseModel):
    """How many approvers a production change waits for, and how long."""

    model_config = ConfigDict(extra="forbid")
    approvals: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Approvers (other than the requester) who must approve; 0: none.",
    )
    approval_expiry_hours: float = Field(
        default=72.0,
        gt=0,
        le=24 * 90,
        description="How long the change waits for its approvals before it is rejected.",
    )


class GateConfig(ApprovalPolicy):
    """The gates of one registered model (the `default` entry merged with its own)."""

    holdout_days: int = Field(default=120, ge=5, le=5000)
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    champion: ChampionGate | None = None
    suites: list[str] = Field(default_factory=list, description="Evaluation suites to pass.")

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        unknown = sorted(set(value) - set(KNOWN_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(KNOWN_METRICS)}")
        return value


class GateResult(BaseModel):
    name: str
    passed: bool
    message: str
    value: float | None = None
    threshold: float | None = None
    operator: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("value", "threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        """NaN and infinities are stored as null (JSON, and PostgreSQL's json, refuse them)."""
        return finite_or_none(value)


def _gates_file(settings: Settings) -> tuple[Path, dict[str, Any]]:
    path = settings.config_dir / GATES_FILE
    if not path.exists():
        raise ConfigError(f"Gate configuration {path} does not exist.", {"file": str(path)})
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}", {"file": str(path)}) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'default' and 'models'.")
    return path, raw


def load_prompt_policy(settings: Settings) -> ApprovalPolicy:
    """The approvals a prompt publication waits for: the `prompts` entry (none if absent)."""
    path, raw = _gates_file(settings)
    try:
        return ApprovalPolicy.model_validate(raw.get("prompts") or {})
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: prompts: {problems(exc, first=True)}",
            {"file": str(path), "field": field_of(exc.errors()[0])},
        ) from exc


def load_gate_config(settings: Settings, model_name: str) -> GateConfig:
    """The gates for `model_name`: `default` with the model's own entry merged over it."""
    path, raw = _gates_file(settings)
    default = raw.get("default") or {}
    own = (raw.get("models") or {}).get(model_name) or {}
    if not isinstance(default, dict) or not isinstance(own, dict):
        raise ConfigError(f"{path}: 'default' and 'models.{model_name}' must be mappings.")
    merged = {**default, **own}
    merged["thresholds"] = {**(default.get("thresholds") or {}), **(own.get("thresholds") or {})}
    try:
        return GateConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: gates of '{model_name}': {problems(exc, first=True)}",
            {"file": str(path), "field": field_of(exc.errors()[0])},
        ) from exc


def check_threshold(metric: str, value: float, threshold: Threshold) -> GateResult:
    passed = math.isfinite(value) and OPERATORS[threshold.op](value, threshold.value)
    return GateResult(
        name=f"threshold:{metric}",
        passed=passed,
        message=f"{metric} = {value:.4f}, needs {threshold.op} {threshold.value}",
        value=value,
        threshold=threshold.value,
        operator=threshold.op,
    )


def check_signature(model: PyFuncModel, definitions: dict[str, dict[str, Any]]) -> GateResult:
    """Every model input must be a feature served online now, with a matching type."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return GateResult(
            name="signature", passed=False, message="The model has no named input signature."
        )
    served = {
        feature["name"]: SERVED_TYPES.get(feature["dtype"], feature["dtype"])
        for view in definitions.values()
        if view["online"]
        for feature in view["features"]
    }
    missing, mismatched = [], []
    for spec in schema.inputs:
        expected = str(spec.type).lower().split(".")[-1]
        if spec.name not in served:
            missing.append(spec.name)
        elif served[spec.name] != expected:
            mismatched.append(f"{spec.name} ({expected} in the model, {served[spec.name]} served)")
    problems = []
    if missing:
        problems.append(f"not served online: {', '.join(missing)}")
    if mismatched:
        problems.append(f"type mismatch: {', '.join(mismatched)}")
    return GateResult(
        name="signature",
        passed=not problems,
        message="; ".join(problems) or f"{len(schema.inputs)} inputs match the served features",
        details={"inputs": schema.input_names(), "missing": missing, "mismatched": mismatched},
    )


def probabilities(model: PyFuncModel, frame: pd.DataFrame) -> np.ndarray:
    """P(up) per row from a pyfunc model whose predict returns predict_proba's columns."""
    return probability_up(model.predict(frame), len(frame))


def probability_up(output: Any, rows: int) -> np.ndarray:
    """The last column of predict_proba's output (or the output itself, if one column)."""
    proba = np.asarray(output, dtype=float)
    if proba.ndim == 2:
        proba = proba[:, -1]
    if proba.shape != (rows,):
        raise ValueError(f"the model returned shape {proba.shape} for {rows} rows")
    return proba


def check_smoke(model: PyFuncModel, frame: pd.DataFrame) -> GateResult:
    """The model predicts finite probabilities for the current features of every ticker."""
    try:
        proba = probabilities(model, frame)
    except Exception as exc:  # the model's own code: any error fails the gate
        return GateResult(
            name="smoke_prediction",
            passed=False,
            message=f"Prediction on {len(frame)} current rows raised {type(exc).__name__}: {exc}",
        )
    bad = int(np.sum(~np.isfinite(proba) | (proba < 0) | (proba > 1)))
    return GateResult(
        name="smoke_prediction",
        passed=bad == 0 and len(frame) > 0,
        message=f"{len(frame)} predictions, {bad} outside [0, 1] or not finite",
        value=float(bad),
        threshold=0.0,
        operator="<=",
    )


def champion_result(
    gate: ChampionGate, candidate: float, champion: float | None, champion_version: str | None
) -> GateResult:
    """The candidate may trail production on `gate.metric` by at most `max_regression`."""
    if champion is None or champion_version is None:
        return GateResult(
            name=f"champion:{gate.metric}",
            passed=True,
            message="No production version yet: nothing to compare against.",
            value=candidate,
        )
    regression = champion - candidate if higher_is_better(gate.metric) else candidate - champion
    return GateResult(
        name=f"champion:{gate.metric}",
        passed=regression <= gate.max_regression,
        message=(
            f"{gate.metric}: candidate {candidate:.4f}, production v{champion_version} "
            f"{champion:.4f}; regression {regression:.4f}, allowed {gate.max_regression}"
        ),
        value=regression,
        threshold=gate.max_regression,
        operator="<=",
        details={
            "candidate": candidate,
            "champion": champion,
            "champion_version": champion_version,
        },
    )
