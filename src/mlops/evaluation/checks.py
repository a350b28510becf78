"""How each kind of suite test is judged on one model version's predictions.

Every check returns a `TestResult`: the metric, the measured value, the operator and the
threshold, passed / failed / error with a reason, and details (per-slice values, per-feature
PSI, the reliability table). A check that cannot be computed is an error with its reason;
it never stops the other tests of the suite.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from mlops.evaluation import measures
from mlops.evaluation.candidates import Candidate
from mlops.evaluation.data import training_rows
from mlops.evaluation.suites import (
    BaselineTest,
    CalibrationTest,
    DriftTest,
    LatencyTest,
    MetricTest,
    RobustnessTest,
    SliceTest,
)
from mlops.lifecycle.gates import OPERATORS
from mlops.lifecycle.metrics import finite_or_none, higher_is_better
from mlops.lifecycle.training import LABEL
from mlops.settings import Settings

TestStatus = Literal["passed", "failed", "error"]


class QuietLock:
    """Lets a latency test time predictions while the other tasks of a run wait.

    The tasks of a run share the process: their work holds this lock shared, a latency test
    holds it alone (after the shared holders are done, and before new ones start), so it
    measures the model rather than the other tasks' use of the CPU. A thread holding it
    shared must not ask for it alone.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._alone and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            self._condition.wait_for(lambda: not self._alone and not self._shared)
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._condition:
                self._alone = False
                self._condition.notify_all()


QUIET = QuietLock()


