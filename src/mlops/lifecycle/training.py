"""Training of the direction model: a time-ordered split of a point-in-time correct dataset,
a scikit-learn pipeline, test metrics, and everything logged to MLflow with lineage tags and
a registered model version.

MLflow is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.errors import (
    ConfigError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
    field_of,
    problems,
)
from mlops.features.datasets import DEFAULT_SERVICE, DatasetInfo, DatasetRequest
from mlops.features.datasets import create_dataset as _create_dataset
from mlops.features.datasets import get_dataset as _get_dataset
from mlops.fields import UtcDatetime
from mlops.lifecycle import mlflow_backend
from mlops.lifecycle.metrics import classification_metrics
from mlops.lifecycle.mlflow_backend import configure_mlflow, experiment_id_for
from mlops.settings import Settings

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

ModelKind = Literal["logistic_regression", "random_forest", "gradient_boosting"]
MODEL_KINDS: tuple[str, ...] = ("logistic_regression", "random_forest", "gradient_boosting")
MODELS_FILE = "models.yaml"
LABEL = "label_next_day_up"
KEY_COLUMNS = ("ticker", "event_timestamp")
MAX_HISTORY_POINTS = 50
FLOW_RUN_TAG = "mlops.flow_run_id"
"""MLflow run tag: the Prefect flow run that trained it."""
RESULT_TAG = "mlops.train_result"
"""MLflow run tag: the training's `TrainResult` as JSON (what a submitter reads back)."""
CONFIG_TAG = "mlops.model_config"
"""MLflow run tag: the name in config/models.yaml of the configuration it trained."""
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
"""Types the models we fit ourselves contain that skops does not trust by default."""


class TrainConfig(BaseModel):
    """One named model configuration (an entry of config/models.yaml)."""

    model_config = ConfigDict(extra="forbid")

    kind: ModelKind
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    experiment: str = "direction-model"
    registered_model: str = "direction-model"
    dataset: str | None = Field(
        default=None, description="None: build one from the feature service over all tickers."
    )
    feature_service: str = DEFAULT_SERVICE
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    n_splits: int = Field(default=4, ge=2, le=20)
    seed: int = 42


class TrainResult(BaseModel):
    """What one training run produced."""

    run_id: str
    experiment_id: str
    kind: ModelKind
    model_name: str
    model_version: str
    model_uri: str
    dataset: str
    features: list[str]
    metrics: dict[str, float]
    train_rows: int
    test_rows: int
    train_start: UtcDatetime
    train_end: UtcDatetime
    test_start: UtcDatetime
    test_end: UtcDatetime


def _estimator_class(kind: str) -> type[Any]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    classes: dict[str, type[Any]] = {
        "logistic_regression": LogisticRegression,
        "random_forest": RandomForestClassifier,
        "gradient_boosting": GradientBoostingClassifier,
    }
    if kind not in classes:
        raise InvalidInputError(
            f"Unknown model kind '{kind}': use one of {', '.join(MODEL_KINDS)}.", {"kind": kind}
        )
    return classes[kind]


def check_hyperparameters(config: TrainConfig) -> None:
    """Refuse hyperparameter names the estimator does not have (values are checked at fit)."""
    known = set(_estimator_class(config.kind)().get_params())
    unknown = sorted(set(config.hyperparameters) - known)
    if unknown:
        raise InvalidInputError(
            f"Unknown hyperparameters for {config.kind}: {', '.join(unknown)}.",
            {"kind": config.kind, "unknown": unknown},
        )


