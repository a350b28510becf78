"""What each deployment stage does: `validate` runs the gates, `staging` and `production`
move MLflow aliases; `run_stage` runs one and stores its outcome in the deployment record
(`deployments.py`). Nothing here moves an alias unless the stages before it passed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import ConflictError, MlopsError
from mlops.lifecycle import deployments, gates, holdout, ledger, mlflow_backend, registry
from mlops.lifecycle.metrics import classification_metrics, finite_or_none
from mlops.lifecycle.registry import (
    ARCHIVED_TAG,
    PRODUCTION_ALIAS,
    STAGING_ALIAS,
    alias_version,
    load_version,
)
from mlops.lifecycle.training import LABEL
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

    from mlops.lifecycle.deployments import DeploymentInfo


@dataclass
class StageOutcome:
    gates: list[gates.GateResult]
    message: str


def _stop(results: list[gates.GateResult]) -> StageOutcome:
    failed = next(r for r in results if not r.passed)
    return StageOutcome(results, failed.message)


Evaluate = Callable[[Settings, str], None]
"""Runs a recorded evaluation to its end (the deploy flow runs it as its `evaluate` subflow)."""


def validate(settings: Settings, info: DeploymentInfo, evaluate: Evaluate) -> StageOutcome:
    """The gates, in order; the first failure ends the stage (later gates need earlier ones).
    The suite gates run their evaluation with ``evaluate``."""
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
            message=f"{len(config.thresholds)} thresholds, holdout {config.holdout_days} days"
            + (
                f", {config.approvals} approval{'s' if config.approvals > 1 else ''}"
                if config.approvals
                else ""
            ),
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
    recent = holdout.online_rows(settings, columns)
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
    if config.suites:
        results.extend(_suite_gates(settings, info, config.suites, evaluate))
        if not all(r.passed for r in results):
            return _stop(results)
    return StageOutcome(results, f"{len(results)} gates passed")


def _suite_gates(
    settings: Settings, info: DeploymentInfo, suites: list[str], evaluate: Evaluate
) -> list[gates.GateResult]:
    """The evaluation suites the gate config requires, run on the candidate (a recorded
    evaluation with MLflow runs, run by ``evaluate``); one gate per suite."""
    from mlops.evaluation import records, service
    from mlops.evaluation.results import ModelRef

    try:
        evaluation_id = service.request_evaluation(
            settings,
            suites,
            [ModelRef(name=info.model_name, version=info.version)],
            explain=False,
            caller=f"deployment {info.id}",
            reason=f"gate of deployment {info.id}",
        )
    except MlopsError as exc:
        return [gates.GateResult(name="suites", passed=False, message=exc.message)]
    evaluate(settings, evaluation_id)
    evaluation = records.get(settings, evaluation_id)
    by_suite = {r.suite: r for r in evaluation.results}
    results = []
    for suite in suites:
        result = by_suite.get(suite)
        if result is None:
            message = evaluation.error or "the suite did not run"
            results.append(gates.GateResult(name=f"suite:{suite}", passed=False, message=message))
            continue
        bad = [t for t in result.tests if t.status != "passed"]
        message = f"{len(result.tests) - len(bad)} of {len(result.tests)} tests passed" + "".join(
            f"; {t.name} {t.status}: {t.reason}" for t in bad
        )
        results.append(
            gates.GateResult(
                name=f"suite:{suite}",
                passed=result.status == "passed",
                message=message,
                value=float(len(bad)),
                threshold=0.0,
                operator="<=",
                details={
                    "evaluation_id": evaluation_id,
                    "mlflow_run_id": result.mlflow_run_id,
                    "tests": [
                        t.model_dump(include={"name", "status", "value", "operator", "threshold"})
                        for t in result.tests
                    ],
                },
            )
        )
    return results


def _test_start(settings: Settings, info: DeploymentInfo) -> pd.Timestamp | None:
    """The first test date of the candidate's training run: the holdout starts no earlier,
    so the candidate is never scored on rows it was fitted on."""
    run_id = registry.get_version(settings, info.model_name, info.version).run_id
    if not run_id:
        return None
    start = mlflow_backend.client(settings).get_run(run_id).data.params.get("test_start")
    return pd.Timestamp(start, tz="UTC") if start else None


def _champion(
    settings: Settings, info: DeploymentInfo, config: gates.GateConfig
) -> tuple[str, PyFuncModel] | None:
    """(version, model) of the current production version when it is to be compared."""
    if config.champion is None:
        return None
    version = alias_version(settings, info.model_name, PRODUCTION_ALIAS)
    if version is None or version == info.version:
        return None
    return version, load_version(settings, info.model_name, version)


def _holdout_gates(
    settings: Settings,
    info: DeploymentInfo,
    config: gates.GateConfig,
    model: PyFuncModel,
    columns: list[str],
) -> list[gates.GateResult]:
    try:
        champion = _champion(settings, info, config)
    except Exception as exc:  # fail closed: an unscorable production blocks the comparison
        return [_champion_unscorable(config, exc)]
    champion_columns = champion[1].metadata.get_input_schema().input_names() if champion else []
    needed = sorted({*columns, *champion_columns})
    since = _test_start(settings, info)
    data = holdout.holdout(settings, needed, config.holdout_days, since)
    if data.empty or data[LABEL].nunique() < 2:
        return [
            gates.GateResult(
                name="holdout",
                passed=False,
                message=f"The holdout (last {config.holdout_days} days"
                + (f" from {since.date()}" if since is not None else "")
                + f") has {len(data)} rows and needs both classes.",
            )
        ]
    labels = data[LABEL].to_numpy()
    metrics = classification_metrics(labels, gates.probabilities(model, data[columns]))
    days = data["event_timestamp"]
    results = [
        gates.GateResult(
            name="holdout",
            passed=True,
            message=f"{len(data)} rows, {days.nunique()} days from {days.min().date()}",
            details={"metrics": {k: finite_or_none(v) for k, v in metrics.items()}},
        )
    ]
    for metric, threshold in config.thresholds.items():
        results.append(gates.check_threshold(metric, metrics.get(metric, float("nan")), threshold))
    if config.champion is not None:
        results.append(_champion_gate(config.champion, metrics, champion, data))
    return results


def _champion_unscorable(config: gates.GateConfig, exc: Exception) -> gates.GateResult:
    metric = config.champion.metric if config.champion else "metric"
    return gates.GateResult(
        name=f"champion:{metric}",
        passed=False,
        message=f"The production version could not be scored ({type(exc).__name__}: {exc}). "
        "To replace it anyway, remove `champion` from config/gates.yaml for this model.",
    )


def _champion_gate(
    gate: gates.ChampionGate,
    metrics: dict[str, float],
    champion: tuple[str, PyFuncModel] | None,
    data: pd.DataFrame,
) -> gates.GateResult:
    if gate.metric not in metrics:
        return gates.GateResult(
            name=f"champion:{gate.metric}",
            passed=False,
            message=f"Metric {gate.metric} could not be computed on the holdout.",
        )
    if champion is None:
        return gates.champion_result(gate, metrics[gate.metric], None, None)
    version, model = champion
    columns = model.metadata.get_input_schema().input_names()
    try:
        proba = gates.probabilities(model, data[columns])
        score = classification_metrics(data[LABEL].to_numpy(), proba)[gate.metric]
    except Exception as exc:  # the production model's own code
        return gates.GateResult(
            name=f"champion:{gate.metric}",
            passed=False,
            message=f"Production v{version} could not be scored ({type(exc).__name__}: {exc}). "
            "To replace it anyway, remove `champion` from config/gates.yaml for this model.",
        )
    return gates.champion_result(gate, metrics[gate.metric], score, version)


def promote_to_staging(
    settings: Settings, info: DeploymentInfo, _evaluate: Evaluate
) -> StageOutcome:
    _require_passed(info, ("validate",))
    before = alias_version(settings, info.model_name, STAGING_ALIAS)
    mlflow_backend.client(settings).set_registered_model_alias(
        info.model_name, STAGING_ALIAS, info.version
    )
    warnings = _record(settings, info, STAGING_ALIAS, before, info.version)
    message = f"staging: {'v' + before if before else 'none'} -> v{info.version}"
    result = gates.GateResult(
        name="alias:staging",
        passed=True,
        message=message + "".join(f"; warning: {w}" for w in warnings),
    )
    return StageOutcome([result], message)


def production_approved(settings: Settings, info: DeploymentInfo) -> bool:
    """Whether the production stage of the deployment (its record as its run began) may
    run now: a rollback (it restores a version that passed its gates and approvals when it
    went to production), no `approvals` in the gate config, or the approvals the deployment
    waited for were given. Otherwise the deployment is set to wait for them
    (`deployments.await_approvals`) and False."""
    if info.kind == "rollback":
        return True
    if info.approvals_required:
        return info.approved
    config = gates.load_gate_config(settings, info.model_name)
    if config.approvals == 0:
        return True
    deployments.await_approvals(settings, info.id, config.approvals, config.approval_expiry_hours)
    return False


def promote_to_production(
    settings: Settings, info: DeploymentInfo, _evaluate: Evaluate
) -> StageOutcome:
    """Move `production` (the one decisive step), then archive the version it replaced.

    The record learns the replaced version before the alias moves, so a crash right after
    the move still leaves a record a rollback can follow. The archive marker and the staging
    clean-up come after and are best-effort: failing them does not fail the deployment.
    """
    _require_passed(info, ("validate",) if info.kind == "rollback" else ("validate", "staging"))
    client = mlflow_backend.client(settings)
    name, version = info.model_name, info.version
    previous = alias_version(settings, name, PRODUCTION_ALIAS)
    deployments.record_replaced_version(
        settings, info.id, previous if previous != version else None
    )
    if ARCHIVED_TAG in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, ARCHIVED_TAG)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    warnings = _record(settings, info, PRODUCTION_ALIAS, previous, version)
    warnings += _after_production_move(settings, info, previous)
    message = f"production: {'v' + previous if previous else 'none'} -> v{version}"
    result = gates.GateResult(
        name="alias:production",
        passed=True,
        message=message + "".join(f"; warning: {w}" for w in warnings),
    )
    return StageOutcome([result], message)


def _record(
    settings: Settings, info: DeploymentInfo, alias: str, before: str | None, after: str | None
) -> list[str]:
    """The move in the ledger (`ledger.py`), under the deployment's requester and reason;
    a warning if it could not be recorded (the alias has moved: the stage stands)."""
    try:
        ledger.record(
            settings,
            info.model_name,
            alias,
            before,
            after,
            by=info.requested_by,
            reason=info.reason,
            deployment_id=info.id,
        )
    except Exception as exc:  # bookkeeping after the decisive step
        return [f"the {alias} move is not in the ledger ({exc})"]
    return []


def _after_production_move(
    settings: Settings, info: DeploymentInfo, previous: str | None
) -> list[str]:
    name, version = info.model_name, info.version
    client = mlflow_backend.client(settings)
    warnings = []
    try:
        if previous and previous != version:
            client.set_model_version_tag(name, previous, ARCHIVED_TAG, "true")
    except Exception as exc:  # bookkeeping only: production has moved
        warnings.append(f"v{previous} not marked archived ({exc})")
    try:
        if alias_version(settings, name, STAGING_ALIAS) == version:
            client.delete_registered_model_alias(name, STAGING_ALIAS)
            warnings += _record(settings, info, STAGING_ALIAS, version, None)
    except Exception as exc:
        warnings.append(f"staging alias not cleared ({exc})")
    return warnings


def _require_passed(info: DeploymentInfo, stages: tuple[str, ...]) -> None:
    status = {s.name: s.status for s in info.stages}
    missing = [stage for stage in stages if status.get(stage) != "passed"]
    if missing:
        raise ConflictError(
            f"Refused: the {', '.join(missing)} stage(s) of this deployment did not pass.",
            {"stages": status},
        )


STAGE_RUNNERS: dict[str, Callable[[Settings, DeploymentInfo, Evaluate], StageOutcome]] = {
    # every stage is called the same way; only `validate` runs suites with the evaluator
    "validate": validate,
    "staging": promote_to_staging,
    "production": promote_to_production,
}


def run_stage(settings: Settings, deployment_id: str, stage: str, evaluate: Evaluate) -> bool:
    """Run one stage of a deployment and record it; returns whether it passed. Suite gates
    run their evaluation with ``evaluate``."""
    info = deployments.start_stage(settings, deployment_id, stage)
    try:
        outcome = STAGE_RUNNERS[stage](settings, info, evaluate)
    except MlopsError as exc:
        failed = gates.GateResult(name=stage, passed=False, message=exc.message)
        outcome = StageOutcome([failed], exc.message)
    except Exception as exc:  # a failing backend must fail the stage, not leave it running
        text = f"{type(exc).__name__}: {exc}"
        outcome = StageOutcome([gates.GateResult(name=stage, passed=False, message=text)], text)
    return deployments.end_stage(settings, deployment_id, stage, outcome.gates, outcome.message)
