"""Registered models that tests build for themselves: a copy of a `lifecycle-model` version
as a model of its own, another version of a `lifecycle-model` artifact, a logistic
regression on chosen columns, a model that raises."""

from __future__ import annotations

import uuid

import mlflow.pyfunc
import pandas as pd

from mlops.features.compute import FEATURE_COLUMNS
from mlops.lifecycle import mlflow_backend
from mlops.settings import Settings

LIFECYCLE_EXPERIMENT = "lifecycle-tests"
LIFECYCLE_MODEL = "lifecycle-model"
"""The experiment and registered model of the session's `lifecycle` fixture."""


def copy_version(
    settings: Settings, version: str = "1", source_model: str = LIFECYCLE_MODEL
) -> str:
    """A registered model of a test's own holding a copy of a `lifecycle-model` version
    (same artifact, same run), so tests can move aliases without meeting each other."""
    from mlops.lifecycle.mlflow_backend import client, configure_mlflow

    configure_mlflow(settings)  # MLflow resolves a `models:/m-...` source with its global URI
    mlflow_client = client(settings)
    source = mlflow_client.get_model_version(source_model, version)
    name = f"test-model-{uuid.uuid4().hex[:8]}"
    mlflow_client.create_registered_model(name)
    mlflow_client.create_model_version(name, source.source, run_id=source.run_id)
    return name


def add_version(settings: Settings, name: str, source_version: str) -> str:
    mlflow_backend.configure_mlflow(settings)  # resolves the `models:/m-...` source
    source = mlflow_backend.client(settings).get_model_version("lifecycle-model", source_version)
    created = mlflow_backend.client(settings).create_model_version(
        name, source.source, run_id=source.run_id
    )
    return str(created.version)


def logged_model(settings: Settings, columns: list[str] | None) -> str:
    """Register a model of its own: a logistic regression on `columns`, or (None) a pyfunc
    model with the served inputs whose predict raises."""
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    mlflow_backend.configure_mlflow(settings)
    name = f"test-logged-{uuid.uuid4().hex[:8]}"
    # artifacts under the test's MLOPS_HOME (a bare set_experiment would write ./mlruns)
    experiment = mlflow_backend.experiment_id_for(settings, "lifecycle-test-models")
    with mlflow.start_run(experiment_id=experiment):
        if columns is not None:
            frame = pd.DataFrame(
                np.random.default_rng(0).normal(size=(40, len(columns))), columns=columns
            )
            labels = np.arange(40) % 2
            model = LogisticRegression().fit(frame, labels)
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=name,
                pyfunc_predict_fn="predict_proba",
                signature=infer_signature(frame, model.predict_proba(frame)),
            )
        else:
            served = list(FEATURE_COLUMNS)
            frame = pd.DataFrame(np.zeros((2, len(served))), columns=served)
            mlflow.pyfunc.log_model(
                name="model",
                python_model=RaisingModel(),
                registered_model_name=name,
                signature=infer_signature(frame, np.zeros((2, 2))),
            )
    return name


class RaisingModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A pyfunc model whose predict raises."""

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")
