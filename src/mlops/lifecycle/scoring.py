"""Scoring a loaded version on the float matrix of the online features, once per request.

MLflow's pyfunc `predict` enforces the input schema on the DataFrame, and scikit-learn
then validates that DataFrame again (dtypes, feature names); for one row that is about
three quarters of the time of a prediction. For a version whose pyfunc is scikit-learn's
`predict_proba` on double inputs, the checks it would make on each call are made once,
when the version is loaded: the estimator is then given the matrix, in the schema's
column order, without either layer of checks, and returns the same numbers. Any other
version is scored through its pyfunc, as before.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.lifecycle import gates

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

FEATURE_NAMES = "feature_names_in_"


class Scorer:
    """P(up) per row of a float matrix whose columns are the version's inputs, in order."""

    def __init__(self, model: PyFuncModel) -> None:
        self.model = model
        self.columns: list[str] = [str(c) for c in model.metadata.get_input_schema().input_names()]
        self.estimator = _bare_estimator(model, self.columns)
        """The scikit-learn estimator fed the matrix directly; None: the pyfunc is used."""

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        if self.estimator is None:
            return gates.probabilities(self.model, pd.DataFrame(matrix, columns=self.columns))
        return gates.probability_up(self.estimator.predict_proba(matrix), len(matrix))


def _bare_estimator(model: PyFuncModel, columns: list[str]) -> Any | None:
    """A copy of the scikit-learn estimator behind `model` that takes a float matrix in
    `columns` order and answers exactly what the pyfunc answers; None if there is none.

    Schema enforcement of double inputs on a float64 frame of exactly those columns
    changes nothing, and the feature names the estimator was fitted with are compared
    with `columns` here, so the copy's names are dropped (scikit-learn warns when a
    matrix comes without them). The copy is checked against the pyfunc on the version's
    input example."""
    pyfunc = model.metadata.flavors.get("python_function", {})
    if pyfunc.get("loader_module") != "mlflow.sklearn" or pyfunc.get("predict_fn") != (
        "predict_proba"
    ):
        return None
    schema = model.metadata.get_input_schema()
    if schema is None or any(
        getattr(t, "name", None) != "double" or not spec.required
        for t, spec in zip(schema.input_types(), schema.inputs, strict=True)
    ):
        return None
    raw = model.get_raw_model()
    if [str(n) for n in getattr(raw, FEATURE_NAMES, [])] != columns:
        return None
    bare = copy.deepcopy(raw)
    first = bare.steps[0][1] if hasattr(bare, "steps") else bare
    if FEATURE_NAMES in vars(first):
        delattr(first, FEATURE_NAMES)
    if hasattr(bare, FEATURE_NAMES):
        return None  # the names live somewhere this does not know
    example = model.input_example
    if not isinstance(example, pd.DataFrame) or list(example.columns) != columns:
        return None
    matrix = example.to_numpy(dtype=float)
    try:
        same = np.array_equal(
            gates.probability_up(bare.predict_proba(matrix), len(matrix)),
            gates.probabilities(model, pd.DataFrame(matrix, columns=columns)),
            equal_nan=True,
        )
    except Exception:  # the model's own code: the pyfunc stays in charge
        return None
    return bare if same else None
