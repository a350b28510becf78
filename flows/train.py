"""Prefect flow `train`: load the named model config -> build (or load) the dataset ->
fit, evaluate, log to MLflow and register the model."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from mlops.features.datasets import DatasetInfo
from mlops.lifecycle import training
from mlops.settings import Settings, load_settings


@task(name="load-config", cache_policy=NO_CACHE)
def load_config(
    settings: Settings,
    model: str,
    hyperparameters: dict[str, Any] | None,
    dataset: str | None,
) -> training.TrainConfig:
    config = training.get_model_config(settings, model, hyperparameters)
    return config.model_copy(update={"dataset": dataset}) if dataset else config


@task(name="build-dataset", cache_policy=NO_CACHE)
def build_dataset(settings: Settings, config: training.TrainConfig, author: str) -> DatasetInfo:
    return training.prepare_dataset(settings, config, author)


@task(name="fit-and-log", cache_policy=NO_CACHE)
def fit_and_log(
    settings: Settings, config: training.TrainConfig, author: str, dataset: DatasetInfo
) -> training.TrainResult:
    run_id = flow_run.get_id()
    return training.train_model(
        settings, config, author, dataset=dataset, flow_run_id=str(run_id) if run_id else None
    )


@flow(name="train")
def train_flow(
    model: str = "gradient_boosting",
    settings: Settings | None = None,
    author: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> training.TrainResult:
    """Train the named model configuration of config/models.yaml and register it in MLflow.

    `hyperparameters` are merged over the configured ones; `dataset` names an existing
    dataset instead of building a new one from the `model_features` service.
    """
    settings = settings or load_settings()
    author = author or settings.author
    logger = get_run_logger()
    config = load_config(settings, model, hyperparameters, dataset)
    info = build_dataset(settings, config, author)
    result = fit_and_log(settings, config, author, info)
    logger.info(
        "Trained %s on %s (%d train / %d test rows): %s; registered %s",
        result.kind,
        result.dataset,
        result.train_rows,
        result.test_rows,
        ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())),
        result.model_uri,
    )
    return result