def load_model_configs(settings: Settings) -> dict[str, TrainConfig]:
    """The named model configurations of `config/models.yaml`."""
    path = settings.config_dir / MODELS_FILE
    if not path.exists():
        raise ConfigError(f"Model configuration file {path} does not exist.", {"file": str(path)})
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}", {"file": str(path)}) from exc
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            f"{path}: expected a non-empty mapping under 'models'.",
            {"file": str(path), "field": "models"},
        )
    configs: dict[str, TrainConfig] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{path}: models.{name} must be a mapping.",
                {"file": str(path), "field": f"models.{name}"},
            )
        try:
            config = TrainConfig.model_validate(entry)
        except ValidationError as exc:
            within = ("models", name)
            raise ConfigError(
                f"{path}: {problems(exc, within, first=True)}",
                {
                    "file": str(path),
                    "field": field_of(exc.errors()[0], within),
                    "errors": exc.errors(include_url=False),
                },
            ) from exc
        try:
            check_hyperparameters(config)
        except InvalidInputError as exc:
            raise ConfigError(
                f"{path}: models.{name}.hyperparameters: {exc.message}",
                {"file": str(path), "field": f"models.{name}.hyperparameters", **exc.details},
            ) from exc
        configs[str(name)] = config
    return configs


def get_model_config(
    settings: Settings, name: str, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """A named configuration, with hyperparameter overrides merged in."""
    configs = load_model_configs(settings)
    if name not in configs:
        raise NotFoundError(
            f"Unknown model configuration '{name}': known are {', '.join(sorted(configs))}.",
            {"model": name, "known": sorted(configs)},
        )
    config = configs[name]
    if overrides:
        config = config.model_copy(
            update={"hyperparameters": {**config.hyperparameters, **overrides}}
        )
        check_hyperparameters(config)
    return config


class LoggedRun(BaseModel):
    """A finished training run in MLflow whose model is logged but not yet registered
    (`fit_and_log_run`; `register_run` makes it a model version)."""

    run_id: str
    experiment_id: str
    logged_model_uri: str
    dataset: DatasetInfo
    features: list[str]
    metrics: dict[str, float]
    train_rows: int
    test_rows: int
    span: dict[str, UtcDatetime]
    """train_start, train_end, test_start, test_end."""


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in (*KEY_COLUMNS, LABEL)]


def prepare_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with every feature and the label present (drops warm-up windows), time-sorted."""
    missing = [c for c in (*KEY_COLUMNS, LABEL) if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"The dataset lacks the columns {', '.join(missing)} (was it built with the label?).",
            {"missing": missing},
        )
    columns = feature_columns(frame)
    if not columns:
        raise InvalidInputError("The dataset has no feature columns.")
    clean = frame.dropna(subset=[*columns, LABEL]).copy()
    clean["event_timestamp"] = pd.to_datetime(clean["event_timestamp"], utc=True)
    clean[LABEL] = clean[LABEL].astype(int)
    clean[columns] = clean[columns].astype(float)
    return clean.sort_values(["event_timestamp", "ticker"], kind="stable").reset_index(drop=True)


def time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by time: every row before the cut date trains, the rest tests.

    Rows with missing features or label are dropped first. The cut falls on a date boundary,
    so one date is never on both sides; about `test_fraction` of the dates go to the test set.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInputError(
            f"test_fraction must be between 0 and 1, got {test_fraction}.",
            {"test_fraction": test_fraction},
        )
    clean = prepare_frame(frame)
    dates = np.sort(clean["event_timestamp"].unique())
    if len(dates) < 2:
        raise InvalidInputError(
            f"Need at least 2 distinct dates with complete features to split, got {len(dates)}."
        )
    n_test = min(max(1, round(len(dates) * test_fraction)), len(dates) - 1)
    cut = dates[len(dates) - n_test]
    before = clean["event_timestamp"] < cut
    return clean[before].reset_index(drop=True), clean[~before].reset_index(drop=True)


def prepare_dataset(settings: Settings, config: TrainConfig, author: str) -> DatasetInfo:
    """The configured dataset, or a new one from the feature service over all tickers."""
    if config.dataset:
        info, _ = _get_dataset(settings, config.dataset)
        return info
    return _new_dataset(settings, config.kind, config.feature_service, author)


def prepare_datasets(
    settings: Settings, configs: dict[str, TrainConfig], author: str
) -> dict[str, DatasetInfo]:
    """The dataset of each named configuration: the one it names, else one new dataset per
    feature service, built once and shared by every configuration of that service (so
    they are trained and tested on the same rows)."""
    built: dict[str, DatasetInfo] = {}
    chosen: dict[str, DatasetInfo] = {}
    for name, config in configs.items():
        if config.dataset:
            chosen[name] = prepare_dataset(settings, config, author)
            continue
        service = config.feature_service
        if service not in built:
            built[service] = _new_dataset(settings, service, service, author)
        chosen[name] = built[service]
    return chosen


def _new_dataset(settings: Settings, label: str, service: str, author: str) -> DatasetInfo:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"train-{label.replace('_', '-')}-{stamp}-{uuid.uuid4().hex[:6]}"
    return _create_dataset(settings, DatasetRequest(name=name, feature_service=service), author)


def build_pipeline(config: TrainConfig) -> Pipeline:
    """StandardScaler + model for logistic regression; the model alone for trees.

    Every kind is a Pipeline whose last step is named "model", so callers (e.g. SHAP) can
    reach the estimator uniformly with `pipeline.named_steps["model"]`.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    check_hyperparameters(config)
    cls = _estimator_class(config.kind)
    params = dict(config.hyperparameters)
    if "random_state" in cls().get_params():
        params.setdefault("random_state", config.seed)
    estimator = cls(**params)
    if config.kind == "logistic_regression":
        return Pipeline([("scaler", StandardScaler()), ("model", estimator)])
    return Pipeline([("model", estimator)])


