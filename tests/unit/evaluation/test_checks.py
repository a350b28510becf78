"""Each kind of suite test on a small scikit-learn model (no MLflow): what passes, what
fails and why, and that a model that raises turns its tests into errors with the reason."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from tests.support.settings import make_settings

from mlops.evaluation.candidates import Candidate
from mlops.evaluation.checks import QuietLock, SuiteContext, run_check
from mlops.evaluation.suites import (
    BaselineTest,
    CalibrationTest,
    DriftTest,
    LatencyTest,
    MetricTest,
    RobustnessTest,
    SliceTest,
)
from mlops.lifecycle.training import LABEL

INPUTS = ["signal", "noise", "vol_20d"]


class _Proba:
    """Stands in for a pyfunc model: predict gives predict_proba's two columns."""

    def __init__(self, model: Any, fail: bool = False, nan: bool = False) -> None:
        self.model, self.fail, self.nan = model, fail, nan

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.fail:
            raise RuntimeError("boom")
        proba = np.asarray(self.model.predict_proba(frame[INPUTS]))
        if self.nan:
            proba[::7] = np.nan
        return proba


def _frame(rows: int = 600, seed: int = 11, flip: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    tickers = np.array(["AAA", "BBB", "CCC"])[np.arange(rows) % 3]
    label = (signal + rng.normal(scale=0.5, size=rows) > 0).astype(float)
    flipped = (tickers == "CCC") & flip  # the model is wrong on CCC: its slice fails
    label[flipped] = 1 - label[flipped]
    return pd.DataFrame(
        {
            "ticker": tickers,
            "event_timestamp": pd.date_range("2025-01-01", periods=rows, freq="h", tz="UTC"),
            "signal": signal,
            "noise": rng.normal(size=rows),
            "vol_20d": rng.uniform(0.1, 0.5, rows),
            LABEL: label,
        }
    )


def _candidate(
    version: str = "1", fail: bool = False, seed: int = 1, nan: bool = False
) -> Candidate:
    train = _frame(seed=seed)
    train = train[train["ticker"] != "CCC"]
    model = LogisticRegression().fit(train[INPUTS], train[LABEL])
    return Candidate(
        name="m",
        version=version,
        model=_Proba(model, fail, nan),
        inputs=INPUTS,
        run_id=None,
        model_id=None,
        train_start=pd.Timestamp("2024-01-01", tz="UTC"),
        train_end=pd.Timestamp("2024-12-31", tz="UTC"),
        test_start=None,
    )


@pytest.fixture
def ctx(tmp_path: Path) -> SuiteContext:
    return SuiteContext(make_settings(tmp_path), _candidate(), _frame())


def test_metric_threshold_passes_and_fails_with_the_value(ctx: SuiteContext) -> None:
    ok = run_check(
        ctx, MetricTest(name="auc", kind="metric", metric="roc_auc", op=">=", threshold=0.5)
    )
    assert ok.status == "passed" and ok.value is not None and 0.5 < ok.value < 1
    strict = MetricTest(name="auc", kind="metric", metric="roc_auc", op=">=", threshold=0.99)
    bad = run_check(ctx, strict)
    assert bad.status == "failed" and bad.value == ok.value
    assert bad.reason == f"roc_auc = {ok.value:.4f}, needs >= 0.99"


def test_slice_fails_on_the_worst_ticker_and_reports_every_slice(ctx: SuiteContext) -> None:
    test = SliceTest(name="per_ticker", kind="slice", metric="accuracy", op=">=", threshold=0.6)
    result = run_check(ctx, test)
    assert result.status == "failed"
    assert result.details["worst"] == "CCC" and result.details["failed"] == ["CCC"]
    values = {s["slice"]: s["value"] for s in result.details["slices"]}
    assert result.value == min(values.values()) == values["CCC"] < 0.5 < values["AAA"]


def test_small_slices_are_skipped_and_regimes_split_in_terciles(ctx: SuiteContext) -> None:
    small = SliceTest(
        name="s", kind="slice", metric="accuracy", op=">=", threshold=0.0, min_rows=1000
    )
    result = run_check(ctx, small)
    assert result.status == "error" and "no slice by ticker could be judged" in result.reason
    regimes = SliceTest(
        name="r", kind="slice", by="volatility_regime", metric="roc_auc", op=">=", threshold=0.0
    )
    result = run_check(ctx, regimes)
    assert result.status == "passed"
    assert [s["rows"] for s in result.details["slices"]] == [200, 200, 200]


def test_baseline_measures_the_regression_against_the_reference(ctx: SuiteContext) -> None:
    test = BaselineTest(name="b", kind="baseline", metric="roc_auc", margin=0.0)
    alone = run_check(ctx, test)
    assert alone.status == "passed" and "no production version" in alone.reason
    weaker = _candidate(version="2", seed=2)
    weaker.model.model.coef_ = -weaker.model.model.coef_  # an inverted model: much worse
    ctx.baselines = {"production": weaker}
    result = run_check(ctx, test)
    assert result.status == "passed" and result.value is not None and result.value < 0
    reverse = SuiteContext(ctx.settings, weaker, ctx.frame, baselines={"production": ctx.candidate})
    result = run_check(reverse, test)
    assert result.status == "failed" and result.value is not None and result.value > 0.2
    assert result.details["baseline_version"] == "1"


def test_robustness_measures_the_drop_under_noise_and_a_missing_feature(tmp_path: Path) -> None:
    ctx = SuiteContext(make_settings(tmp_path), _candidate(), _frame(flip=False))
    noise = RobustnessTest(
        name="n", kind="robustness", metric="roc_auc", perturbation="noise", noise_scale=3.0,
        max_drop=0.01,
    )  # fmt: skip
    result = run_check(ctx, noise)
    assert result.status == "failed" and result.value is not None and result.value > 0.01
    assert result.details["after"] < result.details["before"]
    harmless = RobustnessTest(
        name="m", kind="robustness", metric="roc_auc", perturbation="missing",
        features=["noise"], max_drop=0.05,
    )  # fmt: skip
    assert run_check(ctx, harmless).status == "passed"
    foreign = harmless.model_copy(update={"features": ["rsi_14"]})
    result = run_check(ctx, foreign)
    assert result.status == "error" and "rsi_14 not inputs of m v1" in result.reason


def test_calibration_reports_ece_and_its_table(ctx: SuiteContext) -> None:
    result = run_check(ctx, CalibrationTest(name="c", kind="calibration", max_ece=0.5))
    assert result.status == "passed" and result.metric == "ece"
    assert sum(row["rows"] for row in result.details["bins"]) == len(ctx.frame)


def test_latency_reports_p95_per_batch(ctx: SuiteContext) -> None:
    test = LatencyTest(name="l", kind="latency", batch_size=1000, repeats=5, max_p95_ms=10_000)
    result = run_check(ctx, test)
    assert result.status == "passed" and result.value is not None and result.value > 0
    assert result.details["median_ms"] <= result.value
    strict = test.model_copy(update={"max_p95_ms": 1e-6})
    assert run_check(ctx, strict).status == "failed"


def test_drift_without_a_training_window_is_an_error(ctx: SuiteContext) -> None:
    ctx.candidate.train_start = None
    result = run_check(ctx, DriftTest(name="d", kind="drift", max_psi=0.2))
    assert result.status == "error" and "does not record its training window" in result.reason


def test_a_model_that_raises_turns_every_test_into_an_error(tmp_path: Path) -> None:
    ctx = SuiteContext(make_settings(tmp_path), _candidate(fail=True), _frame())
    tests = [
        MetricTest(name="a", kind="metric", metric="accuracy", op=">=", threshold=0.5),
        SliceTest(name="s", kind="slice", metric="accuracy", op=">=", threshold=0.5),
        CalibrationTest(name="c", kind="calibration", max_ece=0.1),
        LatencyTest(name="l", kind="latency", max_p95_ms=100),
        DriftTest(name="d", kind="drift", max_psi=0.2),
    ]
    results = [run_check(ctx, test) for test in tests]
    assert [r.status for r in results] == ["error"] * 5
    assert all(r.reason == "the model raised RuntimeError: boom" for r in results)


def test_nan_predictions_are_errors_not_scores(tmp_path: Path) -> None:
    ctx = SuiteContext(make_settings(tmp_path), _candidate(nan=True), _frame())
    test = MetricTest(name="a", kind="metric", metric="accuracy", op=">=", threshold=0.0)
    result = run_check(ctx, test)
    assert result.status == "error" and "86 NaN or infinite values" in result.reason


def test_latency_is_timed_alone_while_the_other_work_waits() -> None:
    """QUIET: the exclusive holder never overlaps a shared one, and waits for them."""
    lock = QuietLock()
    events: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def worker() -> None:
        with lock.shared():
            events.append("shared in")
            inside.set()
            release.wait(5)
            events.append("shared out")

    def timer() -> None:
        with lock.alone():
            events.append("alone")

    threads = [threading.Thread(target=worker), threading.Thread(target=timer)]
    threads[0].start()
    inside.wait(5)
    threads[1].start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert events == ["shared in", "shared out", "alone"]
