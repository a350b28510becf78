"""The labelled rows a suite runs on, and the training rows its drift tests compare against."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from mlops.errors import InvalidInputError
from mlops.evaluation.suites import SuiteData
from mlops.features.offline_state import open_snapshot
from mlops.fields import UtcDatetime
from mlops.lifecycle import holdout
from mlops.lifecycle.training import LABEL
from mlops.settings import Settings


class DataRange(BaseModel):
    """What a suite actually ran on."""

    source: str
    rows: int
    start: UtcDatetime
    end: UtcDatetime
    tickers: list[str]


def _utc(value: object) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _dataset_rows(settings: Settings, name: str, columns: list[str]) -> pd.DataFrame:
    from mlops.features.datasets import get_dataset

    _, path = get_dataset(settings, name)
    frame = pd.read_parquet(path)
    missing = [c for c in ("ticker", "event_timestamp", LABEL, *columns) if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"Dataset '{name}' lacks the columns {', '.join(missing)} the suite needs.",
            {"dataset": name, "missing": missing},
        )
    return frame.dropna(subset=[*columns, LABEL])


_offline: dict[Path, tuple[str, pd.DataFrame]] = {}
_offline_lock = threading.Lock()


def _offline_rows(settings: Settings, columns: list[str]) -> pd.DataFrame:
    """Labelled rows of the offline store with `columns` present; the merged store is read
    once per snapshot (an evaluation reads it for every suite and drift test)."""
    available = set(holdout.offline_columns(settings))
    missing = [c for c in columns if c not in available]
    if missing:
        raise InvalidInputError(
            f"The offline store has no feature {', '.join(missing)} "
            f"(it has {', '.join(sorted(available))}).",
            {"missing": missing, "available": sorted(available)},
        )
    snapshot = open_snapshot(settings)
    stamp = snapshot.id if snapshot is not None else ""
    with _offline_lock:
        cached = _offline.get(settings.data_dir)
        if cached is None or cached[0] != stamp:
            cached = (stamp, holdout.labelled_rows(settings, sorted(available), complete=False))
            _offline[settings.data_dir] = cached
    frame = cached[1]
    return frame[["ticker", "event_timestamp", *columns, LABEL]].dropna(subset=[*columns, LABEL])


def suite_rows(
    settings: Settings, data: SuiteData, columns: list[str], since: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, DataRange]:
    """Labelled rows with every one of `columns`, in the suite's range, oldest first."""
    if data.dataset:
        frame, source = _dataset_rows(settings, data.dataset, columns), f"dataset {data.dataset}"
    else:
        frame, source = _offline_rows(settings, columns), "offline store"
    frame = frame.assign(event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True))
    if data.tickers:
        known = set(frame["ticker"].unique())
        unknown = sorted(set(data.tickers) - known)
        if unknown:
            raise InvalidInputError(
                f"Unknown tickers in the suite's data: {', '.join(unknown)} "
                f"(the {source} has {', '.join(sorted(known))}).",
                {"unknown": unknown},
            )
        frame = frame[frame["ticker"].isin(data.tickers)]
    stamps = frame["event_timestamp"]
    keep = pd.Series(True, index=frame.index)
    if data.start:
        keep &= stamps >= _utc(data.start)
    if data.end:
        keep &= stamps < _utc(data.end) + pd.Timedelta(days=1)
    if since is not None:
        keep &= stamps >= since
    frame = frame[keep]
    if data.last_days:
        dates = frame["event_timestamp"].drop_duplicates().nlargest(data.last_days)
        frame = frame[frame["event_timestamp"].isin(dates)]
    frame = frame.sort_values(["event_timestamp", "ticker"], kind="stable").tail(data.max_rows)
    if frame.empty:
        window = ", ".join(
            part
            for part in (
                f"from {data.start}" if data.start else "",
                f"to {data.end}" if data.end else "",
                f"last {data.last_days} days" if data.last_days else "",
                f"not before {since.date()} (the evaluated versions' first test date)"
                if since is not None
                else "",
            )
            if part
        )
        raise InvalidInputError(
            f"The suite's data has no labelled rows in range ({source}"
            + (f", {window}" if window else "")
            + ").",
            {"source": source, "since": since.isoformat() if since is not None else None},
        )
    frame = frame.reset_index(drop=True)
    frame[columns] = frame[columns].astype(float)
    frame[LABEL] = frame[LABEL].astype(float)
    described = DataRange(
        source=source,
        rows=len(frame),
        start=frame["event_timestamp"].min().to_pydatetime(),
        end=frame["event_timestamp"].max().to_pydatetime(),
        tickers=sorted(frame["ticker"].unique()),
    )
    return frame, described


def training_rows(
    settings: Settings, columns: list[str], start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Rows of the offline store in a model's training window, for drift comparisons."""
    frame = _offline_rows(settings, columns)
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame[(stamps >= start) & (stamps < end + pd.Timedelta(days=1))].reset_index(drop=True)
