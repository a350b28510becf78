"""SHAP explanations: the explainer per model kind, additivity in P(up), rankings, examples,
stability versus a previous version, plots, sampling and the error paths."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops.errors import InvalidInputError
from mlops.evaluation.explain import Explanation, explain, write_plots

FEATURES = ["momentum", "volatility", "rsi_14", "volume_z", "spread"]
"""momentum drives P(up) up, volatility down; the others matter less and less."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ["gradient_boosting", "random_forest", "logistic_regression"]
EXPECTED_EXPLAINER = {
    "gradient_boosting": "tree",
    "random_forest": "tree",
    "logistic_regression": "linear",
}


def _data(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    logit = 3.0 * x.momentum - 2.0 * x.volatility + 0.7 * x.rsi_14 + 0.3 * x.volume_z
    y = (logit + rng.normal(scale=0.8, size=rows) > 0).astype(int)
    frame = x.assign(
        ticker=rng.choice(["AAPL", "MSFT", "NVDA"], size=rows),
        event_timestamp=pd.date_range("2024-01-02", periods=rows, freq="D", tz="UTC"),
    )
    return frame, y


def _pipeline(kind: str, seed: int = 0) -> Pipeline:
    """The shapes build_pipeline produces (smaller ensembles, to keep the tests fast)."""
    if kind == "logistic_regression":
        return Pipeline([("scaler", StandardScaler()), ("model", LogisticRegression())])
    if kind == "random_forest":
        model: Any = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=seed)
    elif kind == "gradient_boosting":
        model = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=seed)
    elif kind == "hist_gradient_boosting":
        model = HistGradientBoostingClassifier(max_iter=30, random_state=seed)
    else:
        model = KNeighborsClassifier(n_neighbors=15)
        return Pipeline([("scaler", StandardScaler()), ("model", model)])
    return Pipeline([("model", model)])


@pytest.fixture(scope="module")
def train() -> tuple[pd.DataFrame, pd.Series]:
    frame, y = _data(600, seed=0)
    return frame[FEATURES], y


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """300 fresh rows with ticker and event_timestamp: all of them are explained."""
    return _data(300, seed=1)[0]


@pytest.fixture(scope="module")
def models(train: tuple[pd.DataFrame, pd.Series]) -> dict[str, Pipeline]:
    x, y = train
    return {kind: _pipeline(kind).fit(x, y) for kind in KINDS}


@pytest.fixture(scope="module")
def explanations(models: dict[str, Pipeline], frame: pd.DataFrame) -> dict[str, Explanation]:
    return {
        kind: explain(model, frame, FEATURES, model_name="direction-model", version="3")
        for kind, model in models.items()
    }


def _proba(model: Pipeline, frame: pd.DataFrame, rows: list[int]) -> np.ndarray:
    return model.predict_proba(frame.iloc[rows][FEATURES])[:, 1]


