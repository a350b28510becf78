"""The `train` and `train-many` flows on the ingested demo store: MLflow runs, history,
registry, lineage."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from flows.train import train_flow, train_many_flow

from mlops.errors import InvalidInputError, NotFoundError
from mlops.features.datasets import get_dataset, list_datasets
from mlops.lifecycle.training import (
    CONFIG_TAG,
    FLOW_RUN_TAG,
    LABEL,
    MODELS_FILE,
    TrainResult,
    result_of_flow_run,
    time_split,
)
from mlops.settings import Settings

FAST: dict[str, TrainResult] = {
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 20, "max_depth": 4},
    "gradient_boosting": {"n_estimators": 30, "max_depth": 2},
}
METRICS = {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"}


@pytest.fixture(scope="module")
def trained(ingested: Settings) -> dict[str, TrainResult]:
    """Each of the three kinds trained once through the flow (each on a dataset of its own)."""
    return {
        kind: train_flow(model=kind, settings=ingested, author="tester", hyperparameters=params)
        for kind, params in FAST.items()
    }


def _client(settings: Settings) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient()


@pytest.mark.parametrize("kind", list(FAST))
def test_run_has_metrics_params_and_lineage(
    trained: dict[str, TrainResult], ingested: Settings, kind: str
) -> None:
    result = trained[kind]
    run = _client(ingested).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert set(run.data.metrics) >= METRICS
    assert run.data.metrics == pytest.approx({**run.data.metrics, **result.metrics})
    assert 0.0 <= run.data.metrics["roc_auc"] <= 1.0
    params = run.data.params
    assert params["kind"] == kind and params["dataset"] == result.dataset
    for name, value in FAST[kind].items():
        assert params[name] == str(value)
    assert params["train_end"] < params["test_start"]
    assert params["train_start"] == result.train_start.isoformat()[:10]
    tags = run.data.tags
    assert tags["dataset"] == result.dataset and tags["mlops.author"] == "tester"
    assert tags["mlflow.user"] == "tester"  # the MLflow UI's user column
    model_version = _client(ingested).get_model_version(result.model_name, result.model_version)
    assert model_version.tags["mlops.author"] == "tester"
    views = json.loads(tags["feature_views"])
    assert {"price_returns", "risk_momentum", "volume_signals", "training_labels"} <= set(views)
    assert all(version >= 1 for version in views.values())
    assert tags["git_commit"] == "unknown" or len(tags["git_commit"]) == 40
    artifact_root = run.info.artifact_uri
    assert artifact_root.startswith("file://") and str(ingested.home) in artifact_root


@pytest.mark.parametrize("kind", list(FAST))
def test_metric_history_has_steps(
    trained: dict[str, TrainResult], ingested: Settings, kind: str
) -> None:
    client = _client(ingested)
    run_id = trained[kind].run_id
    for metric in ("cv_roc_auc", "cv_accuracy"):
        history = client.get_metric_history(run_id, metric)
        assert sorted(point.step for point in history) == [0, 1, 2, 3]
    staged = client.get_metric_history(run_id, "staged_log_loss")
    if kind == "gradient_boosting":
        steps = [point.step for point in staged]
        assert len(steps) == 30 and steps[-1] == 30  # 30 stages: every one, <= 50 points
        assert staged[-1].value == pytest.approx(trained[kind].metrics["log_loss"])
    else:
        assert staged == []


@pytest.mark.parametrize("kind", list(FAST))
def test_registered_version_loads_and_predicts(
    trained: dict[str, TrainResult],
    ingested: Settings,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    result = trained[kind]
    client = _client(ingested)
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.run_id == result.run_id
    assert version.tags["model_kind"] == kind
    assert float(version.tags["roc_auc"]) == pytest.approx(result.metrics["roc_auc"], abs=1e-4)
    assert float(version.tags["accuracy"]) == pytest.approx(result.metrics["accuracy"], abs=1e-4)
    assert result.dataset in version.description and kind in version.description

    _, path = get_dataset(ingested, result.dataset)
    train, test = time_split(pd.read_parquet(path), 0.2)
    assert len(train) == result.train_rows and len(test) == result.test_rows
    assert train["event_timestamp"].max() < test["event_timestamp"].min()
    assert not set(train["event_timestamp"]) & set(test["event_timestamp"])
    assert pd.Timestamp(result.test_start) == test["event_timestamp"].min()

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    model = mlflow.pyfunc.load_model(result.model_uri)
    features = test[result.features]
    assert list(model.metadata.get_input_schema().input_names()) == result.features
    proba = np.asarray(model.predict(features))
    assert proba.shape == (len(test), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    from sklearn.metrics import accuracy_score

    accuracy = accuracy_score(test[LABEL], (proba[:, 1] >= 0.5).astype(int))
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_invalid_hyperparameter_value_fails_the_run(ingested: Settings) -> None:
    with pytest.raises(InvalidInputError, match="Training gradient_boosting failed") as info:
        train_flow(
            model="gradient_boosting",
            settings=ingested,
            author="tester",
            hyperparameters={"n_estimators": -3},
        )
    run_id = info.value.details["run_id"]
    assert run_id
    run = _client(ingested).get_run(run_id)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["dataset"] == info.value.details["dataset"]


def test_unknown_model_and_hyperparameter_names_are_clear_errors(ingested: Settings) -> None:
    with pytest.raises(NotFoundError, match="Unknown model configuration 'svm'"):
        train_flow(model="svm", settings=ingested)
    with pytest.raises(InvalidInputError, match="Unknown hyperparameters for random_forest: depth"):
        train_flow(model="random_forest", settings=ingested, hyperparameters={"depth": 3})


def test_existing_dataset_is_reused(trained: dict[str, TrainResult], ingested: Settings) -> None:
    dataset = trained["logistic_regression"].dataset
    result = train_flow(
        model="logistic_regression",
        settings=ingested,
        dataset=dataset,
        hyperparameters=FAST["logistic_regression"],
    )
    assert result.dataset == dataset
    assert result.metrics == pytest.approx(trained["logistic_regression"].metrics)
    assert int(result.model_version) > int(trained["logistic_regression"].model_version)
    with pytest.raises(NotFoundError, match="Unknown dataset"):
        train_flow(model="logistic_regression", settings=ingested, dataset="no-such-dataset")


def _models_config(settings: Settings, tmp_path: Path, models: dict[str, Any]) -> Settings:
    """The settings with a config folder of the test's own whose models.yaml holds
    `models`, each in an experiment and registered model of the test's own."""
    config_dir = tmp_path / "config"
    shutil.copytree(settings.config_dir, config_dir)
    owned = f"train-many-{uuid.uuid4().hex[:6]}"
    entries = {
        name: {**entry, "experiment": owned, "registered_model": owned}
        for name, entry in models.items()
    }
    (config_dir / MODELS_FILE).write_text(yaml.safe_dump({"models": entries}))
    return settings.model_copy(update={"config_dir": config_dir})


