"""An evaluation from request to results: `make_plan` checks everything a run needs before
anything is written (suites, versions, data, features); `run_suite` judges one model version
on one suite and logs it as an MLflow run; `run_explanation` explains one version with SHAP.
The Prefect flow `evaluate` (flows/evaluate.py) fans these out as tasks."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.errors import InvalidInputError, MlopsError, NotFoundError
from mlops.evaluation import measures, tracking
from mlops.evaluation.candidates import Candidate, load_candidate, resolve_version
from mlops.evaluation.checks import QUIET, SuiteContext, TestResult, run_check
from mlops.evaluation.data import DataRange, suite_rows
from mlops.evaluation.results import ModelRef, ReferenceMetrics, SuiteResult, Verdict
from mlops.evaluation.suites import BaselineTest, Suite, load_suite
from mlops.lifecycle.metrics import finite_or_none
from mlops.lifecycle.registry import PRODUCTION_ALIAS, alias_version
from mlops.settings import Settings

MAX_SUITES = 20
MAX_MODELS = 10
EXPLAIN_ROWS = 500


@dataclass
class SuitePlan:
    suite: Suite
    frame: pd.DataFrame
    data: DataRange
    baselines: dict[str, dict[str, Candidate | None]] = field(default_factory=dict)


@dataclass
class Plan:
    """Everything a run needs, checked: loaded versions and each suite's rows."""

    candidates: list[Candidate]
    suites: dict[str, SuitePlan]
    production: dict[str, Candidate | None]
    explain_rows: int = EXPLAIN_ROWS
    plot_jobs: list[tuple[str, tracking.PlotJob]] = field(default_factory=list)
    """(MLflow run id, job) of the plots to add once the results are recorded."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_plots(self, run_id: str, job: tracking.PlotJob) -> None:
        with self._lock:
            self.plot_jobs.append((run_id, job))

    def for_task(self) -> Plan:
        """The plan for one task: the same versions and rows, with plot jobs of its own
        (the task hands them back, wherever it ran)."""
        return dataclasses.replace(self, plot_jobs=[], _lock=threading.Lock())

    def __getstate__(self) -> dict[str, Any]:  # a task on another process (Ray) gets a copy
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def describe(self) -> dict[str, Any]:
        return {
            "data": {name: p.data.model_dump(mode="json") for name, p in self.suites.items()},
            "production": {n: c.version if c else None for n, c in self.production.items()},
            "explain_rows": self.explain_rows,
        }


def _unique(items: list[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _reference(settings: Settings, name: str, against: str) -> Candidate | None:
    """The version a baseline test compares with: an alias's version, or a number."""
    if against.isdigit():
        return load_candidate(settings, name, against)
    if against not in ("production", "staging"):
        raise InvalidInputError(
            f"Baseline 'against: {against}' is not production, staging or a version number.",
            {"against": against},
        )
    version = alias_version(settings, name, against)
    return load_candidate(settings, name, version) if version else None


def _production(settings: Settings, name: str) -> Candidate | None:
    version = alias_version(settings, name, PRODUCTION_ALIAS)
    if version is None:
        return None
    try:
        return load_candidate(settings, name, version)
    except MlopsError:  # an unloadable production version only loses the comparison
        return None


def _baselines(
    settings: Settings, suite: Suite, names: list[str]
) -> dict[str, dict[str, Candidate | None]]:
    """Per model name, the version each baseline test of the suite compares with."""
    found: dict[str, dict[str, Candidate | None]] = {name: {} for name in names}
    for test in suite.tests:
        if not isinstance(test, BaselineTest):
            continue
        for name in names:
            try:
                found[name][test.against] = _reference(settings, name, test.against)
            except MlopsError as exc:
                raise type(exc)(
                    f"Suite '{suite.name}', test '{test.name}': the baseline "
                    f"'{test.against}' of model '{name}' is unusable: {exc.message}",
                    {**exc.details, "suite": suite.name, "test": test.name},
                ) from exc
    return found


def make_plan(settings: Settings, suite_names: list[str], refs: list[ModelRef]) -> Plan:
    """Check a request completely (404/422 with a clear message) before anything is written."""
    suite_names = _unique(suite_names)
    wanted = _unique([(r.name, r.version, r.alias) for r in refs])
    if not suite_names or len(suite_names) > MAX_SUITES:
        raise InvalidInputError(f"Give 1 to {MAX_SUITES} suites, got {len(suite_names)}.")
    if not wanted or len(wanted) > MAX_MODELS:
        raise InvalidInputError(f"Give 1 to {MAX_MODELS} model versions, got {len(wanted)}.")
    suites = [load_suite(settings, name) for name in suite_names]
    versions = _unique([(n, resolve_version(settings, n, v, a)) for n, v, a in wanted])
    candidates = [load_candidate(settings, name, version) for name, version in versions]
    names = _unique([c.name for c in candidates])
    production = {name: _production(settings, name) for name in names}
    plans = {}
    for suite in suites:
        baselines = _baselines(settings, suite, names)
        references = [c for c in production.values() if c] + [
            c for by_name in baselines.values() for c in by_name.values() if c
        ]
        scored = [*candidates, *references]
        columns = sorted({f for c in scored for f in c.inputs} | suite.features_named())
        starts = [c.test_start for c in scored if c.test_start is not None]
        since = max(starts) if suite.data.exclude_training and starts else None
        try:
            frame, described = suite_rows(settings, suite.data, columns, since)
        except MlopsError as exc:
            exc.message = f"Suite '{suite.name}': {exc.message}"
            raise
        plans[suite.name] = SuitePlan(suite, frame, described, baselines)
    return Plan(candidates=candidates, suites=plans, production=production)


