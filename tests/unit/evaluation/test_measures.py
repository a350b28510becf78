"""The numbers suites judge: metrics agree with scikit-learn, ECE and PSI behave as their
definitions say, and a metric that does not fit the model is refused with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics

from mlops.evaluation.measures import (
    expected_calibration_error,
    metric_value,
    population_stability_index,
    standard_metrics,
)

RNG = np.random.default_rng(7)
LABELS = RNG.integers(0, 2, 400).astype(float)
PROBA = np.clip(LABELS * 0.3 + RNG.uniform(0.1, 0.6, 400), 0, 1)


def test_classification_metrics_agree_with_sklearn() -> None:
    assert metric_value("roc_auc", LABELS, PROBA, "classification") == pytest.approx(
        metrics.roc_auc_score(LABELS, PROBA)
    )
    predicted = (PROBA >= 0.5).astype(int)
    assert metric_value("f1", LABELS, PROBA, "classification") == pytest.approx(
        metrics.f1_score(LABELS, predicted)
    )
    assert metric_value("brier", LABELS, PROBA, "classification") == pytest.approx(
        metrics.brier_score_loss(LABELS, PROBA)
    )


def test_regression_metrics_agree_with_sklearn() -> None:
    y, predicted = RNG.normal(size=100), RNG.normal(size=100)
    assert metric_value("mae", y, predicted, "regression") == pytest.approx(
        metrics.mean_absolute_error(y, predicted)
    )
    assert metric_value("rmse", y, predicted, "regression") == pytest.approx(
        math.sqrt(metrics.mean_squared_error(y, predicted))
    )
    assert metric_value("r2", y, predicted, "regression") == pytest.approx(
        metrics.r2_score(y, predicted)
    )
    assert set(standard_metrics(y, predicted, "regression")) == {"mae", "rmse", "r2"}


def test_metric_that_does_not_fit_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match="regression metric; this model is a classifier"):
        metric_value("mae", LABELS, PROBA, "classification")
    with pytest.raises(ValueError, match="needs class probabilities"):
        metric_value("roc_auc", LABELS, PROBA, "regression")
    with pytest.raises(ValueError, match="both classes"):
        metric_value("roc_auc", np.ones(10), np.full(10, 0.7), "classification")
    assert "roc_auc" not in standard_metrics(np.ones(10), np.full(10, 0.7), "classification")


def test_ece_is_zero_when_calibrated_and_grows_with_overconfidence() -> None:
    proba = np.repeat([0.2, 0.8], 100)
    calibrated = np.concatenate(
        [np.r_[np.ones(20), np.zeros(80)], np.r_[np.ones(80), np.zeros(20)]]
    )
    ece, table = expected_calibration_error(calibrated, proba, 10)
    assert ece == pytest.approx(0.0)
    assert [row["rows"] for row in table] == [100, 100]
    overconfident, _ = expected_calibration_error(calibrated, np.repeat([0.0, 1.0], 100), 10)
    assert overconfident == pytest.approx(0.2)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    base = RNG.normal(size=5000)
    assert population_stability_index(base, RNG.normal(size=5000), 10) < 0.02
    assert population_stability_index(base, RNG.normal(loc=1.0, size=5000), 10) > 0.25
    with pytest.raises(ValueError, match="no finite values"):
        population_stability_index(base, np.array([np.nan]), 10)


def test_psi_sees_shifts_of_constant_and_two_valued_features() -> None:
    assert population_stability_index(np.ones(500), np.full(500, 2.0), 10) > 1.0
    assert population_stability_index(np.ones(500), np.ones(500), 10) == pytest.approx(0.0)
    rare = np.r_[np.zeros(950), np.ones(50)]
    even = np.r_[np.zeros(500), np.ones(500)]
    assert population_stability_index(rare, even, 10) > 0.25
    assert population_stability_index(even, rare, 10) > 0.25


def test_psi_counts_values_outside_the_training_range() -> None:
    base = RNG.uniform(0, 1, 5000)
    assert population_stability_index(base, RNG.uniform(0, 1, 5000), 10) < 0.02
    assert population_stability_index(base, RNG.uniform(5, 6, 5000), 10) > 1.0
    assert population_stability_index(base, RNG.uniform(-6, -5, 5000), 10) > 1.0
