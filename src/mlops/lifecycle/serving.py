"""Online predictions: the model behind an alias, cached per process and swapped when the
alias moves, scored on the latest online features of the requested tickers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mlops.errors import InvalidInputError, ModelError, NotFoundError
from mlops.lifecycle import alias_moves, gates, registry
from mlops.lifecycle.registry import PRODUCTION_ALIAS, STAGING_ALIAS
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

MAX_TICKERS = 500


@dataclass(frozen=True)
class _Served:
    """The version an alias pointed to when it was last read from MLflow, and its model."""

    version: str
    model: PyFuncModel
    moves: int
    """The platform's count of alias moves of the model just before that read."""
    read_at: float
    """`time.monotonic()` just before that read."""


_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, str], _Served] = {}


class PredictRequest(BaseModel):
    tickers: list[str] = Field(min_length=1, max_length=MAX_TICKERS)
    stage: Literal["production", "staging"] = "production"


class Prediction(BaseModel):
    ticker: str
    probability_up: float
    direction: Literal["up", "down"]


class PredictResponse(BaseModel):
    model: str
    version: str
    stage: str
    predictions: list[Prediction]
    features: dict[str, list[float]]
    seconds: float


def model_for(settings: Settings, name: str, alias: str) -> tuple[str, PyFuncModel]:
    """(version, model) behind the alias, asking MLflow only when the alias may have moved.

    Each call reads the platform's count of alias moves of `name` (`alias_moves.py`, one
    row of the platform's database). Every move the platform makes, in any process (the
    deploy flow, the CLI, a rollback), bumps it, so the next call asks MLflow again. An
    alias moved outside the platform (the MLflow UI, a script) does not bump it: MLflow is
    also asked again once the version read is `settings.alias_recheck_s` old, so such a
    move is served within that time. The model is loaded again only when the version
    changed.
    """
    moves = alias_moves.moves(settings, name)
    key = (settings.tracking_uri, name, alias)
    served = _CACHE.get(key)
    if served is None or not _current(served, moves, settings.alias_recheck_s):
        with _LOCK:  # one read and load at a time: concurrent first calls share it
            served = _CACHE.get(key)
            if served is None or not _current(served, moves, settings.alias_recheck_s):
                served = _read_alias(settings, name, alias, moves, served)
                _CACHE[key] = served
    return served.version, served.model


def _current(served: _Served, moves: int, recheck_s: float) -> bool:
    return served.moves == moves and time.monotonic() - served.read_at < recheck_s


def _read_alias(
    settings: Settings, name: str, alias: str, moves: int, served: _Served | None
) -> _Served:
    """The alias's version from MLflow, with its model (the cached one if unchanged)."""
    read_at = time.monotonic()
    version = registry.alias_version(settings, name, alias)
    if version is None:
        registry.get_model(settings, name)  # 404 for an unknown model
        raise NotFoundError(
            f"Model '{name}' has no {alias} version: deploy one first.",
            {"model": name, "stage": alias},
        )
    if served is not None and served.version == version:
        model = served.model
    else:
        model = registry.load_version(settings, name, version)
    return _Served(version=version, model=model, moves=moves, read_at=read_at)


def predict(settings: Settings, name: str, request: PredictRequest) -> PredictResponse:
    """P(up) per ticker from the model behind `request.stage`, on online features."""
    from mlops.features.serving import online_features

    started = time.perf_counter()
    alias = PRODUCTION_ALIAS if request.stage == "production" else STAGING_ALIAS
    tickers = list(dict.fromkeys(t.strip().upper() for t in request.tickers if t.strip()))
    if not tickers:
        raise InvalidInputError("Give at least one non-empty ticker.")
    version, model = model_for(settings, name, alias)
    columns = model.metadata.get_input_schema().input_names()
    values = online_features(settings, tickers, [], None)
    missing = [c for c in columns if c not in values]
    if missing:
        raise InvalidInputError(
            f"The online store does not serve {', '.join(missing)}, which version {version} needs.",
            {"missing": missing},
        )
    # One row per ticker; a value the online store does not have is NaN.
    matrix = np.array([values[c] for c in columns], dtype=float).T.reshape(len(tickers), -1)
    gaps = np.isnan(matrix)
    unknown = [t for t, gap in zip(tickers, gaps.all(axis=1), strict=True) if gap]
    if unknown:
        raise NotFoundError(
            f"No online features for {', '.join(unknown)}: unknown tickers, or not "
            "materialized yet.",
            {"unknown_tickers": unknown},
        )
    incomplete = [t for t, gap in zip(tickers, gaps.any(axis=1), strict=True) if gap]
    if incomplete:
        raise InvalidInputError(
            f"Incomplete online features for {', '.join(incomplete)} (too little history).",
            {"incomplete_tickers": incomplete},
        )
    try:
        proba = gates.probabilities(model, pd.DataFrame(matrix, columns=columns))
    except Exception as exc:  # the model's own code
        raise ModelError(
            f"Version {version} of '{name}' failed to predict: {type(exc).__name__}: {exc}",
            {"model": name, "version": version},
        ) from exc
    predictions = [
        Prediction(ticker=t, probability_up=float(p), direction="up" if p >= 0.5 else "down")
        for t, p in zip(tickers, np.asarray(proba), strict=True)
    ]
    return PredictResponse(
        model=name,
        version=version,
        stage=request.stage,
        predictions=predictions,
        features={c: matrix[:, j].tolist() for j, c in enumerate(columns)},
        seconds=round(time.perf_counter() - started, 4),
    )