def test_train_many_fits_side_by_side_and_registers_in_the_order_named(
    ingested: Settings, tmp_path: Path
) -> None:
    settings = _models_config(
        ingested,
        tmp_path,
        {
            "boosted": {"kind": "gradient_boosting", "hyperparameters": FAST["gradient_boosting"]},
            "linear": {"kind": "logistic_regression", "hyperparameters": {"C": 1.0}},
        },
    )
    before = {info.name for info in list_datasets(settings)}
    state = train_many_flow(
        models=["linear", "boosted"], settings=settings, author="tester", return_state=True
    )
    results = state.result()
    flow_run_id = str(state.state_details.flow_run_id)

    assert [r.kind for r in results] == ["logistic_regression", "gradient_boosting"]
    assert [r.model_version for r in results] == ["1", "2"]  # in the order named
    (shared,) = {r.dataset for r in results}  # one dataset, built once for both
    assert {info.name for info in list_datasets(settings)} - before == {shared}
    client = _client(settings)
    for name, result in zip(["linear", "boosted"], results, strict=True):
        tags = client.get_run(result.run_id).data.tags
        assert tags[CONFIG_TAG] == name and tags[FLOW_RUN_TAG] == flow_run_id
        version = client.get_model_version(result.model_name, result.model_version)
        assert version.run_id == result.run_id and version.tags["model_kind"] == result.kind
        # what a submitter of the flow to a work pool reads back, per configuration
        found = result_of_flow_run(settings, result.model_name, flow_run_id, name)
        assert found == result
    # side by side gives what one training alone gives on that dataset
    alone = train_flow(model="boosted", settings=settings, author="tester", dataset=shared)
    assert alone.metrics == results[1].metrics
    assert alone.model_version == "3"


def test_train_many_registers_the_others_when_one_fails(ingested: Settings, tmp_path: Path) -> None:
    settings = _models_config(
        ingested,
        tmp_path,
        {
            "good": {"kind": "logistic_regression", "hyperparameters": {"C": 1.0}},
            "bad": {"kind": "logistic_regression", "hyperparameters": {"C": -1.0}},
        },
    )
    with pytest.raises(InvalidInputError, match="Training logistic_regression failed"):
        train_many_flow(models=["bad", "good"], settings=settings, author="tester")
    client = _client(settings)
    (model,) = client.search_registered_models(f"name = '{_owned(settings)}'")
    (version,) = client.search_model_versions(f"name = '{model.name}'")
    runs = client.search_runs(
        [client.get_experiment_by_name(model.name).experiment_id],
        order_by=["attributes.start_time"],
    )
    status = {run.data.tags[CONFIG_TAG]: run.info.status for run in runs}
    assert status == {"good": "FINISHED", "bad": "FAILED"}
    assert version.run_id == next(r.info.run_id for r in runs if r.data.tags[CONFIG_TAG] == "good")


def test_train_many_checks_every_name_before_anything_runs(
    ingested: Settings, tmp_path: Path
) -> None:
    settings = _models_config(ingested, tmp_path, {"linear": {"kind": "logistic_regression"}})
    before = list_datasets(settings)
    with pytest.raises(NotFoundError, match="Unknown model configuration 'svm'"):
        train_many_flow(models=["linear", "svm"], settings=settings, author="tester")
    with pytest.raises(InvalidInputError, match="distinct"):
        train_many_flow(models=["linear", "linear"], settings=settings, author="tester")
    assert list_datasets(settings) == before
    assert _client(settings).search_registered_models(f"name = '{_owned(settings)}'") == []


def _owned(settings: Settings) -> str:
    models = yaml.safe_load((settings.config_dir / MODELS_FILE).read_text())["models"]
    (owned,) = {entry["registered_model"] for entry in models.values()}
    return str(owned)