def _cv_folds(train: pd.DataFrame, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """TimeSeriesSplit over the distinct dates, so a date never straddles a fold boundary."""
    from sklearn.model_selection import TimeSeriesSplit

    dates = np.sort(train["event_timestamp"].unique())
    if len(dates) <= n_splits:
        return []
    folds = []
    for fit_idx, val_idx in TimeSeriesSplit(n_splits=n_splits).split(dates):
        fit_mask = train["event_timestamp"].isin(dates[fit_idx]).to_numpy()
        val_mask = train["event_timestamp"].isin(dates[val_idx]).to_numpy()
        folds.append((np.flatnonzero(fit_mask), np.flatnonzero(val_mask)))
    return folds


def _git_commit(settings: Settings) -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=settings.config_dir.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _history_steps(n: int) -> list[int]:
    """At most MAX_HISTORY_POINTS indices spread over range(n), always with the last one."""
    if n <= MAX_HISTORY_POINTS:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, MAX_HISTORY_POINTS)})


def train_model(
    settings: Settings,
    config: TrainConfig,
    author: str,
    dataset: DatasetInfo | None = None,
    flow_run_id: str | None = None,
    config_name: str | None = None,
) -> TrainResult:
    """Fit, evaluate, log and register one model (`fit_and_log_run`, then `register_run`)."""
    logged = fit_and_log_run(settings, config, author, dataset, flow_run_id, config_name)
    return register_run(settings, config, logged, author)


