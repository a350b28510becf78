"""SHAP explanations of a direction model: which features drive P(up), in which direction, a
few example rows, the stability of the ranking versus the previous version, and plots.

Every explainer reports SHAP values of P(up) itself, so tree, linear and model-agnostic
explanations are comparable: for each row, `base_value + sum(shap over all features)` equals
the model's P(up).

- Tree models (random forest, extra trees, decision tree: exact probabilities; gradient
  boosting: interventional SHAP of the probability with a background sample) use
  `shap.TreeExplainer`. Histogram gradient boosting is explained in log-odds and converted.
- Logistic regression uses `shap.LinearExplainer` on the pipeline's transformed inputs (the
  scaler output); its log-odds values are converted to P(up) (see `_log_odds_to_probability`).
  Feature values are always reported in the original units.
- Anything else uses shap's model-agnostic `PermutationExplainer` on `predict_proba`. So does
  a tree or linear model whose SHAP values turn out not to add up to its P(up).

shap, matplotlib and scikit-learn are imported inside the functions: importing this module
stays cheap (importing shap alone takes seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, PrivateAttr

from mlops.errors import InvalidInputError
from mlops.fields import UtcDatetime

log = logging.getLogger("mlops.evaluation.explain")

ExplainerKind = Literal["tree", "linear", "permutation"]
Direction = Literal["positive", "negative", "mixed"]

MAX_ROWS = 500
"""At most this many rows are explained (a seeded sample of the frame)."""
BACKGROUND_ROWS = 100
"""Background sample of the interventional tree explainer (the linear one uses every row)."""
PERMUTATION_BACKGROUND_ROWS = 50
"""Smaller for the model-agnostic explainer: each row costs rounds x background predictions."""
PERMUTATION_ROUNDS = 5
"""Antithetic permutations per row of the model-agnostic explainer."""
ADDITIVITY_TOLERANCE = 1e-4
"""Largest gap between base value + SHAP values and P(up) accepted from a tree/linear explainer."""
DIRECTION_THRESHOLD = 0.3
"""|correlation| of a feature's values with its SHAP values that makes its direction clear."""
STABLE_SPEARMAN = 0.8
"""The ranking is "stable" from this Spearman correlation on (and at least 2 of the top 3)."""
TOP_CONTRIBUTIONS = 5
TOP_DRIVERS = 3
PLOT_DPI = 100
PLOT_FILES = ("shap_bar.png", "shap_beeswarm.png")

_PLOT_LOCK = threading.Lock()
"""Plotting is serialised: evaluation runs explain models in concurrent threads."""
_PERMUTATION_LOCK = threading.Lock()
"""shap's PermutationExplainer seeds and draws from numpy's global RNG: one at a time."""


class FeatureEffect(BaseModel):
    """How much one feature moves P(up), and which way."""

    feature: str
    mean_abs_shap: float = Field(description="Mean |SHAP value| in P(up) units: the importance.")
    share: float = Field(description="mean_abs_shap / the sum over all features.")
    direction: Direction = Field(
        description="From the correlation of the feature's values with its SHAP values: "
        f">= {DIRECTION_THRESHOLD} positive, <= -{DIRECTION_THRESHOLD} negative, else mixed."
    )
    correlation: float | None = Field(
        description="None when the feature or its SHAP values are constant."
    )


class Contribution(BaseModel):
    """One feature's part in one row's prediction."""

    feature: str
    value: float = Field(description="The feature's value, in its original units.")
    shap: float = Field(description="Its SHAP value: how much it moves P(up) from the base.")


class RowExplanation(BaseModel):
    """One explained row: its P(up) and the features that moved it most."""

    row: int = Field(description="Position (0-based) of the row in the frame passed in.")
    ticker: str | None
    event_timestamp: UtcDatetime | None
    prediction: float = Field(description="The model's P(up) for the row.")
    base_value: float
    contributions: list[Contribution] = Field(
        description=f"The top {TOP_CONTRIBUTIONS} by |SHAP value|, largest first."
    )


class Stability(BaseModel):
    """How much the importance ranking moved versus the previous version."""

    previous_version: str
    rank_correlation: float | None = Field(
        description="Spearman correlation of the two importance vectors (shared features); "
        "None when one of them is constant."
    )
    top_overlap: float = Field(
        description="Share of the top 3 (or of all, when fewer) features that both rank top."
    )


