"""Online predictions: the model behind an alias, cached per process and swapped when the
alias moves, scored on the latest online features of the requested tickers."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from mlops.errors import InvalidInputError, ModelError, NotFoundError
from mlops.lifecycle import gates, registry
from mlops.lifecycle.registry import PRODUCTION_ALIAS, STAGING_ALIAS
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

MAX_TICKERS = 500
_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, str], tuple[str, PyFuncModel]] = {}


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


def forget(name: str) -> None:
    """Drop the cached models of `name` (called when this process moves one of its aliases)."""
    with _LOCK:
        for key in [k for k in _CACHE if k[1] == name]:
            del _CACHE[key]


def model_for(settings: Settings, name: str, alias: str) -> tuple[str, PyFuncModel]:
    """(version, model) behind the alias; reloaded only when the alias moved."""
    version = registry.alias_version(settings, name, alias)
    if version is None:
        from mlops.lifecycle.registry import get_model

        get_model(settings, name)  # 404 for an unknown model
        raise NotFoundError(
            f"Model '{name}' has no {alias} version: deploy one first.",
            {"model": name, "stage": alias},
        )
    key = (settings.tracking_uri, name, alias)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] == version:
        return cached
    with _LOCK:  # one load at a time: concurrent first calls share it
        cached = _CACHE.get(key)
        if cached is None or cached[0] != version:
            cached = (version, registry.load_version(settings, name, version))
            _CACHE[key] = cached
    return cached


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
    frame = pd.DataFrame({c: values[c] for c in columns}, index=tickers, dtype=float)
    unknown = [t for t in tickers if frame.loc[t].isna().all()]
    if unknown:
        raise NotFoundError(
            f"No online features for {', '.join(unknown)}: unknown tickers, or not "
            "materialized yet.",
            {"unknown_tickers": unknown},
        )
    incomplete = [t for t in tickers if frame.loc[t].isna().any()]
    if incomplete:
        raise InvalidInputError(
            f"Incomplete online features for {', '.join(incomplete)} (too little history).",
            {"incomplete_tickers": incomplete},
        )
    try:
        proba = gates.probabilities(model, frame.reset_index(drop=True))
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
        features={c: [float(v) for v in frame[c]] for c in columns},
        seconds=round(time.perf_counter() - started, 4),
    )
