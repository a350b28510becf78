"""Model metrics: the classification metrics the platform logs and gates on, and which
direction is better for a metric."""

from __future__ import annotations

import math

import numpy as np

KNOWN_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
LOWER_IS_BETTER = ("log_loss", "brier", "mae", "rmse", "mse", "staged_log_loss", "ece")
MAX_FINITE = 1.7e308
"""MLflow stores +-inf as +-1.79e308; anything beyond this is not a real measurement."""


def higher_is_better(metric: str) -> bool:
    return not (metric in LOWER_IS_BETTER or metric.endswith("_loss") or metric.endswith("error"))


def finite_or_none(value: float | None) -> float | None:
    """The value, or None for NaN, infinities and MLflow's stand-ins for them."""
    if value is None or not math.isfinite(value) or abs(value) >= MAX_FINITE:
        return None
    return float(value)


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, precision, recall, f1, roc_auc, log_loss and brier of P(up) on a test set."""
    from sklearn import metrics

    predicted = (proba >= 0.5).astype(int)
    values = {
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "precision": metrics.precision_score(y_true, predicted, zero_division=0),
        "recall": metrics.recall_score(y_true, predicted, zero_division=0),
        "f1": metrics.f1_score(y_true, predicted, zero_division=0),
        "log_loss": metrics.log_loss(y_true, proba, labels=[0, 1]),
        "brier": metrics.brier_score_loss(y_true, proba),
    }
    if len(np.unique(y_true)) == 2:
        values["roc_auc"] = metrics.roc_auc_score(y_true, proba)
    return {name: float(value) for name, value in values.items()}