class Explanation(BaseModel):
    """A SHAP explanation of one model version on a sample of rows."""

    model_name: str
    version: str
    explainer: ExplainerKind
    rows: int = Field(description="Rows explained (sampled from the frame).")
    base_value: float = Field(description="Expected P(up) the SHAP values start from.")
    importance: list[FeatureEffect] = Field(description="Sorted by mean_abs_shap, largest first.")
    examples: list[RowExplanation] = Field(
        description="Rows with the highest, median and lowest P(up), in that order."
    )
    stability: Stability | None
    summary_markdown: str
    plots: list[str] = Field(description="Plot file names (written to out_dir, or later).")
    seconds: float
    _drawing: tuple[_Shap, pd.DataFrame, str] | None = PrivateAttr(default=None)
    """What `write_plots` draws from: the SHAP values, the rows, the title."""


def write_plots(explanation: Explanation, out_dir: Path) -> list[str]:
    """Draw the bar and beeswarm plots of an explanation made in this process (PNG files in
    `out_dir`); callers that answer first draw them afterwards."""
    if explanation._drawing is None:
        raise ValueError("this explanation holds no SHAP values to draw (made elsewhere?)")
    values, x, title = explanation._drawing
    return _write_plots(Path(out_dir), values, x, list(x.columns), title)


@dataclass
class _Model:
    """A fitted binary classifier split into what SHAP needs."""

    predictor: Any
    """What predict_proba is called on (the whole pipeline)."""
    estimator: Any
    """The last step."""
    preprocess: Any | None
    """The steps before it, as a Pipeline, or None."""
    trained_on: list[str] | None
    """The feature names it was fitted with, when known."""


@dataclass
class _Shap:
    kind: ExplainerKind
    values: np.ndarray
    """(rows, features): SHAP values of P(up)."""
    base: np.ndarray
    """(rows,): the base value of each row."""
    predicted: np.ndarray
    """(rows,): P(up)."""


def explain(
    pipeline: Any,
    frame: pd.DataFrame,
    features: list[str],
    *,
    model_name: str,
    version: str,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    n_examples: int = 3,
    previous: tuple[str, Any] | None = None,
    out_dir: Path | None = None,
) -> Explanation:
    """Explain `pipeline`'s P(up) on at most `max_rows` rows of `frame`, sampled with `seed`.

    `pipeline` is a fitted binary classifier (a scikit-learn Pipeline whose last step is the
    model, a bare estimator, or an MLflow pyfunc model wrapping one). `frame` holds the
    `features` columns and optionally `ticker` and `event_timestamp`. `previous` is
    `(version, model)` of the version to compare the importance ranking with, on the same rows.
    With `out_dir`, a bar and a beeswarm plot are written there.
    """
    started = time.perf_counter()
    features = list(features)
    _check_arguments(frame, features, max_rows, n_examples)
    model = _unwrap(pipeline, "The model")
    if model.trained_on is not None and model.trained_on != features:
        raise InvalidInputError(
            f"The model was trained on features {model.trained_on}, not {features}.",
            {"trained_on": model.trained_on, "features": features},
        )
    rng = np.random.default_rng(seed)
    positions = _sample_positions(len(frame), max_rows, rng)
    sample = frame.iloc[positions]
    x = sample[features]
    background = _sample_positions(len(positions), BACKGROUND_ROWS, rng)
    current = _shap_values(model, x, background, seed)

    effects = _importance(current.values, x.to_numpy(dtype=float), features)
    examples = _examples(sample, positions, features, current, n_examples)
    stability, stability_note = None, None
    if previous is not None:
        try:
            stability, stability_note = _compare(
                previous, sample, features, effects, background, seed
            )
        except Exception as exc:  # an unexplainable previous version costs only the stability
            reason = exc.message if isinstance(exc, InvalidInputError) else repr(exc)
            stability_note = f"Not compared with {_v(previous[0])}: {reason}"

    title = f"{model_name} {_v(version)}"
    plots = list(PLOT_FILES)
    if out_dir is not None:
        plots = _write_plots(Path(out_dir), current, x, features, title)
    base_value = float(np.mean(current.base))
    summary = _summary(
        model_name,
        version,
        current.kind,
        len(positions),
        base_value,
        effects,
        stability,
        stability_note or ("No previous version to compare." if previous is None else None),
    )
    explanation = Explanation(
        model_name=model_name,
        version=version,
        explainer=current.kind,
        rows=len(positions),
        base_value=base_value,
        importance=effects,
        examples=examples,
        stability=stability,
        summary_markdown=summary,
        plots=plots,
        seconds=round(time.perf_counter() - started, 3),
    )
    explanation._drawing = (current, x, title)
    return explanation


