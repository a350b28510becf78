"""The data a deployment checks a model on: the online features of every ticker (smoke
prediction, inference feature validation) and, from the offline store, the most recent
labelled days (the holdout for metric thresholds and the champion/challenger comparison)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops.errors import InvalidInputError
from mlops.features.compute import STATE_COLUMNS
from mlops.features.offline import FEATURES_FILE, LABELS_FILE, Snapshot
from mlops.features.offline_state import open_snapshot
from mlops.lifecycle.gates import GateResult
from mlops.lifecycle.training import LABEL
from mlops.settings import Settings

FEATURE_RANGES: dict[str, tuple[float | None, float | None]] = {
    "rsi_14": (0.0, 100.0),
    "vol_20d": (0.0, None),
}
"""Bounds a served feature must respect; every feature must also be finite and present."""
FINITE_BOUND = 1e9


def _snapshot(settings: Settings, dataset: str = FEATURES_FILE) -> Snapshot:
    snapshot = open_snapshot(settings)
    if snapshot is None or not snapshot.has(dataset):
        kind = "features" if dataset == FEATURES_FILE else "labels"
        raise InvalidInputError(f"The offline store has no {kind} yet: ingest first.")
    return snapshot


def _features(
    settings: Settings, columns: list[str], snapshot: Snapshot | None = None
) -> pd.DataFrame:
    snapshot = snapshot or _snapshot(settings)
    available = snapshot.columns(FEATURES_FILE)
    missing = [c for c in columns if c not in available]
    if missing:
        raise InvalidInputError(f"The offline features lack the columns {', '.join(missing)}.")
    return snapshot.read(FEATURES_FILE, ["ticker", "event_timestamp", *columns])


def online_rows(settings: Settings, columns: list[str]) -> pd.DataFrame:
    """What a prediction would score now: the online features of every known ticker, for
    the tickers whose features are complete."""
    from mlops.features.serving import online_features

    tickers = sorted(_snapshot(settings).tickers()["ticker"])
    if not tickers:
        raise InvalidInputError("The offline store has no tickers: ingest first.")
    values = online_features(settings, tickers, [], None)
    missing = [c for c in columns if c not in values]
    if missing:
        raise InvalidInputError(f"The online store does not serve {', '.join(missing)}.")
    frame = pd.DataFrame({"ticker": tickers, **{c: values[c] for c in columns}})
    return frame.dropna(subset=columns).reset_index(drop=True)


def labelled_rows(settings: Settings, columns: list[str], complete: bool = True) -> pd.DataFrame:
    """Rows of the offline store with the label and `columns` (all present when `complete`)."""
    snapshot = _snapshot(settings, LABELS_FILE)
    labels = snapshot.read(LABELS_FILE, ["ticker", "event_timestamp", LABEL])
    frame = _features(settings, columns, snapshot).merge(labels, on=["ticker", "event_timestamp"])
    return frame.dropna(subset=[*columns, LABEL]) if complete else frame


def offline_columns(settings: Settings) -> list[str]:
    """The feature columns of the offline store (without the entity key and timestamp)."""
    names = _snapshot(settings).columns(FEATURES_FILE)
    return [n for n in names if n not in ("ticker", "event_timestamp", *STATE_COLUMNS)]


def holdout(
    settings: Settings, columns: list[str], days: int, since: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Complete labelled rows of the last `days` dates of the offline store (from `since`)."""
    frame = labelled_rows(settings, columns)
    if since is not None:
        frame = frame[frame["event_timestamp"] >= since]
    dates = frame["event_timestamp"].drop_duplicates().nlargest(days)
    return frame[frame["event_timestamp"].isin(dates)].reset_index(drop=True)


def validate_inference_features(frame: pd.DataFrame, columns: list[str]) -> GateResult:
    """Great Expectations on the rows a model is about to score: present, finite, in range."""
    import great_expectations.expectations as gxe

    from mlops.features.validation import run_expectations

    expectations: list[Any] = []
    for column in columns:
        low, high = FEATURE_RANGES.get(column, (-FINITE_BOUND, FINITE_BOUND))
        expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)
        )
    results = run_expectations(frame[columns], "inference_features", expectations)
    failed = [
        f"{r.expectation_config.type} on {r.expectation_config.kwargs.get('column')}: "
        f"{(r.result or {}).get('unexpected_count', '?')} unexpected"
        for r in results
        if not r.success
    ]
    return GateResult(
        name="inference_features",
        passed=not failed,
        message="; ".join(failed) or f"{len(results)} expectations hold on {len(frame)} rows",
        value=float(len(failed)),
        threshold=0.0,
        operator="<=",
        details={"expectations": len(results), "rows": len(frame), "failed": failed},
    )
