"""Model comparison: the best per metric follows the metric's direction, ties are all best,
and % differences keep their sign for negative and zero references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mlops.evaluation.checks import TestResult
from mlops.evaluation.comparison import compare, pct
from mlops.evaluation.data import DataRange
from mlops.evaluation.results import ReferenceMetrics, SuiteResult

DATA = DataRange(
    source="offline store",
    rows=100,
    start=datetime(2025, 1, 1, tzinfo=UTC),
    end=datetime(2025, 3, 1, tzinfo=UTC),
    tickers=["AAA"],
)


def _result(version: str, metrics: dict[str, float], p95: float | None = None) -> SuiteResult:
    tests = []
    if p95 is not None:
        tests.append(
            TestResult(name="lat", kind="latency", metric="p95_ms", value=p95, status="passed",
                       reason="")
        )  # fmt: skip
    return SuiteResult(
        model_name="m",
        version=version,
        suite="s",
        status="passed",
        counts={},
        tests=tests,
        metrics=metrics,
        production=ReferenceMetrics(version="1", metrics={"accuracy": 0.5, "log_loss": 0.7}),
        data=DATA,
    )


def test_best_follows_the_direction_and_differences_are_relative() -> None:
    (suite,) = compare(
        [
            _result("1", {"accuracy": 0.5, "log_loss": 0.7}, p95=10.0),
            _result("2", {"accuracy": 0.55, "log_loss": 0.68}, p95=20.0),
        ]
    )
    by_metric = {m.metric: m for m in suite.metrics}
    accuracy = {b.version: b for b in by_metric["accuracy"].bars}
    assert accuracy["2"].best and not accuracy["1"].best
    assert accuracy["1"].diff_from_best_pct == pytest.approx((0.5 - 0.55) / 0.55 * 100)
    assert accuracy["2"].diff_from_production_pct == pytest.approx(10.0)
    loss = {b.version: b for b in by_metric["log_loss"].bars}
    assert loss["2"].best and by_metric["log_loss"].higher_is_better is False
    latency = {b.version: b for b in by_metric["p95_ms"].bars}
    assert latency["1"].best and latency["2"].diff_from_best_pct == pytest.approx(100.0)
    assert latency["1"].diff_from_production_pct is None


def test_ties_are_all_best() -> None:
    (suite,) = compare([_result("1", {"accuracy": 0.5}), _result("2", {"accuracy": 0.5})])
    assert [b.best for b in suite.metrics[0].bars] == [True, True]


def test_percentages_with_negative_and_zero_references() -> None:
    assert pct(-1.0, -0.5) == pytest.approx(-100.0)  # r2 of -1 against -0.5: worse
    assert pct(0.2, -0.5) == pytest.approx(140.0)
    assert pct(1.0, 0.0) is None and pct(1.0, None) is None