def fit_and_log_run(
    settings: Settings,
    config: TrainConfig,
    author: str,
    dataset: DatasetInfo | None = None,
    flow_run_id: str | None = None,
    config_name: str | None = None,
) -> LoggedRun:
    """Fit and evaluate one model and log the run and the model to MLflow; the MLflow run
    ends FAILED on any error. Registering the model is `register_run`'s, so that trainings
    run side by side (`train-many`) register their versions one at a time, in order.

    The run is tagged with the Prefect flow run that trained it (`FLOW_RUN_TAG`), the
    configuration's name (`CONFIG_TAG`) and, once registered, its result (`RESULT_TAG`): a
    caller that submitted the training to a work pool finds the result there
    (`result_of_flow_run`)."""
    import mlflow
    from mlflow.models import infer_signature

    pipeline = build_pipeline(config)  # unknown kinds/hyperparameter names: before any run
    info = dataset or prepare_dataset(settings, config, author)
    _, path = _get_dataset(settings, info.name)
    train, test = time_split(pd.read_parquet(path), config.test_fraction)
    columns = feature_columns(train)
    x_train, y_train = train[columns], train[LABEL].to_numpy()
    x_test, y_test = test[columns], test[LABEL].to_numpy()
    if len(np.unique(y_train)) < 2:
        raise InvalidInputError(f"The training part of '{info.name}' has a single class.")

    configure_mlflow(settings)
    experiment_id = experiment_id_for(settings, config.experiment)
    span = {
        "train_start": train["event_timestamp"].min().to_pydatetime(),
        "train_end": train["event_timestamp"].max().to_pydatetime(),
        "test_start": test["event_timestamp"].min().to_pydatetime(),
        "test_end": test["event_timestamp"].max().to_pydatetime(),
    }
    lineage = {FLOW_RUN_TAG: flow_run_id, CONFIG_TAG: config_name}
    run_id = ""
    try:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"{config.kind}-{info.name}",
            tags={  # mlflow.user: MLflow's user column, the platform's user
                "mlflow.user": author,
                **{tag: value for tag, value in lineage.items() if value},
            },
        ) as run:
            run_id = run.info.run_id
            mlflow.set_tags(
                {
                    "dataset": info.name,
                    "feature_views": json.dumps(info.feature_versions, sort_keys=True),
                    "git_commit": _git_commit(settings),
                    "mlops.author": author,
                    "model_kind": config.kind,
                }
            )
            mlflow.log_params(
                {
                    "kind": config.kind,
                    **config.hyperparameters,
                    "dataset": info.name,
                    "features": ",".join(columns),
                    "test_fraction": config.test_fraction,
                    "n_splits": config.n_splits,
                    "seed": config.seed,
                    "train_rows": len(train),
                    "test_rows": len(test),
                    **{key: value.date().isoformat() for key, value in span.items()},
                }
            )
            _log_cv_history(config, train, columns)
            pipeline.fit(x_train, y_train)
            proba = pipeline.predict_proba(x_test)
            metrics = classification_metrics(y_test, proba[:, 1])
            mlflow.log_metrics(metrics)
            if config.kind == "gradient_boosting":
                _log_staged_log_loss(pipeline, x_test, y_test)
            model_info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(x_train, pipeline.predict_proba(x_train.head(50))),
                input_example=x_train.head(5),
                pyfunc_predict_fn="predict_proba",
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                # explicit: inferring them costs ~10 s per model and picks up test tooling
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
            )
    except MlopsError:
        raise
    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
        raise InvalidInputError(
            f"Training {config.kind} failed (MLflow run {run_id or 'not started'}): {exc}",
            {"run_id": run_id, "kind": config.kind, "dataset": info.name},
        ) from exc
    return LoggedRun(
        run_id=run_id,
        experiment_id=experiment_id,
        logged_model_uri=model_info.model_uri,
        dataset=info,
        features=columns,
        metrics=metrics,
        train_rows=len(train),
        test_rows=len(test),
        span=span,
    )


def register_run(
    settings: Settings, config: TrainConfig, logged: LoggedRun, author: str
) -> TrainResult:
    """Register the logged model of `logged` as a new version of the configuration's
    registered model, describe the version, and tag the run with its result; the run is
    marked FAILED when that fails."""
    import mlflow

    configure_mlflow(settings)
    mlflow_client = mlflow_backend.client(settings)
    try:
        registered = mlflow.register_model(logged.logged_model_uri, config.registered_model)
        version = str(registered.version)
        _describe_version(mlflow_client, config, logged, version, author)
        result = TrainResult(
            run_id=logged.run_id,
            experiment_id=logged.experiment_id,
            kind=config.kind,
            model_name=config.registered_model,
            model_version=version,
            model_uri=f"models:/{config.registered_model}/{version}",
            dataset=logged.dataset.name,
            features=logged.features,
            metrics=logged.metrics,
            train_rows=logged.train_rows,
            test_rows=logged.test_rows,
            **logged.span,
        )
        mlflow_client.set_tag(logged.run_id, RESULT_TAG, result.model_dump_json())
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow_client.set_terminated(logged.run_id, "FAILED")
        raise
    return result


