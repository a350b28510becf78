"""The numbers a suite's tests judge: metrics of predictions, expected calibration error and
the population stability index. scikit-learn computes the metrics."""

from __future__ import annotations

import math

import numpy as np

from mlops.evaluation.suites import CLASSIFICATION_METRICS, REGRESSION_METRICS

PSI_EPSILON = 1e-4
"""Stands in for an empty bin's share, so the logarithm stays finite."""


def metric_value(metric: str, y_true: np.ndarray, output: np.ndarray, task: str) -> float:
    """One metric of a model's output: P(up) for a classifier, the value for a regressor.

    Raises ValueError with a reason a user can act on when the metric cannot be computed.
    """
    from sklearn import metrics

    if metric in CLASSIFICATION_METRICS and task != "classification":
        raise ValueError(f"{metric} needs class probabilities; this model is a regressor")
    if metric in REGRESSION_METRICS and task != "regression":
        raise ValueError(f"{metric} is a regression metric; this model is a classifier")
    if len(y_true) == 0:
        raise ValueError("no rows")
    if metric == "mae":
        return float(metrics.mean_absolute_error(y_true, output))
    if metric == "rmse":
        return float(math.sqrt(metrics.mean_squared_error(y_true, output)))
    if metric == "r2":
        if len(y_true) < 2:
            raise ValueError("r2 needs at least 2 rows")
        return float(metrics.r2_score(y_true, output))
    labels = y_true.astype(int)
    predicted = (output >= 0.5).astype(int)
    if metric == "roc_auc":
        if len(np.unique(labels)) < 2:
            raise ValueError("roc_auc needs both classes in the rows")
        return float(metrics.roc_auc_score(labels, output))
    simple = {
        "accuracy": lambda: metrics.accuracy_score(labels, predicted),
        "precision": lambda: metrics.precision_score(labels, predicted, zero_division=0),
        "recall": lambda: metrics.recall_score(labels, predicted, zero_division=0),
        "f1": lambda: metrics.f1_score(labels, predicted, zero_division=0),
        "log_loss": lambda: metrics.log_loss(
            labels, np.clip(output, 1e-15, 1 - 1e-15), labels=[0, 1]
        ),
        "brier": lambda: metrics.brier_score_loss(labels, output),
    }
    if metric not in simple:
        raise ValueError(f"unknown metric {metric}")
    return float(simple[metric]())


def standard_metrics(y_true: np.ndarray, output: np.ndarray, task: str) -> dict[str, float]:
    """Every metric of the task that can be computed on these rows."""
    names = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    values = {}
    for name in names:
        try:
            value = metric_value(name, y_true, output, task)
        except ValueError:
            continue
        if math.isfinite(value):
            values[name] = value
    return values


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, bins: int
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width probability bins: the row-weighted mean |confidence - frequency|.

    Returns the ECE and the reliability table (one entry per non-empty bin).
    """
    if len(y_true) == 0:
        raise ValueError("no rows")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    total, table = 0.0, []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        if not count:
            continue
        confidence, frequency = float(proba[mask].mean()), float(y_true[mask].mean())
        total += count * abs(confidence - frequency)
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "rows": count,
                "mean_predicted": confidence,
                "observed": frequency,
            }
        )
    return total / len(y_true), table


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int) -> float:
    """PSI of `actual` against `expected`.

    Bins: one per value when `expected` has at most `bins` distinct values (and one for any
    other value), else quantile bins of `expected` plus one below its minimum and one above
    its maximum, so a shift out of the training range always counts. Below 0.1 is usually
    read as no shift, 0.1-0.25 as moderate, above 0.25 as large.
    """
    expected = expected[np.isfinite(expected)]
    actual = actual[np.isfinite(actual)]
    if len(expected) == 0 or len(actual) == 0:
        raise ValueError("no finite values to compare")
    distinct = np.unique(expected)
    if len(distinct) <= bins:
        expected_counts = np.array([*(np.sum(expected == v) for v in distinct), 0])
        actual_counts = np.array([np.sum(actual == v) for v in distinct])
        actual_counts = np.append(actual_counts, len(actual) - actual_counts.sum())
    else:
        inner = np.quantile(expected, np.linspace(0.0, 1.0, bins + 1))[1:-1]
        edges = np.unique([distinct[0], *inner, np.nextafter(distinct[-1], np.inf)])
        size = len(edges) + 1
        expected_counts = np.bincount(np.searchsorted(edges, expected, "right"), minlength=size)
        actual_counts = np.bincount(np.searchsorted(edges, actual, "right"), minlength=size)
    e = np.maximum(expected_counts / len(expected), PSI_EPSILON)
    a = np.maximum(actual_counts / len(actual), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))