# --- input -----------------------------------------------------------------------------------


def _check_arguments(
    frame: pd.DataFrame, features: list[str], max_rows: int, n_examples: int
) -> None:
    if not 1 <= max_rows <= MAX_ROWS:
        raise InvalidInputError(
            f"max_rows must be between 1 and {MAX_ROWS}, got {max_rows}.", {"max_rows": max_rows}
        )
    if n_examples < 0:
        raise InvalidInputError(
            f"n_examples must be 0 or more, got {n_examples}.", {"n_examples": n_examples}
        )
    if not features:
        raise InvalidInputError("No features to explain: the feature list is empty.")
    if len(set(features)) != len(features):
        duplicates = sorted({name for name in features if features.count(name) > 1})
        raise InvalidInputError(
            f"Duplicate features: {', '.join(duplicates)}.", {"duplicates": duplicates}
        )
    if frame.empty:
        raise InvalidInputError("The frame to explain has no rows.")
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"Features missing from the frame: {', '.join(missing)}.", {"missing": missing}
        )


def _unwrap(model: Any, label: str) -> _Model:
    """The pipeline (or estimator) behind `model`; an MLflow pyfunc model is unwrapped."""
    if hasattr(model, "get_raw_model"):
        model = model.get_raw_model()
    if not hasattr(model, "predict_proba"):
        raise InvalidInputError(f"{label} ({type(model).__name__}) has no predict_proba.")
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise InvalidInputError(f"{label} ({type(model).__name__}) is not fitted.")
    if len(classes) != 2:
        raise InvalidInputError(
            f"{label} must be a binary classifier predicting P(up); it has {len(classes)} classes."
        )
    steps = getattr(model, "steps", None)
    estimator = steps[-1][1] if steps else model
    preprocess = model[:-1] if steps and len(steps) > 1 else None
    names = getattr(model, "feature_names_in_", None)
    return _Model(
        predictor=model,
        estimator=estimator,
        preprocess=preprocess,
        trained_on=[str(name) for name in names] if names is not None else None,
    )


