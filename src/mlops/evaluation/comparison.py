"""Model comparison within an evaluation: per suite and metric, the best model, each model's
difference from the best and from its production version in %, shaped for a bar chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from mlops.lifecycle.metrics import higher_is_better

if TYPE_CHECKING:
    from mlops.evaluation.results import SuiteResult


class Bar(BaseModel):
    label: str
    model: str
    version: str
    value: float
    best: bool
    diff_from_best_pct: float | None
    diff_from_production_pct: float | None


class MetricComparison(BaseModel):
    metric: str
    higher_is_better: bool
    best: str = Field(description="The first best version; every tied one has best=true.")
    bars: list[Bar]


class SuiteComparison(BaseModel):
    suite: str
    metrics: list[MetricComparison]


def pct(value: float, reference: float | None) -> float | None:
    """(value - reference) / |reference| in %, None without a usable reference."""
    if reference is None or reference == 0:
        return None
    return (value - reference) / abs(reference) * 100.0


def _values(result: SuiteResult) -> dict[str, tuple[float, bool]]:
    """metric -> (value, higher is better): the suite's standard metrics, then the values of
    tests measuring something else (ECE, PSI, latency)."""
    values = {m: (v, higher_is_better(m)) for m, v in result.metrics.items()}
    for test in result.tests:
        if test.value is None or test.metric is None or test.kind in ("metric", "slice"):
            continue
        if test.kind in ("calibration", "drift", "latency"):
            values.setdefault(test.metric, (test.value, False))
    return values


def compare(results: list[SuiteResult]) -> list[SuiteComparison]:
    """Per suite, per metric measured for at least one model: the bars, best first marked."""
    comparisons = []
    for suite in sorted({r.suite for r in results}):
        in_suite = [r for r in results if r.suite == suite]
        measured = {r.label: _values(r) for r in in_suite}
        metrics = sorted({m for values in measured.values() for m in values})
        rows = []
        for metric in metrics:
            present = [r for r in in_suite if metric in measured[r.label]]
            better_up = measured[present[0].label][metric][1]
            scores = {r.label: measured[r.label][metric][0] for r in present}
            best = (max if better_up else min)(scores, key=lambda label: scores[label])
            bars = []
            for result in present:
                value = scores[result.label]
                production = result.production.metrics.get(metric) if result.production else None
                bars.append(
                    Bar(
                        label=result.label,
                        model=result.model_name,
                        version=result.version,
                        value=value,
                        best=value == scores[best],  # ties are all best
                        diff_from_best_pct=pct(value, scores[best]),
                        diff_from_production_pct=pct(value, production),
                    )
                )
            rows.append(
                MetricComparison(metric=metric, higher_is_better=better_up, best=best, bars=bars)
            )
        comparisons.append(SuiteComparison(suite=suite, metrics=rows))
    return comparisons