def _assert_additive(explanation: Explanation, model: Pipeline, frame: pd.DataFrame) -> None:
    """base value + every feature's SHAP value == the model's P(up), row by row."""
    assert explanation.examples
    rows = [example.row for example in explanation.examples]
    expected = _proba(model, frame, rows)
    for example, p_up in zip(explanation.examples, expected, strict=True):
        assert len(example.contributions) == len(FEATURES)  # 5 features: all of them shown
        total = example.base_value + sum(c.shap for c in example.contributions)
        assert example.prediction == pytest.approx(p_up, abs=1e-9)
        assert total == pytest.approx(p_up, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_gets_its_explainer_and_explains_p_up_additively(
    kind: str, models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    explanation = explain(models[kind], frame, FEATURES, model_name="m", version="1", n_examples=12)

    assert explanation.explainer == EXPECTED_EXPLAINER[kind]
    assert len(explanation.examples) == 12
    _assert_additive(explanation, models[kind], frame)
    assert 0.0 < explanation.base_value < 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_the_dominant_features_rank_first_with_their_direction(
    kind: str, explanations: dict[str, Explanation]
) -> None:
    importance = explanations[kind].importance

    assert [effect.feature for effect in importance[:2]] == ["momentum", "volatility"]
    assert importance[0].direction == "positive"
    assert importance[0].correlation is not None and importance[0].correlation > 0.5
    assert importance[1].direction == "negative"
    assert importance[1].correlation is not None and importance[1].correlation < -0.5


@pytest.mark.parametrize("kind", KINDS)
def test_importance_is_sorted_and_shares_sum_to_one(
    kind: str, explanations: dict[str, Explanation]
) -> None:
    importance = explanations[kind].importance
    values = [effect.mean_abs_shap for effect in importance]

    assert sorted(effect.feature for effect in importance) == sorted(FEATURES)
    assert values == sorted(values, reverse=True)
    assert sum(effect.share for effect in importance) == pytest.approx(1.0)
    assert all(effect.mean_abs_shap >= 0 for effect in importance)


def test_examples_are_the_highest_median_and_lowest_prediction(
    models: dict[str, Pipeline], explanations: dict[str, Explanation], frame: pd.DataFrame
) -> None:
    explanation = explanations["random_forest"]
    all_p_up = models["random_forest"].predict_proba(frame[FEATURES])[:, 1]
    highest, median, lowest = explanation.examples

    assert explanation.rows == len(frame)
    assert highest.prediction == pytest.approx(all_p_up.max())
    assert lowest.prediction == pytest.approx(all_p_up.min())
    assert (all_p_up > median.prediction).sum() <= len(frame) // 2
    assert (all_p_up >= median.prediction).sum() >= len(frame) // 2
    for example in explanation.examples:
        sizes = [abs(c.shap) for c in example.contributions]
        assert sizes == sorted(sizes, reverse=True)
        assert example.ticker == frame["ticker"].iloc[example.row]
        assert example.event_timestamp == frame["event_timestamp"].iloc[example.row]
        row_values = frame.iloc[example.row]
        assert all(c.value == pytest.approx(row_values[c.feature]) for c in example.contributions)


def test_feature_values_of_a_scaled_model_are_in_original_units(
    explanations: dict[str, Explanation], frame: pd.DataFrame
) -> None:
    example = explanations["logistic_regression"].examples[0]
    raw = frame.iloc[example.row]

    assert {c.feature: c.value for c in example.contributions} == pytest.approx(
        {name: raw[name] for name in FEATURES}
    )


def test_example_count_follows_n_examples_and_contributions_stop_at_five(
    models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    wide = frame.assign(extra=np.linspace(-1, 1, len(frame)))
    features = [*FEATURES, "extra"]
    model = _pipeline("logistic_regression").fit(wide[features], wide["momentum"] > 0)

    one = explain(model, wide, features, model_name="m", version="1", n_examples=1)
    none = explain(
        models["random_forest"], frame, FEATURES, model_name="m", version="1", n_examples=0
    )

    assert len(one.examples) == 1
    assert len(one.examples[0].contributions) == 5  # top 5 of 6 features
    assert none.examples == []


def test_stability_versus_a_refit_of_the_same_kind(
    models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    x, y = _data(600, seed=7)
    refit = _pipeline("gradient_boosting", seed=7).fit(x[FEATURES], y)

    explanation = explain(
        models["gradient_boosting"],
        frame,
        FEATURES,
        model_name="direction-model",
        version="3",
        previous=("2", refit),
    )

    stability = explanation.stability
    assert stability is not None
    assert stability.previous_version == "2"
    assert stability.rank_correlation is not None and stability.rank_correlation > 0.8
    assert stability.top_overlap == 1.0
    assert "The ranking is stable versus v2" in explanation.summary_markdown
    assert "same top 3" in explanation.summary_markdown


def test_no_previous_version_means_no_stability(explanations: dict[str, Explanation]) -> None:
    explanation = explanations["logistic_regression"]

    assert explanation.stability is None
    assert "No previous version to compare." in explanation.summary_markdown


def test_stability_uses_shared_features_and_needs_two_of_them(
    models: dict[str, Pipeline], frame: pd.DataFrame, train: tuple[pd.DataFrame, pd.Series]
) -> None:
    x, y = train
    fewer = ["momentum", "volatility", "rsi_14"]
    three = _pipeline("logistic_regression").fit(x[fewer], y)
    one = _pipeline("logistic_regression").fit(x[["momentum"]], y)
    model = models["logistic_regression"]

    shared = explain(model, frame, FEATURES, model_name="m", version="3", previous=("2", three))
    alone = explain(model, frame, FEATURES, model_name="m", version="3", previous=("2", one))

    assert shared.stability is not None
    assert shared.stability.top_overlap == 1.0
    assert shared.stability.rank_correlation == pytest.approx(1.0)
    assert "3 features both versions use" in shared.summary_markdown
    assert alone.stability is None
    assert "fewer than 2 features in common" in alone.summary_markdown


def test_an_unexplainable_previous_version_keeps_the_explanation(
    models: dict[str, Pipeline], frame: pd.DataFrame, train: tuple[pd.DataFrame, pd.Series]
) -> None:
    from sklearn.linear_model import LinearRegression

    x, y = train
    regressor = LinearRegression().fit(x[FEATURES], y)  # no predict_proba
    model = models["logistic_regression"]

    explanation = explain(
        model, frame, FEATURES, model_name="m", version="3", previous=("2", regressor)
    )

    assert explanation.importance and explanation.stability is None
    assert "Not compared with v2:" in explanation.summary_markdown


def test_stability_across_kinds_reports_a_change(
    models: dict[str, Pipeline], frame: pd.DataFrame, train: tuple[pd.DataFrame, pd.Series]
) -> None:
    x, _ = train
    flipped = _pipeline("random_forest").fit(x[FEATURES], (x["spread"] > 0).astype(int))

    explanation = explain(
        models["random_forest"],
        frame,
        FEATURES,
        model_name="m",
        version="3",
        previous=("2", flipped),
    )

    assert explanation.stability is not None
    assert explanation.stability.top_overlap < 1.0
    assert "The ranking changed versus v2" in explanation.summary_markdown


def test_plots_are_png_files_in_out_dir(
    models: dict[str, Pipeline], frame: pd.DataFrame, tmp_path: Path
) -> None:
    explanation = explain(
        models["logistic_regression"],
        frame,
        FEATURES,
        model_name="m",
        version="1",
        out_dir=tmp_path,
    )

    assert explanation.plots == ["shap_bar.png", "shap_beeswarm.png"]
    for name in explanation.plots:
        content = (tmp_path / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE)
        assert len(content) > 5_000


def test_without_out_dir_the_plots_are_drawn_afterwards(
    explanations: dict[str, Explanation], tmp_path: Path
) -> None:
    explanation = explanations["random_forest"]
    assert not list(tmp_path.iterdir())
    assert write_plots(explanation, tmp_path) == explanation.plots
    for name in explanation.plots:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    copy = Explanation.model_validate(explanation.model_dump())  # e.g. read back from JSON
    with pytest.raises(ValueError, match="no SHAP values to draw"):
        write_plots(copy, tmp_path)


def test_concurrent_explanations_each_write_their_plots(
    models: dict[str, Pipeline], frame: pd.DataFrame, tmp_path: Path
) -> None:
    errors: list[BaseException] = []

    def run(kind: str) -> None:
        try:
            explain(
                models[kind], frame, FEATURES, model_name=kind, version="1", out_dir=tmp_path / kind
            )
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(kind,)) for kind in KINDS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for kind in KINDS:
        for name in ("shap_bar.png", "shap_beeswarm.png"):
            assert (tmp_path / kind / name).read_bytes().startswith(PNG_SIGNATURE)


def test_sampling_is_capped_and_deterministic(
    models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    model = models["random_forest"]

    def run(seed: int) -> Explanation:
        return explain(model, frame, FEATURES, model_name="m", version="1", max_rows=50, seed=seed)

    first, again, other = run(0), run(0), run(1)

    assert first.rows == 50
    assert first.model_dump(exclude={"seconds"}) == again.model_dump(exclude={"seconds"})
    assert [e.row for e in first.examples] != [e.row for e in other.examples]
    assert all(0 <= e.row < len(frame) for e in first.examples)


def test_a_frame_smaller_than_max_rows_is_explained_whole(
    models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    explanation = explain(
        models["random_forest"], frame.head(20), FEATURES, model_name="m", version="1"
    )

    assert explanation.rows == 20


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.iloc[0:0], "no rows"),
        (lambda f: f.drop(columns=["rsi_14"]), "missing from the frame: rsi_14"),
    ],
)
def test_bad_frames_are_refused(
    change: Any, message: str, models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        explain(models["random_forest"], change(frame), FEATURES, model_name="m", version="1")


@pytest.mark.parametrize("max_rows", [0, 501])
def test_max_rows_outside_1_to_500_is_refused(
    max_rows: int, models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInputError, match="between 1 and 500"):
        explain(
            models["random_forest"], frame, FEATURES, model_name="m", version="1", max_rows=max_rows
        )


def test_features_other_than_the_trained_ones_are_refused(
    models: dict[str, Pipeline], frame: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInputError, match="trained on features"):
        explain(models["random_forest"], frame, FEATURES[::-1], model_name="m", version="1")


def test_summary_names_the_top_driver_and_its_direction(
    explanations: dict[str, Explanation],
) -> None:
    summary = explanations["gradient_boosting"].summary_markdown

    assert summary.startswith("### direction-model v3")
    assert "1. **momentum**" in summary
    assert "higher momentum raises P(up)" in summary
    assert "higher volatility lowers P(up)" in summary
    assert "tree explainer on 300 rows" in summary
    assert len(summary.splitlines()) <= 15


def test_other_estimators_use_the_model_agnostic_explainer_additively(
    train: tuple[pd.DataFrame, pd.Series], frame: pd.DataFrame
) -> None:
    x, y = train
    knn = _pipeline("knn").fit(x, y)

    explanation = explain(
        knn, frame, FEATURES, model_name="m", version="1", max_rows=40, n_examples=40
    )

    assert explanation.explainer == "permutation"
    assert explanation.rows == 40
    _assert_additive(explanation, knn, frame)
    assert explanation.importance[0].feature in {"momentum", "volatility"}


def test_hist_gradient_boosting_is_a_tree_explained_in_p_up(
    train: tuple[pd.DataFrame, pd.Series], frame: pd.DataFrame
) -> None:
    x, y = train
    model = _pipeline("hist_gradient_boosting").fit(x, y)

    explanation = explain(model, frame, FEATURES, model_name="m", version="1", n_examples=10)

    assert explanation.explainer == "tree"
    _assert_additive(explanation, model, frame)


def test_a_pyfunc_model_is_unwrapped(models: dict[str, Pipeline], frame: pd.DataFrame) -> None:
    class PyFunc:  # the one method of mlflow's PyFuncModel that explain uses
        def get_raw_model(self) -> Pipeline:
            return models["logistic_regression"]

    explanation = explain(PyFunc(), frame, FEATURES, model_name="m", version="1")

    assert explanation.explainer == "linear"


def test_tree_values_that_do_not_add_up_fall_back_to_the_model_agnostic_explainer(
    models: dict[str, Pipeline], frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlops.evaluation.explain as module

    def wrong(
        estimator: Any, inputs: np.ndarray, background: np.ndarray
    ) -> tuple[np.ndarray, float]:
        return np.zeros(inputs.shape), 0.5

    monkeypatch.setattr(module, "_tree_values", wrong)
    model = models["random_forest"]

    explanation = explain(model, frame, FEATURES, model_name="m", version="1", max_rows=20)

    assert explanation.explainer == "permutation"
    _assert_additive(explanation, model, frame)
