"""Training: model configuration loading, the time split, pipelines and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.errors import ConfigError, InvalidInputError, NotFoundError
from mlops.lifecycle.training import (
    LABEL,
    TrainConfig,
    build_pipeline,
    classification_metrics,
    get_model_config,
    load_model_configs,
    time_split,
)
from mlops.settings import PROJECT_ROOT, Settings


def _settings(tmp_path: Path, text: str | None) -> Settings:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    if text is not None:
        (config_dir / "models.yaml").write_text(text)
    return Settings(home=tmp_path / "home", config_dir=config_dir)


def _frame(days: int = 20, tickers: tuple[str, ...] = ("AAA", "BBB", "CCC")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {
            "ticker": ticker,
            "event_timestamp": start + timedelta(days=day),
            "ret_1d": rng.normal(),
            "rsi_14": rng.uniform(0, 100),
            LABEL: int(rng.integers(0, 2)),
        }
        for ticker in tickers
        for day in range(days)
    ]
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)  # not time-sorted


def test_shipped_config_has_the_three_kinds_with_bounded_trees() -> None:
    configs = load_model_configs(Settings(config_dir=PROJECT_ROOT / "config"))
    kinds = {config.kind for config in configs.values()}
    assert kinds == {"logistic_regression", "random_forest", "gradient_boosting"}
    forest = configs["random_forest"].hyperparameters
    assert forest["max_depth"] <= 8 and forest["n_estimators"] <= 200
    for config in configs.values():
        assert config.experiment == "direction-model" and config.dataset is None
        assert config.test_fraction == 0.2 and config.n_splits == 4


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.yaml"):
        load_model_configs(_settings(tmp_path, None))


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_model_configs(_settings(tmp_path, "models: [unclosed"))
    assert info.value.details["file"].endswith("models.yaml")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("models: {lr: {kind: svm}}", "models.lr.kind"),
        (
            "models: {lr: {kind: logistic_regression, test_fraction: 1.5}}",
            "models.lr.test_fraction",
        ),
        ("models: {lr: {kind: logistic_regression, surprise: 1}}", "models.lr.surprise"),
        (
            "models: {lr: {kind: random_forest, hyperparameters: {depth: 3}}}",
            "models.lr.hyperparameters",
        ),
        ("models: {lr: 3}", "models.lr"),
        ("other: 1", "models"),
    ],
)
def test_invalid_entries_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_configs(_settings(tmp_path, text))
    assert info.value.details["field"] == field
    assert info.value.details["file"].endswith("models.yaml")
    assert field in info.value.message


def test_unknown_name_and_overrides(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, "models: {gb: {kind: gradient_boosting, hyperparameters: {max_depth: 2}}}"
    )
    with pytest.raises(NotFoundError, match=r"Unknown model configuration 'nope'.*gb"):
        get_model_config(settings, "nope")
    config = get_model_config(settings, "gb", {"n_estimators": 5})
    assert config.hyperparameters == {"max_depth": 2, "n_estimators": 5}
    with pytest.raises(InvalidInputError, match="bogus"):
        get_model_config(settings, "gb", {"bogus": 1})


def test_time_split_is_ordered_by_date_without_overlap() -> None:
    frame = _frame()
    frame.loc[frame.index[:4], "rsi_14"] = np.nan  # warm-up rows
    train, test = time_split(frame, 0.25)
    assert len(train) + len(test) == len(frame) - 4
    assert train["event_timestamp"].max() < test["event_timestamp"].min()
    assert not set(train["event_timestamp"]) & set(test["event_timestamp"])
    assert test["event_timestamp"].nunique() == 5  # 25% of 20 dates
    assert train["event_timestamp"].is_monotonic_increasing
    assert test["event_timestamp"].is_monotonic_increasing
    assert not train.isna().any().any() and not test.isna().any().any()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_time_split_refuses_bad_fractions(fraction: float) -> None:
    with pytest.raises(InvalidInputError):
        time_split(_frame(), fraction)


def test_time_split_keeps_both_sides_non_empty() -> None:
    train, test = time_split(_frame(days=2), 0.01)
    assert train["event_timestamp"].nunique() == 1 and test["event_timestamp"].nunique() == 1
    with pytest.raises(InvalidInputError, match="2 distinct dates"):
        time_split(_frame(days=1), 0.2)
    with pytest.raises(InvalidInputError, match="label"):
        time_split(_frame().drop(columns=[LABEL]), 0.2)


def test_pipelines_and_metrics() -> None:
    scaled = build_pipeline(TrainConfig(kind="logistic_regression"))
    assert list(scaled.named_steps) == ["scaler", "model"]
    forest = build_pipeline(TrainConfig(kind="random_forest", seed=3))
    assert list(forest.named_steps) == ["model"]
    assert forest.named_steps["model"].random_state == 3
    with pytest.raises(InvalidInputError, match="bogus"):
        build_pipeline(TrainConfig(kind="random_forest", hyperparameters={"bogus": 1}))
    metrics = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.6, 0.4]))
    assert metrics["accuracy"] == 1.0 and metrics["roc_auc"] == 1.0
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier"}
    single = classification_metrics(np.array([1, 1]), np.array([0.7, 0.9]))
    assert "roc_auc" not in single
