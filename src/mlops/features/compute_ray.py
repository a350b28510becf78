"""The ingest's feature computation fanned out over ticker partitions as Ray tasks
(`compute_engine: ray`).

Every feature and label of a ticker depends on that ticker's bars only, so the sorted bars
are cut between tickers into about equal parts, one Ray task per part, and the parts'
results put back in order are what `compute_frames` gives for all of them at once, bit for
bit. There are as many parts as the cluster has CPUs (at most one per ticker); the tasks
run `compute_frames` itself, so a Ray worker needs the platform installed (the image or
virtual environment of the cluster's nodes).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from mlops import ray_cluster
from mlops.features.compute import compute_frames
from mlops.settings import Settings

__all__ = ["compute_frames_on_ray", "ticker_parts"]

log = logging.getLogger("mlops.ingest")


def ticker_parts(tickers: np.ndarray, parts: int) -> list[slice]:
    """Row ranges of about equal size that hold whole tickers, for rows sorted by ticker;
    at most `parts` of them and never one that is empty."""
    n = len(tickers)
    if n == 0:
        return []
    starts = np.flatnonzero(np.r_[True, tickers[1:] != tickers[:-1]])
    wanted = np.arange(1, max(parts, 1)) * n / max(parts, 1)
    # Each cut is the first ticker start at or after an equal split's row.
    at = np.searchsorted(starts, wanted)
    cuts = np.unique(np.r_[0, starts[at[at < len(starts)]], n])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(cuts)]


def _compute_part(
    bars: pd.DataFrame, context: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return compute_frames(bars, context)


def compute_frames_on_ray(
    settings: Settings, bars: pd.DataFrame, context: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`compute_frames(bars, context)` as Ray tasks on the settings' Ray cluster.

    ``bars`` come sorted by ticker, then date (as `offline_changes.sorted_bars` gives
    them). A lost cluster is a `StoreUnavailableError`; nothing is written by this step."""
    import ray

    address = ray_cluster.connect(settings)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    parts = ticker_parts(bars["ticker"].to_numpy(), cpus)
    if not parts:
        return compute_frames(bars, context)
    task = ray.remote(_compute_part)
    refs = []
    for rows in parts:
        part = bars.iloc[rows]
        tickers = part["ticker"].iloc[[0, -1]].tolist()
        stored = None
        if context is not None and len(context):
            between = context["ticker"].between(tickers[0], tickers[1])
            stored = context[between] if between.any() else None
        refs.append(task.remote(part, stored))
    where = address or "a Ray instance of this process"
    log.info("Computing %d bars in %d Ray tasks on %s", len(bars), len(refs), where)
    results = ray_cluster.gather(
        refs,
        address,
        lambda done, total: log.info("Computed %d of %d ticker parts", done, total),
    )
    features = pd.concat([f for f, _ in results], ignore_index=True)
    labels = pd.concat([labels for _, labels in results], ignore_index=True)
    return features, labels
