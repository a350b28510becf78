"""What each deployment stage does: `validate` runs the gates, `staging` and `production`
move MLflow aliases. The deployment record (`deployments.py`) calls these and stores their
outcome; nothing here moves an alias unless the stage before it passed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.errors import ConflictError, MlopsError
from mlops.lifecycle import gates, holdout, mlflow_backend
from mlops.lifecycle.registry import ARCHIVED_TAG, PRODUCTION_ALIAS, STAGING_ALIAS
from mlops.lifecycle.training import LABEL, classification_metrics
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from mlops.lifecycle.deployments import DeploymentInfo

PREVIOUS_PRODUCTION_TAG = "previous_production"


@dataclass
class StageOutcome:
    gates: list[gates.GateResult]
    message: str
    record_changes: dict[str, Any] = field(default_factory=dict)


def load_version(settings: Settings, name: str, version: str) -> PyFuncModel:
    """Load a registered version as a pyfunc model (predict returns class probabilities)."""
    import mlflow

    mlflow_backend.configure_mlflow(settings)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def alias_version(settings: Settings, name: str, alias: str) -> str | None:
    """The version an alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_backend.client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _stop(results: list[gates.GateResult]) -> StageOutcome:
    failed = next(r for r in results if not r.passed)
    return StageOutcome(results, failed.message)


def validate(settings: Settings, info: DeploymentInfo) -> StageOutcome:
    """The gates, in order; the first failure ends the stage (later gates need earlier ones)."""
    from mlops.features.catalog import active_definitions

    results: list[gates.GateResult] = []
    try:
        config = gates.load_gate_config(settings, info.model_name)
    except MlopsError as exc:
        return _stop([gates.GateResult(name="gates_config", passed=False, message=exc.message)])
    results.append(
        gates.GateResult(
            name="gates_config",
            passed=True,
            message=f"{len(config.thresholds)} thresholds, holdout {config.holdout_days} days",
        )
    )
    try:
        model = load_version(settings, info.model_name, info.version)
    except Exception as exc:  # missing or corrupt artifact, unloadable flavour
        message = (
            f"Version {info.version} of '{info.model_name}' could not be loaded (artifact "
            f"missing or corrupt): {type(exc).__name__}: {exc}"
        )
        return _stop(
            [*results, gates.GateResult(name="model_loads", passed=False, message=message)]
        )
    results.append(gates.GateResult(name="model_loads", passed=True, message="loaded"))
    results.append(gates.check_signature(model, active_definitions(settings)))
    if not results[-1].passed:
        return _stop(results)
    columns = model.metadata.get_input_schema().input_names()
    recent = holdout.latest_rows(settings, columns)
    results.append(gates.check_smoke(model, recent[columns]))
    if not results[-1].passed:
        return _stop(results)
    results.append(holdout.validate_inference_features(recent, columns))
    if not results[-1].passed:
        return _stop(results)
    if info.kind == "rollback":  # it passed every gate when it went to production
        return StageOutcome(results, "the restored version loads, fits the features, predicts")
    results.extend(_holdout_gates(settings, info, config, model, columns))
    if not all(r.passed for r in results):
        return _stop(results)
    return StageOutcome(results, f"{len(results)} gates passed")


def _holdout_gates(
    settings: Settings,
    info: DeploymentInfo,
    config: gates.GateConfig,
    model: PyFuncModel,
    columns: list[str],
) -> list[gates.GateResult]:
    data = holdout.holdout(settings, columns, config.holdout_days)
    if data.empty or data[LABEL].nunique() < 2:
        return [
            gates.GateResult(
                name="holdout",
                passed=False,
                message=f"The holdout ({config.holdout_days} days) has {len(data)} rows "
                "and needs both classes.",
            )
        ]
    metrics = classification_metrics(
        data[LABEL].to_numpy(), gates.probabilities(model, data[columns])
    )
    results = [
        gates.GateResult(
            name="holdout",
            passed=True,
            message=f"{len(data)} rows, {data['event_timestamp'].nunique()} days",
            details={"metrics": metrics},
        )
    ]
    for metric, threshold in config.thresholds.items():
        results.append(gates.check_threshold(metric, metrics[metric], threshold))
    if config.champion is not None:
        results.append(_champion_gate(settings, info, config.champion, metrics, data))
    return results


