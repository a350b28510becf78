"""Online predictions: the model behind an alias, cached per process and swapped when the
alias moves, scored on the latest online features of the requested tickers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from mlops.errors import InvalidInputError, ModelError, NotFoundError
from mlops.lifecycle import alias_moves, registry
from mlops.lifecycle.registry import PRODUCTION_ALIAS, STAGING_ALIAS
from mlops.lifecycle.scoring import Scorer
from mlops.settings import Settings

MAX_TICKERS = 500


@dataclass(frozen=True)
class _Served:
    """The version an alias pointed to when it was last read from MLflow, and its model."""

    version: str
    scorer: Scorer
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


def model_for(settings: Settings, name: str, alias: str) -> tuple[str, Scorer]:
    """(version, scorer of its model) behind the alias, asking MLflow only when the alias
    may have moved.

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
    return served.version, served.scorer


def loaded_model(settings: Settings, name: str, alias: str) -> tuple[str, Scorer] | None:
    """What `model_for` returns when it would not ask MLflow (the same count of moves, a
    read younger than the recheck time); None when it would, or has not been called yet."""
    served = _CACHE.get((settings.tracking_uri, name, alias))
    if served is None:
        return None
    if not _current(served, alias_moves.moves(settings, name), settings.alias_recheck_s):
        return None
    return served.version, served.scorer


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
        scorer = served.scorer
    else:
        scorer = Scorer(registry.load_version(settings, name, version))
    return _Served(version=version, scorer=scorer, moves=moves, read_at=read_at)


def predict(settings: Settings, name: str, request: PredictRequest) -> PredictResponse:
    """P(up) per ticker from the model behind `request.stage`, on online features."""
    started = time.perf_counter()
    tickers = _tickers(request)
    version, scorer = model_for(settings, name, _alias(request))
    return _score(settings, name, request.stage, tickers, version, scorer, started)


def predict_if_loaded(
    settings: Settings, name: str, request: PredictRequest
) -> PredictResponse | None:
    """`predict`, when the model behind the alias is loaded and its read current: None when
    answering needs MLflow (to read the alias or load a version), which may take seconds."""
    started = time.perf_counter()
    tickers = _tickers(request)
    loaded = loaded_model(settings, name, _alias(request))
    if loaded is None:
        return None
    return _score(settings, name, request.stage, tickers, *loaded, started)


def _alias(request: PredictRequest) -> str:
    return PRODUCTION_ALIAS if request.stage == "production" else STAGING_ALIAS


def _tickers(request: PredictRequest) -> list[str]:
    tickers = list(dict.fromkeys(t.strip().upper() for t in request.tickers if t.strip()))
    if not tickers:
        raise InvalidInputError("Give at least one non-empty ticker.")
    return tickers


def _score(
    settings: Settings,
    name: str,
    stage: str,
    tickers: list[str],
    version: str,
    scorer: Scorer,
    started: float,
) -> PredictResponse:
    """The model's P(up) for each ticker on its latest online features."""
    from mlops.features.serving import online_features

    columns = scorer.columns
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
        proba = scorer.probabilities(matrix)
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
        stage=stage,
        predictions=predictions,
        features={c: matrix[:, j].tolist() for j, c in enumerate(columns)},
        seconds=round(time.perf_counter() - started, 4),
    )