def result_of_flow_run(
    settings: Settings, experiment: str, flow_run_id: str, config_name: str | None = None
) -> TrainResult:
    """What the training of Prefect flow run `flow_run_id` (of configuration `config_name`,
    when the flow trained several) produced, from its MLflow run (404 when no run of
    `experiment` carries that result)."""
    mlflow_client = mlflow_backend.client(settings)
    found = mlflow_client.get_experiment_by_name(experiment)
    wanted = f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"
    if config_name is not None:
        wanted += f" and tags.`{CONFIG_TAG}` = '{config_name}'"
    runs = (
        mlflow_client.search_runs([found.experiment_id], filter_string=wanted)
        if found is not None
        else []
    )
    for run in runs:
        if RESULT_TAG in run.data.tags:
            return TrainResult.model_validate_json(run.data.tags[RESULT_TAG])
    raise NotFoundError(
        f"No MLflow run of experiment '{experiment}' holds the result of flow run {flow_run_id}.",
        {"flow_run_id": flow_run_id},
    )


def _log_cv_history(config: TrainConfig, train: pd.DataFrame, columns: list[str]) -> None:
    """cv_roc_auc and cv_accuracy per time-series fold (step = fold index, from 0)."""
    import mlflow

    for fold, (fit_idx, val_idx) in enumerate(_cv_folds(train, config.n_splits)):
        y_fit = train[LABEL].to_numpy()[fit_idx]
        if len(np.unique(y_fit)) < 2:
            continue
        model = build_pipeline(config)
        model.fit(train[columns].iloc[fit_idx], y_fit)
        proba = model.predict_proba(train[columns].iloc[val_idx])[:, 1]
        scores = classification_metrics(train[LABEL].to_numpy()[val_idx], proba)
        fold_metrics = {"cv_accuracy": scores["accuracy"]}
        if "roc_auc" in scores:
            fold_metrics["cv_roc_auc"] = scores["roc_auc"]
        mlflow.log_metrics(fold_metrics, step=fold)


def _log_staged_log_loss(pipeline: Pipeline, x_test: pd.DataFrame, y_test: np.ndarray) -> None:
    """Test log loss after each boosting stage (step = number of stages), <= 50 points."""
    import mlflow
    from sklearn.metrics import log_loss

    model = pipeline.named_steps["model"]
    transformed = pipeline[:-1].transform(x_test) if len(pipeline) > 1 else x_test
    stages = list(model.staged_predict_proba(transformed))
    for index in _history_steps(len(stages)):
        value = log_loss(y_test, stages[index][:, 1], labels=[0, 1])
        if math.isfinite(value):
            mlflow.log_metric("staged_log_loss", float(value), step=index + 1)


def _describe_version(
    client: Any, config: TrainConfig, logged: LoggedRun, version: str, author: str
) -> None:
    name, info, span = config.registered_model, logged.dataset, logged.span
    client.update_model_version(
        name,
        version,
        description=(
            f"{config.kind} on dataset '{info.name}' (features {', '.join(info.features)}); "
            f"trained {span['train_start'].date()}..{span['train_end'].date()}, "
            f"tested {span['test_start'].date()}..{span['test_end'].date()}."
        ),
    )
    tags = {"model_kind": config.kind, "dataset": info.name, "mlops.author": author}
    for metric in ("accuracy", "roc_auc"):
        if metric in logged.metrics:
            tags[metric] = f"{logged.metrics[metric]:.4f}"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def models_file(settings: Settings) -> Path:
    return settings.config_dir / MODELS_FILE