def _champion_gate(
    settings: Settings,
    info: DeploymentInfo,
    gate: gates.ChampionGate,
    metrics: dict[str, float],
    data: Any,
) -> gates.GateResult:
    if gate.metric not in metrics:
        return gates.GateResult(
            name=f"champion:{gate.metric}", passed=False, message=f"Unknown metric {gate.metric}."
        )
    champion_version = alias_version(settings, info.model_name, PRODUCTION_ALIAS)
    if champion_version is None or champion_version == info.version:
        return gates.champion_result(gate, metrics[gate.metric], None, None)
    try:
        champion = load_version(settings, info.model_name, champion_version)
        champion_columns = champion.metadata.get_input_schema().input_names()
        frame = data.dropna(subset=champion_columns)
        proba = gates.probabilities(champion, frame[champion_columns])
        score = classification_metrics(frame[LABEL].to_numpy(), proba)[gate.metric]
    except Exception as exc:  # a broken production model must not block its replacement
        return gates.GateResult(
            name=f"champion:{gate.metric}",
            passed=True,
            message=f"Production v{champion_version} could not be scored ({type(exc).__name__}: "
            f"{exc}); comparison skipped.",
        )
    if not np.isfinite(score):
        score = float("nan")
    return gates.champion_result(gate, metrics[gate.metric], score, champion_version)


def promote_to_staging(settings: Settings, info: DeploymentInfo) -> StageOutcome:
    _require_passed(settings, info, ("validate",))
    client = mlflow_backend.client(settings)
    before = alias_version(settings, info.model_name, STAGING_ALIAS)
    client.set_registered_model_alias(info.model_name, STAGING_ALIAS, info.version)
    message = f"staging: {'v' + before if before else 'none'} -> v{info.version}"
    return StageOutcome(
        [gates.GateResult(name="alias:staging", passed=True, message=message)], message
    )


def promote_to_production(settings: Settings, info: DeploymentInfo) -> StageOutcome:
    """Move `production`; archive and remember the version it pointed to."""
    required = ("validate",) if info.kind == "rollback" else ("validate", "staging")
    _require_passed(settings, info, required)
    client = mlflow_backend.client(settings)
    name, version = info.model_name, info.version
    previous = alias_version(settings, name, PRODUCTION_ALIAS)
    tags = client.get_model_version(name, version).tags
    if ARCHIVED_TAG in tags:
        client.delete_model_version_tag(name, version, ARCHIVED_TAG)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    if previous and previous != version:
        client.set_model_version_tag(name, previous, ARCHIVED_TAG, "true")
        client.set_registered_model_tag(name, PREVIOUS_PRODUCTION_TAG, previous)
    if alias_version(settings, name, STAGING_ALIAS) == version:
        client.delete_registered_model_alias(name, STAGING_ALIAS)
    from mlops.lifecycle import serving

    serving.forget(name)
    message = f"production: {'v' + previous if previous else 'none'} -> v{version}"
    result = gates.GateResult(name="alias:production", passed=True, message=message)
    changes = {"previous_production": previous if previous != version else None}
    return StageOutcome([result], message, changes)


def _require_passed(settings: Settings, info: DeploymentInfo, stages: tuple[str, ...]) -> None:
    status = {s.name: s.status for s in info.stages}
    missing = [stage for stage in stages if status.get(stage) != "passed"]
    if missing:
        raise ConflictError(
            f"Refused: the {', '.join(missing)} stage(s) of this deployment did not pass.",
            {"stages": status},
        )


STAGE_RUNNERS: dict[str, Callable[[Settings, DeploymentInfo], StageOutcome]] = {
    "validate": validate,
    "staging": promote_to_staging,
    "production": promote_to_production,
}
