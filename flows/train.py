"""Prefect flows `train` and `train-many`.

`train`: load the named model config -> build (or load) the dataset -> fit, evaluate and
log to MLflow -> register the model.

`train-many`: several configurations at once. Their datasets are built first (one per
feature service, shared), then one `fit-and-log` task per configuration runs where the
settings say (`flows.fan_out`: the Ray cluster's workers with `compute_engine: ray`, else
threads of the flow's process), and the flow registers the logged models one at a time
in the order the configurations were named, so version numbers follow that order."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run

from flows.fan_out import task_submitter
from mlops.errors import InvalidInputError
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


@task(name="build-datasets", cache_policy=NO_CACHE)
def build_datasets(
    settings: Settings, configs: dict[str, training.TrainConfig], author: str
) -> dict[str, DatasetInfo]:
    return training.prepare_datasets(settings, configs, author)


@task(name="fit-and-log", cache_policy=NO_CACHE)
def fit_and_log(
    settings: Settings,
    config: training.TrainConfig,
    author: str,
    dataset: DatasetInfo,
    flow_run_id: str | None,
    config_name: str,
) -> training.LoggedRun:
    return training.fit_and_log_run(settings, config, author, dataset, flow_run_id, config_name)


@task(name="register", cache_policy=NO_CACHE)
def register(
    settings: Settings, config: training.TrainConfig, logged: training.LoggedRun, author: str
) -> training.TrainResult:
    return training.register_run(settings, config, logged, author)


def _log_result(result: training.TrainResult) -> None:
    get_run_logger().info(
        "Trained %s on %s (%d train / %d test rows): %s; registered %s",
        result.kind,
        result.dataset,
        result.train_rows,
        result.test_rows,
        ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())),
        result.model_uri,
    )


def _flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


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
    config = load_config(settings, model, hyperparameters, dataset)
    info = build_dataset(settings, config, author)
    logged = fit_and_log(settings, config, author, info, _flow_run_id(), model)
    result = register(settings, config, logged, author)
    _log_result(result)
    return result


@flow(name="train-many")
def train_many_flow(
    models: list[str],
    settings: Settings | None = None,
    author: str | None = None,
    dataset: str | None = None,
) -> list[training.TrainResult]:
    """Train several named configurations of config/models.yaml side by side and register
    each (in the order named). Every configuration is checked before anything runs; one
    that fails to train does not stop the others: they are registered, then the flow
    raises the first failure.

    `dataset` names an existing dataset for all of them; otherwise configurations of the
    same feature service share one new dataset.
    """
    settings = settings or load_settings()
    author = author or settings.author
    if not models or len(set(models)) != len(models):
        raise InvalidInputError(
            f"train-many needs distinct configuration names, got {models}.", {"models": models}
        )
    configs = {name: load_config(settings, name, None, dataset) for name in models}
    datasets = build_datasets(settings, configs, author)
    flow_run_id = _flow_run_id()
    with task_submitter(settings) as submit:
        futures = {
            name: submit(
                fit_and_log.with_options(task_run_name=f"fit-and-log · {name}"),
                {"settings": settings, "config": config, "author": author,
                 "dataset": datasets[name], "flow_run_id": flow_run_id, "config_name": name},
            )
            for name, config in configs.items()
        }  # fmt: skip
        wait(list(futures.values()))
    results, failed = [], []
    for name, future in futures.items():
        if not future.state.is_completed():
            failed.append(name)
            continue
        results.append(register(settings, configs[name], future.result(), author))
        _log_result(results[-1])
    if failed:
        get_run_logger().error(
            "Training failed for %s; registered: %s",
            ", ".join(failed),
            ", ".join(r.model_uri for r in results) or "none",
        )
        futures[failed[0]].result()  # raises that training's error
    return results