def _sample_positions(total: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most `limit` of `range(total)`, drawn with `rng`, in ascending order."""
    if total <= limit:
        return np.arange(total)
    return np.sort(rng.choice(total, size=limit, replace=False))


# --- SHAP values -----------------------------------------------------------------------------


def _explainer_kind(estimator: Any) -> ExplainerKind:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    trees = (
        RandomForestClassifier,
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        DecisionTreeClassifier,  # ExtraTreeClassifier too
    )
    if isinstance(estimator, trees):
        return "tree"
    if isinstance(estimator, LogisticRegression):  # LogisticRegressionCV too
        return "linear"
    return "permutation"


def _shap_values(model: _Model, x: pd.DataFrame, background: np.ndarray, seed: int) -> _Shap:
    """SHAP values of P(up) for the rows of `x`, by the most specific explainer that works."""
    predicted = np.asarray(model.predictor.predict_proba(x), dtype=float)[:, 1]
    kind = _explainer_kind(model.estimator)
    if kind != "permutation":
        inputs = _model_inputs(model, x)
        if inputs is None:
            log.info("The preprocessing changes the number of columns: permutation explainer.")
        else:
            try:
                if kind == "tree":
                    values, base = _tree_values(model.estimator, inputs, background)
                else:  # it only needs the mean of the background: all rows are cheap
                    values, base = _linear_values(model.estimator, inputs)
            except Exception as exc:  # shap refuses this model: the model-agnostic way still works
                log.warning("%s explainer failed (%s): permutation explainer instead", kind, exc)
            else:
                gap = float(np.max(np.abs(base + values.sum(axis=1) - predicted)))
                if gap <= ADDITIVITY_TOLERANCE:
                    return _Shap(kind, values, np.full(len(x), base), predicted)
                log.warning("%s SHAP values miss P(up) by %.2g: permutation explainer", kind, gap)
    values, bases = _permutation_values(model.predictor, x, background, seed)
    return _Shap("permutation", values, bases, predicted)


def _model_inputs(model: _Model, x: pd.DataFrame) -> np.ndarray | None:
    """What the last step sees (e.g. the scaler output); None if its width differs from x."""
    if model.preprocess is None:
        return x.to_numpy(dtype=float)
    inputs = np.asarray(model.preprocess.transform(x), dtype=float)
    return inputs if inputs.ndim == 2 and inputs.shape[1] == x.shape[1] else None


def _tree_values(
    estimator: Any, inputs: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, float]:
    import shap
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

    if isinstance(estimator, HistGradientBoostingClassifier):
        # shap 0.51's interventional probability output is wrong for it: explain log-odds
        explainer = shap.TreeExplainer(estimator)
        raw = np.asarray(explainer.shap_values(inputs, check_additivity=False), dtype=float)
        return _log_odds_to_probability(raw, float(np.ravel(explainer.expected_value)[0]))
    if isinstance(estimator, GradientBoostingClassifier):
        # its trees add up log-odds: SHAP of the probability needs a background sample
        explainer = shap.TreeExplainer(
            estimator,
            data=inputs[background],
            model_output="probability",
            feature_perturbation="interventional",
        )
    else:  # forests and single trees: leaf values are already probabilities
        explainer = shap.TreeExplainer(estimator)
    values = np.asarray(explainer.shap_values(inputs, check_additivity=False), dtype=float)
    expected = np.ravel(np.asarray(explainer.expected_value, dtype=float))
    if values.ndim == 3:  # (rows, features, classes)
        return values[:, :, 1], float(expected[1])
    return values, float(expected[0])


def _linear_values(estimator: Any, inputs: np.ndarray) -> tuple[np.ndarray, float]:
    import shap

    if np.asarray(estimator.coef_).shape[0] != 1:
        raise ValueError("not a binary logistic regression")
    masker = shap.maskers.Independent(inputs, max_samples=len(inputs))
    explainer = shap.LinearExplainer(estimator, masker)
    raw = np.asarray(explainer.shap_values(inputs), dtype=float)
    return _log_odds_to_probability(raw, float(np.ravel(explainer.expected_value)[0]))


def _log_odds_to_probability(raw: np.ndarray, raw_base: float) -> tuple[np.ndarray, float]:
    """SHAP values of log-odds turned into SHAP values of P(up) = sigmoid(log-odds).

    The base becomes sigmoid(raw_base); each row's values are scaled by one positive factor,
    so that they add up to sigmoid(raw_base + their sum) - sigmoid(raw_base). Signs and the
    order within a row are kept; rows far out on the flat part of the sigmoid count less.
    """
    base = _sigmoid(raw_base)
    total = raw.sum(axis=1)
    small = np.abs(total) < 1e-12
    safe_total = np.where(small, 1.0, total)
    scale = np.where(small, base * (1.0 - base), (_sigmoid(raw_base + total) - base) / safe_total)
    return raw * scale[:, None], float(base)


def _sigmoid(x: Any) -> Any:
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=float)))


def _permutation_values(
    predictor: Any, x: pd.DataFrame, background: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Model-agnostic SHAP values of P(up) (exactly additive, sampled over permutations)."""
    import shap

    columns = list(x.columns)
    data = x.to_numpy(dtype=float)

    def probability_up(rows: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(rows, columns=columns)
        return np.asarray(predictor.predict_proba(frame), dtype=float)[:, 1]

    reference = data[background[:PERMUTATION_BACKGROUND_ROWS]]
    masker = shap.maskers.Independent(reference, max_samples=len(reference))
    with _PERMUTATION_LOCK:
        state = np.random.get_state()  # shap reseeds the global RNG: leave it as it was
        try:
            explainer = shap.PermutationExplainer(probability_up, masker, seed=seed)
            result = explainer(
                data, max_evals=PERMUTATION_ROUNDS * (2 * len(columns) + 1), silent=True
            )
        finally:
            np.random.set_state(state)
    values = np.asarray(result.values, dtype=float)
    bases = np.broadcast_to(np.asarray(result.base_values, dtype=float), (len(data),)).copy()
    return values, bases


# --- summaries of the values -----------------------------------------------------------------


def _importance(values: np.ndarray, data: np.ndarray, features: list[str]) -> list[FeatureEffect]:
    """Mean |SHAP| per feature with its share and direction, largest first."""
    mean_abs = np.abs(values).mean(axis=0)
    total = float(mean_abs.sum())
    effects = []
    for j in sorted(range(len(features)), key=lambda j: (-mean_abs[j], j)):
        correlation = _correlation(data[:, j], values[:, j])
        effects.append(
            FeatureEffect(
                feature=features[j],
                mean_abs_shap=float(mean_abs[j]),
                share=float(mean_abs[j]) / total if total > 0 else 0.0,
                direction=_direction(correlation),
                correlation=correlation,
            )
        )
    return effects


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation over the rows where both are finite; None if it is undefined."""
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) < 1e-15:
        return None
    value = float(np.corrcoef(a, b)[0, 1])
    return value if np.isfinite(value) else None


def _direction(correlation: float | None) -> Direction:
    if correlation is None:
        return "mixed"
    if correlation >= DIRECTION_THRESHOLD:
        return "positive"
    if correlation <= -DIRECTION_THRESHOLD:
        return "negative"
    return "mixed"


def _examples(
    sample: pd.DataFrame, positions: np.ndarray, features: list[str], shap: _Shap, count: int
) -> list[RowExplanation]:
    """`count` rows spread evenly over the P(up) ranking: highest, (median,) lowest."""
    rows = len(positions)
    count = min(count, rows)
    if count == 0:
        return []
    ranking = np.argsort(-shap.predicted, kind="stable")
    picks = ranking[np.round(np.linspace(0, rows - 1, count)).astype(int)]
    data = sample[features].to_numpy(dtype=float)
    examples = []
    for i in picks:
        top = sorted(range(len(features)), key=lambda j: (-abs(shap.values[i, j]), j))
        examples.append(
            RowExplanation(
                row=int(positions[i]),
                ticker=_text(sample, "ticker", i),
                event_timestamp=_timestamp(sample, "event_timestamp", i),
                prediction=float(shap.predicted[i]),
                base_value=float(shap.base[i]),
                contributions=[
                    Contribution(
                        feature=features[j], value=float(data[i, j]), shap=float(shap.values[i, j])
                    )
                    for j in top[:TOP_CONTRIBUTIONS]
                ],
            )
        )
    return examples


def _text(sample: pd.DataFrame, column: str, i: int) -> str | None:
    if column not in sample.columns:
        return None
    value = sample[column].iloc[i]
    return None if pd.isna(value) else str(value)


def _timestamp(sample: pd.DataFrame, column: str, i: int) -> datetime | None:
    if column not in sample.columns:
        return None
    value = sample[column].iloc[i]
    if pd.isna(value):
        return None
    stamp: datetime = pd.Timestamp(value).to_pydatetime()
    return stamp


# --- stability -------------------------------------------------------------------------------


def _compare(
    previous: tuple[str, Any],
    sample: pd.DataFrame,
    current_features: list[str],
    effects: list[FeatureEffect],
    background: np.ndarray,
    seed: int,
) -> tuple[Stability | None, str | None]:
    """The previous version's importance on the same rows, compared with the current one.

    Returns the stability, or None and the reason in words when they cannot be compared.
    """
    version, raw = previous
    model = _unwrap(raw, f"The previous version {_v(version)}")
    current = {effect.feature: effect.mean_abs_shap for effect in effects}
    features = model.trained_on or current_features
    missing = [name for name in features if name not in sample.columns]
    if missing:
        return None, (
            f"Not compared with {_v(version)}: its features {', '.join(missing)} "
            "are not in the data."
        )
    shared = [name for name in current_features if name in features]
    if len(shared) < 2:
        return None, f"Not compared with {_v(version)}: fewer than 2 features in common."
    earlier = _shap_values(model, sample[features], background, seed)
    before = dict(zip(features, np.abs(earlier.values).mean(axis=0).tolist(), strict=True))
    now = np.array([current[name] for name in shared])
    then = np.array([before[name] for name in shared])
    top = min(TOP_DRIVERS, len(shared))
    top_now = {shared[j] for j in np.argsort(-now, kind="stable")[:top]}
    top_then = {shared[j] for j in np.argsort(-then, kind="stable")[:top]}
    stability = Stability(
        previous_version=version,
        rank_correlation=_spearman(now, then),
        top_overlap=len(top_now & top_then) / top,
    )
    note = None
    if len(shared) < len(current) or len(shared) < len(features):
        note = f"Compared with {_v(version)} on the {len(shared)} features both versions use."
    return stability, note


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ranks_a = pd.Series(a).rank().to_numpy()
    ranks_b = pd.Series(b).rank().to_numpy()
    return _correlation(ranks_a, ranks_b)


# --- words and pictures ----------------------------------------------------------------------


def _v(version: str) -> str:
    return f"v{version}" if version.isdigit() else version


def _in_words(effect: FeatureEffect) -> str:
    if effect.direction == "positive":
        return f"higher {effect.feature} raises P(up)"
    if effect.direction == "negative":
        return f"higher {effect.feature} lowers P(up)"
    return f"{effect.feature} has no consistent direction"


def _summary(
    model_name: str,
    version: str,
    kind: ExplainerKind,
    rows: int,
    base_value: float,
    effects: list[FeatureEffect],
    stability: Stability | None,
    note: str | None,
) -> str:
    """A short Markdown text, from the numbers only."""
    lines = [f"### {model_name} {_v(version)}", "", "Top drivers of P(up):", ""]
    for rank, effect in enumerate(effects[:TOP_DRIVERS], start=1):
        lines.append(
            f"{rank}. **{effect.feature}**: {effect.share:.0%} of total importance; "
            f"{_in_words(effect)}."
        )
    lines += [
        "",
        f"SHAP values from the {kind} explainer on {rows} rows; "
        f"base value (expected P(up)) {base_value:.3f}.",
    ]
    if stability is not None:
        lines.append(_stability_in_words(stability))
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


def _stability_in_words(stability: Stability) -> str:
    correlation = stability.rank_correlation
    stable = correlation is not None and correlation >= STABLE_SPEARMAN
    stable = stable and stability.top_overlap >= 2 / 3 - 1e-9
    spearman = f"Spearman {correlation:.2f}" if correlation is not None else "Spearman undefined"
    if stability.top_overlap >= 1 - 1e-9:
        overlap = "same top 3"
    else:
        overlap = f"top 3 overlap {stability.top_overlap:.0%}"
    verdict = "is stable" if stable else "changed"
    return f"The ranking {verdict} versus {_v(stability.previous_version)} ({spearman}; {overlap})."


def _write_plots(
    out_dir: Path, shap_values: _Shap, x: pd.DataFrame, features: list[str], title: str
) -> list[str]:
    """shap's bar (mean |SHAP|) and beeswarm plots as PNG files in `out_dir`.

    The figures are drawn on the Agg canvas without pyplot, so no global figure is left
    open and no backend is switched; the lock still serialises shap's plotting code.
    """
    import shap
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    explanation = shap.Explanation(
        values=shap_values.values,
        base_values=shap_values.base,
        data=x.to_numpy(dtype=float),
        feature_names=list(features),
    )
    height = 0.5 * min(len(features), 10) + 1.5
    drawings = {
        "shap_bar.png": lambda ax: shap.plots.bar(explanation, show=False, ax=ax),
        "shap_beeswarm.png": lambda ax: shap.plots.beeswarm(
            explanation, show=False, ax=ax, plot_size=None
        ),
    }
    with _PLOT_LOCK:
        for name in PLOT_FILES:
            figure = Figure(figsize=(8, height))
            FigureCanvasAgg(figure)
            try:
                axes = figure.add_subplot()
                drawings[name](axes)
                axes.set_title(f"{title}: SHAP values of P(up)")
                figure.savefig(out_dir / name, dpi=PLOT_DPI, bbox_inches="tight")
            finally:
                figure.clear()
    return list(PLOT_FILES)
