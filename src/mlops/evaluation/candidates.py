"""The model versions an evaluation scores: loaded once per process (a registered version
never changes), with what the suites need to know about them (inputs, training window, the
logged model that MLflow links evaluation metrics to)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.errors import InvalidInputError, NotFoundError
from mlops.lifecycle import mlflow_backend
from mlops.lifecycle.registry import PRODUCTION_ALIAS, STAGING_ALIAS, alias_version
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

CACHE_SIZE = 16
ALIASES = (PRODUCTION_ALIAS, STAGING_ALIAS)


@dataclass
class Candidate:
    """One registered model version, loaded."""

    name: str
    version: str
    model: PyFuncModel
    inputs: list[str]
    run_id: str | None
    model_id: str | None
    train_start: pd.Timestamp | None
    train_end: pd.Timestamp | None
    test_start: pd.Timestamp | None
    raw: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def output(self, frame: pd.DataFrame) -> tuple[np.ndarray, str]:
        """(output, task): P(up) for a classifier (two probability columns), else the value."""
        values = np.asarray(self.model.predict(frame[self.inputs]), dtype=float)
        if values.ndim == 2 and values.shape[1] == 2:
            values, task = values[:, 1], "classification"
        elif values.ndim == 2 and values.shape[1] == 1:
            values, task = values[:, 0], "regression"
        elif values.ndim == 1:
            task = "regression"
        else:
            raise ValueError(f"the model returned shape {values.shape} for {len(frame)} rows")
        if values.shape != (len(frame),):
            raise ValueError(f"the model returned {values.shape[0]} values for {len(frame)} rows")
        bad = int(np.sum(~np.isfinite(values)))
        if bad:
            raise ValueError(f"the model returned {bad} NaN or infinite values")
        if task == "classification" and (values.min() < 0 or values.max() > 1):
            raise ValueError("the model returned probabilities outside [0, 1]")
        return values, task


_cache: dict[tuple[str, str, str, str], Candidate] = {}
_cache_lock = threading.Lock()
_load_locks: dict[tuple[str, str, str, str], threading.Lock] = {}


def resolve_version(settings: Settings, name: str, version: str | None, alias: str | None) -> str:
    """The version number meant by a version or an alias (404 if the alias is not set)."""
    if version:
        return str(version)
    if alias not in ALIASES:
        raise InvalidInputError(
            f"Give a version or an alias ({', '.join(ALIASES)}) for model '{name}'.",
            {"model": name, "alias": alias},
        )
    resolved = alias_version(settings, name, alias)
    if resolved is None:
        raise NotFoundError(
            f"Model '{name}' has no {alias} version.", {"model": name, "alias": alias}
        )
    return resolved


def _stamp(value: str | None) -> pd.Timestamp | None:
    return pd.Timestamp(value, tz="UTC") if value else None


def load_candidate(settings: Settings, name: str, version: str) -> Candidate:
    """Load a registered version (cached); 404 if unknown, 422 if it cannot be loaded."""
    from mlflow.exceptions import MlflowException

    client = mlflow_backend.client(settings)
    try:
        registered = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise NotFoundError(
            f"Model '{name}' has no version '{version}'.", {"model": name, "version": version}
        ) from exc
    key = (settings.tracking_uri, name, str(version), registered.source or "")
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:  # one load per version, however many tasks ask at once
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        candidate = _load(settings, registered)
        with _cache_lock:
            if len(_cache) >= CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
            _cache[key] = candidate
    return candidate


def _load(settings: Settings, registered: Any) -> Candidate:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    name, version = registered.name, str(registered.version)
    try:
        model = mlflow.pyfunc.load_model(
            mlflow_backend.model_version_location(settings, name, version)
        )
    except Exception as exc:  # missing or corrupt artifact, unloadable flavour
        raise InvalidInputError(
            f"Version {version} of '{name}' could not be loaded: {type(exc).__name__}: {exc}",
            {"model": name, "version": version},
        ) from exc
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        raise InvalidInputError(
            f"Version {version} of '{name}' has no named input signature to feed it features.",
            {"model": name, "version": version},
        )
    params: dict[str, str] = {}
    if registered.run_id:
        try:
            params = mlflow_backend.client(settings).get_run(registered.run_id).data.params
        except MlflowException:  # the source run was deleted: no training window
            params = {}
    try:
        raw = model.get_raw_model()
    except Exception:  # not every flavour exposes its native model
        raw = None
    return Candidate(
        name=name,
        version=version,
        model=model,
        inputs=schema.input_names(),
        run_id=registered.run_id,
        model_id=getattr(registered, "model_id", None),
        train_start=_stamp(params.get("train_start")),
        train_end=_stamp(params.get("train_end")),
        test_start=_stamp(params.get("test_start")),
        raw=raw,
    )


def forget() -> None:
    """Drop every loaded version (tests that drop their MLflow database call this)."""
    with _cache_lock:
        _cache.clear()
        _load_locks.clear()