def _verdict(tests: list[TestResult]) -> Verdict:
    statuses = {t.status for t in tests}
    return "failed" if "failed" in statuses else "error" if "error" in statuses else "passed"


def _production_metrics(
    plan: Plan, candidate: Candidate, ctx: SuiteContext
) -> ReferenceMetrics | None:
    reference = plan.production.get(candidate.name)
    if reference is None:
        return None
    if reference.version == candidate.version:
        output, task = ctx.output, ctx.task
    else:
        try:
            output, task = reference.output(ctx.frame)
        except Exception:  # production's own failure only loses the comparison
            return None
    if output is None or task is None:
        return None
    return ReferenceMetrics(
        version=reference.version, metrics=measures.standard_metrics(ctx.labels, output, task)
    )


def run_suite(
    settings: Settings, evaluation_id: str, plan: Plan, candidate: Candidate, suite_name: str
) -> SuiteResult:
    """Judge every test of a suite on one version and log the result as an MLflow run (its
    plots are drawn later, see `draw_plots`)."""
    started = time.perf_counter()
    suite_plan = plan.suites[suite_name]
    suite_tests = suite_plan.suite.tests
    with QUIET.shared():
        ctx = SuiteContext(
            settings,
            candidate,
            suite_plan.frame,
            baselines=suite_plan.baselines.get(candidate.name, {}),
        )
        judged = {t.name: run_check(ctx, t) for t in suite_tests if t.kind != "latency"}
        metrics = {}
        if ctx.output is not None and ctx.task is not None:
            metrics = measures.standard_metrics(ctx.labels, ctx.output, ctx.task)
        production = _production_metrics(plan, candidate, ctx)
    # latency tests wait for the run's other work (QUIET), so they run outside it
    judged.update({t.name: run_check(ctx, t) for t in suite_tests if t.kind == "latency"})
    tests = [judged[t.name] for t in suite_tests]
    result = SuiteResult(
        model_name=candidate.name,
        version=candidate.version,
        suite=suite_name,
        status=_verdict(tests),
        counts={s: sum(t.status == s for t in tests) for s in ("passed", "failed", "error")},
        tests=tests,
        metrics={k: v for k, v in metrics.items() if finite_or_none(v) is not None},
        production=production,
        data=suite_plan.data,
    )
    try:
        with QUIET.shared():
            run_id, draw = tracking.log_suite_run(settings, evaluation_id, candidate, ctx, result)
        result.mlflow_run_id = run_id
        plan.add_plots(run_id, draw)
    except Exception as exc:  # the verdict stands; the history in MLflow misses this run
        result.error = f"Logging to MLflow failed: {type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    return result


def previous_version(settings: Settings, candidate: Candidate) -> Candidate | None:
    """The closest earlier version that still exists and loads, if any."""
    if not candidate.version.isdigit():
        return None
    for number in range(int(candidate.version) - 1, max(int(candidate.version) - 20, 0), -1):
        try:
            return load_candidate(settings, candidate.name, str(number))
        except (NotFoundError, InvalidInputError):
            continue
    return None


def run_explanation(
    settings: Settings, evaluation_id: str, plan: Plan, candidate: Candidate, rows: int
) -> dict[str, Any]:
    """SHAP explanation of one version on a sample of the first suite's rows, logged to
    MLflow (its plots are drawn later, see `draw_plots`); returns the explanation as JSON,
    or an entry with the error."""
    with QUIET.shared():
        return _explain(settings, evaluation_id, plan, candidate, rows)


def _explain(
    settings: Settings, evaluation_id: str, plan: Plan, candidate: Candidate, rows: int
) -> dict[str, Any]:
    from mlops.evaluation.explain import explain

    frame = next(iter(plan.suites.values())).frame
    if candidate.raw is None:
        return {"error": f"{candidate.label} exposes no native model to explain"}
    with tracking.artifact_dir() as folder:
        try:
            previous = previous_version(settings, candidate)
            explanation = explain(
                candidate.raw,
                frame,
                candidate.inputs,
                model_name=candidate.name,
                version=candidate.version,
                max_rows=rows,
                previous=(previous.version, previous.raw) if previous and previous.raw else None,
            )
        except Exception as exc:  # an unexplainable model is reported, the run goes on
            return {"error": f"SHAP failed on {candidate.label}: {type(exc).__name__}: {exc}"}
        payload = explanation.model_dump(mode="json")
        try:
            run_id = tracking.log_explanation_run(
                settings, evaluation_id, candidate, payload, folder
            )
            payload["mlflow_run_id"] = run_id
            plan.add_plots(run_id, functools.partial(_draw_explanation, explanation))
        except Exception as exc:
            payload["error"] = f"Logging to MLflow failed: {type(exc).__name__}: {exc}"
    return payload


def _draw_explanation(explanation: Any, folder: Path) -> None:
    from mlops.evaluation.explain import write_plots

    write_plots(explanation, folder)


def draw_plots(settings: Settings, plan: Plan) -> str:
    """Add every recorded result's plots to its MLflow run: "done", or "failed: ..." naming
    the runs whose plots could not be drawn or logged."""
    failures = []
    for run_id, job in plan.plot_jobs:
        try:
            tracking.log_plots(settings, run_id, job)
        except Exception as exc:  # the results stand; only pictures are missing
            failures.append(f"run {run_id}: {type(exc).__name__}: {exc}")
    return "done" if not failures else "failed: " + "; ".join(failures)