class TestResult(BaseModel):
    name: str
    kind: str
    description: str = ""
    metric: str | None = None
    value: float | None = None
    operator: str | None = None
    threshold: float | None = None
    status: TestStatus
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0

    @field_validator("value", "threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        return finite_or_none(value)


class CheckError(Exception):
    """A test that cannot be computed; its message is the reason shown to the user."""


@dataclass
class SuiteContext:
    """One model version on one suite's rows, with its predictions computed once."""

    settings: Settings
    candidate: Candidate
    frame: pd.DataFrame
    baselines: dict[str, Candidate | None] = field(default_factory=dict)
    output: np.ndarray | None = None
    task: str | None = None
    prediction_error: str | None = None

    def __post_init__(self) -> None:
        try:
            self.output, self.task = self.candidate.output(self.frame)
        except Exception as exc:  # the model's own code: its tests become errors
            self.prediction_error = f"the model raised {type(exc).__name__}: {exc}"

    @property
    def labels(self) -> np.ndarray:
        return self.frame[LABEL].to_numpy()

    def predictions(self) -> tuple[np.ndarray, str]:
        if self.output is None or self.task is None:
            raise CheckError(self.prediction_error or "no predictions")
        return self.output, self.task

    def metric(self, metric: str, mask: np.ndarray | None = None) -> float:
        output, task = self.predictions()
        labels = self.labels
        if mask is not None:
            output, labels = output[mask], labels[mask]
        return _measure(metric, labels, output, task)


def _measure(metric: str, labels: np.ndarray, output: np.ndarray, task: str) -> float:
    try:
        value = measures.metric_value(metric, labels, output, task)
    except ValueError as exc:
        raise CheckError(f"{metric} cannot be computed: {exc}") from exc
    if not math.isfinite(value):
        raise CheckError(f"{metric} is not finite on these rows")
    return value


def _score(candidate: Candidate, frame: pd.DataFrame, metric: str, who: str) -> float:
    """`metric` of another version, or of the model on other rows (`who` names it)."""
    try:
        output, task = candidate.output(frame)
    except Exception as exc:  # that model's own code
        raise CheckError(f"{who} raised {type(exc).__name__}: {exc}") from exc
    return _measure(metric, frame[LABEL].to_numpy(), output, task)


def _compare(value: float, op: str, threshold: float) -> bool:
    return math.isfinite(value) and OPERATORS[op](value, threshold)


def _worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference` (negative when it is better)."""
    return reference - value if higher_is_better(metric) else value - reference


def _at_most(
    test: Any, metric: str, value: float, bound: float, reason: str, details: dict[str, Any]
) -> TestResult:
    """A result judged as `value <= bound`: a regression, a drop, ECE, PSI, a latency."""
    return TestResult(
        name=test.name,
        kind=test.kind,
        metric=metric,
        value=value,
        operator="<=",
        threshold=bound,
        status="passed" if math.isfinite(value) and value <= bound else "failed",
        reason=reason,
        details=details,
    )


def check_metric(ctx: SuiteContext, test: MetricTest) -> TestResult:
    value = ctx.metric(test.metric)
    passed = _compare(value, test.op, test.threshold)
    return TestResult(
        name=test.name,
        kind=test.kind,
        metric=test.metric,
        value=value,
        operator=test.op,
        threshold=test.threshold,
        status="passed" if passed else "failed",
        reason=f"{test.metric} = {value:.4f}, needs {test.op} {test.threshold}",
        details={"rows": len(ctx.frame)},
    )


def _slices(ctx: SuiteContext, test: SliceTest) -> dict[str, np.ndarray]:
    if test.by == "ticker":
        tickers = ctx.frame["ticker"].to_numpy()
        return {str(t): tickers == t for t in sorted(set(tickers))}
    if test.regime_feature not in ctx.frame.columns:
        raise CheckError(f"the regime feature {test.regime_feature} is not in the suite's data")
    values = ctx.frame[test.regime_feature].to_numpy(dtype=float)
    low, high = np.nanquantile(values, [1 / 3, 2 / 3])
    return {
        f"{test.regime_feature} low (<= {low:.4g})": values <= low,
        f"{test.regime_feature} mid": (values > low) & (values <= high),
        f"{test.regime_feature} high (> {high:.4g})": values > high,
    }


def check_slice(ctx: SuiteContext, test: SliceTest) -> TestResult:
    ctx.predictions()
    judged, slices = [], []
    for name, mask in _slices(ctx, test).items():
        rows = int(mask.sum())
        entry: dict[str, Any] = {"slice": name, "rows": rows}
        if rows < test.min_rows:
            entry["skipped"] = f"{rows} rows, fewer than min_rows {test.min_rows}"
        else:
            try:
                value = ctx.metric(test.metric, mask)
            except CheckError as exc:
                entry["skipped"] = str(exc)
            else:
                entry.update(value=value, passed=_compare(value, test.op, test.threshold))
                judged.append(entry)
        slices.append(entry)
    if not judged:
        raise CheckError(f"no slice by {test.by} could be judged (min_rows {test.min_rows})")
    worst = min(judged, key=lambda e: -_worse_by(test.metric, e["value"], 0.0))
    failed = [e["slice"] for e in judged if not e["passed"]]
    reason = (
        f"worst slice {worst['slice']}: {test.metric} = {worst['value']:.4f}, "
        f"needs {test.op} {test.threshold}; "
        + (f"{len(failed)} of {len(judged)} slices fail" if failed else f"all {len(judged)} pass")
    )
    return TestResult(
        name=test.name,
        kind=test.kind,
        metric=test.metric,
        value=worst["value"],
        operator=test.op,
        threshold=test.threshold,
        status="failed" if failed else "passed",
        reason=reason,
        details={"by": test.by, "worst": worst["slice"], "failed": failed, "slices": slices},
    )


def check_baseline(ctx: SuiteContext, test: BaselineTest) -> TestResult:
    value = ctx.metric(test.metric)
    reference = ctx.baselines.get(test.against)
    common = {"name": test.name, "kind": test.kind, "metric": test.metric}
    if reference is None or reference.version == ctx.candidate.version:
        why = (
            f"no {test.against} version to compare against"
            if reference is None
            else f"v{ctx.candidate.version} is itself the {test.against} version"
        )
        return TestResult(
            **common, value=0.0, operator="<=", threshold=test.margin, status="passed", reason=why
        )
    baseline = _score(reference, ctx.frame, test.metric, f"the baseline {reference.label}")
    regression = _worse_by(test.metric, value, baseline)
    return _at_most(
        test,
        test.metric,
        regression,
        test.margin,
        f"{test.metric}: {value:.4f} against {baseline:.4f} for {reference.label} "
        f"({test.against}); worse by {regression:.4f}, allowed {test.margin}",
        {"candidate": value, "baseline": baseline, "baseline_version": reference.version},
    )


def check_robustness(ctx: SuiteContext, test: RobustnessTest) -> TestResult:
    base = ctx.metric(test.metric)
    inputs = ctx.candidate.inputs
    features = test.features or inputs
    foreign = [f for f in features if f not in inputs]
    if foreign:
        raise CheckError(f"{', '.join(foreign)} not inputs of {ctx.candidate.label}")
    perturbed = ctx.frame.copy()
    if test.perturbation == "noise":
        rng = np.random.default_rng(test.seed)
        for feature in features:
            column = perturbed[feature].to_numpy(dtype=float)
            scale = test.noise_scale * float(np.nanstd(column))
            perturbed[feature] = column + rng.normal(0.0, scale, len(column))
        how = f"Gaussian noise of {test.noise_scale} std on {len(features)} features"
    else:
        for feature in features:
            perturbed[feature] = float(np.nanmedian(perturbed[feature].to_numpy(dtype=float)))
        how = f"{', '.join(features)} missing (replaced by the median)"
    after = _score(ctx.candidate, perturbed, test.metric, "on perturbed rows, the model")
    drop = _worse_by(test.metric, after, base)
    return _at_most(
        test,
        test.metric,
        drop,
        test.max_drop,
        f"{test.metric} {base:.4f} -> {after:.4f} under {how}; drop {drop:.4f}, "
        f"allowed {test.max_drop}",
        {"before": base, "after": after, "features": features},
    )


def check_calibration(ctx: SuiteContext, test: CalibrationTest) -> TestResult:
    output, task = ctx.predictions()
    if task != "classification":
        raise CheckError("calibration needs class probabilities; this model is a regressor")
    ece, table = measures.expected_calibration_error(ctx.labels, output, test.bins)
    return _at_most(
        test,
        "ece",
        ece,
        test.max_ece,
        f"expected calibration error {ece:.4f} over {test.bins} bins, needs <= {test.max_ece}",
        {"bins": table},
    )


def check_drift(ctx: SuiteContext, test: DriftTest) -> TestResult:
    candidate = ctx.candidate
    if candidate.train_start is None or candidate.train_end is None:
        raise CheckError(f"the run of {candidate.label} does not record its training window")
    features = test.features or candidate.inputs
    reference = training_rows(ctx.settings, features, candidate.train_start, candidate.train_end)
    if reference.empty:
        raise CheckError(
            f"the offline store has no rows in the training window "
            f"{candidate.train_start.date()}..{candidate.train_end.date()}"
        )
    per_feature = {
        f: measures.population_stability_index(
            reference[f].to_numpy(dtype=float), ctx.frame[f].to_numpy(dtype=float), test.bins
        )
        for f in features
    }
    worst = max(per_feature, key=lambda f: per_feature[f])
    value = per_feature[worst]
    shifted = sorted(f for f, v in per_feature.items() if v > test.max_psi)
    return _at_most(
        test,
        "psi",
        value,
        test.max_psi,
        f"largest PSI {value:.4f} on {worst}, needs <= {test.max_psi}"
        + (f"; shifted: {', '.join(shifted)}" if shifted else ""),
        {
            "psi": per_feature,
            "training_rows": len(reference),
            "training_window": [str(candidate.train_start.date()), str(candidate.train_end.date())],
        },
    )


def check_latency(ctx: SuiteContext, test: LatencyTest) -> TestResult:
    ctx.predictions()
    batch = ctx.frame.sample(
        n=test.batch_size, replace=len(ctx.frame) < test.batch_size, random_state=0
    )
    timings = []
    with QUIET.alone():
        ctx.candidate.output(batch)  # warm-up, not timed
        for _ in range(test.repeats):
            started = time.perf_counter()
            ctx.candidate.output(batch)
            timings.append((time.perf_counter() - started) * 1000)
    p95 = float(np.percentile(timings, 95))
    return _at_most(
        test,
        "p95_ms",
        p95,
        test.max_p95_ms,
        f"p95 {p95:.2f} ms per batch of {test.batch_size} rows over {test.repeats} calls, "
        f"needs <= {test.max_p95_ms} ms",
        {"median_ms": float(np.median(timings)), "max_ms": max(timings)},
    )


CHECKS: dict[type[Any], Callable[[SuiteContext, Any], TestResult]] = {
    MetricTest: check_metric,
    SliceTest: check_slice,
    BaselineTest: check_baseline,
    RobustnessTest: check_robustness,
    CalibrationTest: check_calibration,
    DriftTest: check_drift,
    LatencyTest: check_latency,
}


def run_check(ctx: SuiteContext, test: Any) -> TestResult:
    """Judge one test; an error in it (the model's or the data's) is its result, not a crash."""
    started = time.perf_counter()
    try:
        if ctx.prediction_error:  # every test, drift included, is about this model
            raise CheckError(ctx.prediction_error)
        result = CHECKS[type(test)](ctx, test)
    except CheckError as exc:
        result = TestResult(
            name=test.name,
            kind=test.kind,
            metric=getattr(test, "metric", None),
            status="error",
            reason=str(exc),
        )
    except Exception as exc:  # a bug or a backend failure: reported, the suite goes on
        result = TestResult(
            name=test.name,
            kind=test.kind,
            metric=getattr(test, "metric", None),
            status="error",
            reason=f"{type(exc).__name__}: {exc}",
        )
    result.description = test.description
    result.seconds = time.perf_counter() - started
    return result
