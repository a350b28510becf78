"""Scoring a loaded version: the estimator fed the feature matrix directly answers exactly
what MLflow's pyfunc answers, and any version it cannot vouch for is scored by its pyfunc."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops.lifecycle import gates
from mlops.lifecycle.scoring import Scorer
from mlops.lifecycle.training import SKOPS_TRUSTED_TYPES

COLUMNS = ["ret_1d", "ret_5d", "rsi_14"]


def _frame(rows: int, seed: int, columns: list[str] = COLUMNS) -> pd.DataFrame:
    values = np.random.default_rng(seed).normal(size=(rows, len(columns)))
    return pd.DataFrame(values, columns=columns)


def _saved(
    tmp_path: Path,
    estimator: Any,
    train: pd.DataFrame,
    example: bool = True,
    predict_fn: str = "predict_proba",
) -> mlflow.pyfunc.PyFuncModel:
    """The estimator fitted on `train`, saved as the platform logs models, loaded back."""
    estimator.fit(train, np.arange(len(train)) % 2)
    path = tmp_path / "model"
    mlflow.sklearn.save_model(
        estimator,
        str(path),
        signature=infer_signature(train, estimator.predict_proba(train)),
        input_example=train.head(5) if example else None,
        pyfunc_predict_fn=predict_fn,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
    )
    return mlflow.pyfunc.load_model(str(path))


PLATFORM_KINDS = {
    "logistic_regression": lambda: Pipeline(
        [("scaler", StandardScaler()), ("model", LogisticRegression())]
    ),
    "gradient_boosting": lambda: Pipeline(
        [("model", GradientBoostingClassifier(n_estimators=10, max_depth=2))]
    ),
}


@pytest.mark.parametrize("kind", sorted(PLATFORM_KINDS))
def test_the_platforms_models_are_scored_without_the_checks_and_to_the_same_numbers(
    tmp_path: Path, kind: str
) -> None:
    model = _saved(tmp_path, PLATFORM_KINDS[kind](), _frame(60, 0))
    scorer = Scorer(model)
    assert scorer.estimator is not None and scorer.columns == COLUMNS
    matrix = _frame(7, 1).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. scikit-learn's "X does not have valid feature names"
        scored = scorer.probabilities(matrix)
    expected = gates.probabilities(model, pd.DataFrame(matrix, columns=COLUMNS))
    assert np.array_equal(scored, expected)
    # The loaded model itself is left as it was: its pyfunc still checks feature names.
    assert list(model.get_raw_model().feature_names_in_) == COLUMNS


def test_versions_it_cannot_vouch_for_are_scored_by_their_pyfunc(tmp_path: Path) -> None:
    train = _frame(60, 0)
    without_example = _saved(tmp_path / "a", LogisticRegression(), train, example=False)
    labels = _saved(tmp_path / "b", LogisticRegression(), train, predict_fn="predict")
    integers = _saved(tmp_path / "c", LogisticRegression(), train.assign(ret_1d=np.arange(60)))
    assert Scorer(integers).estimator is None  # MLflow's schema would convert the inputs
    matrix = _frame(4, 2).to_numpy()
    for model in (without_example, labels):
        scorer = Scorer(model)
        assert scorer.estimator is None
        expected = gates.probabilities(model, pd.DataFrame(matrix, columns=COLUMNS))
        assert np.array_equal(scorer.probabilities(matrix), expected)
