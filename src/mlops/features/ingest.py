"""The steps of the ingest pipeline: load -> validate -> compute features -> write
offline data -> apply definitions -> materialize -> statistics -> record.

Each step is a plain function; `flows/ingest.py` wires them into a Prefect flow.
Nothing is written before validation has passed, so a rejected batch leaves the
offline store, the Feast registry and the online store as they were.

An ingest costs what its batch touches: for each ticker of the batch it reads the stored
bars from the batch's first date on plus the `LOOKBACK` bars before (the windows' input)
and the RSI state of the last of them, recomputes that ticker from that date on, and
writes only the month partitions those rows fall in (see `offline.py`). A daily batch
therefore reads and writes about one month, whatever the length of the history.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from mlops import run_records
from mlops.db import IngestRun, session_scope
from mlops.errors import NotFoundError
from mlops.features.compute import LOOKBACK, STATE_COLUMNS
from mlops.features.demo_data import generate_ohlcv
from mlops.features.ingest_names import INGEST_STEPS, OPEN_STATUSES
from mlops.features.offline import (
    BARS_FILE,
    FEATURES_FILE,
    LABELS_FILE,
    TIME_COLUMN,
    Snapshot,
    exclusive_write,
    month_keys,
)
from mlops.features.offline_changes import (
    BAR_COLUMNS,
    OfflineChange,
    as_bars,
    computed_frames,
    full_rebuild,
    sorted_bars,
    starts_of,
    updated_tickers,
    write_offline,
)
from mlops.features.offline_state import open_snapshot, store_is_empty
from mlops.features.sources import BarsSource, load_layouts
from mlops.features.statistics import record_statistics, snapshot_statistics
from mlops.features.store import RepoDefinitions, load_repo_definitions, open_store
from mlops.features.validation import ValidationReport, ensure_valid
from mlops.features.vendor_files import LoadedBars, load_source
from mlops.features.versions import (
    VersionInfo,
    active_versions,
    feast_version_of,
    record_version,
    version_info,
    view_definition,
    views_to_apply,
)
from mlops.fields import UtcDatetime
from mlops.run_records import RunKind, Statuses
from mlops.runs import aware, runner_of
from mlops.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "BARS_FILE",
    "FEATURES_FILE",
    "LABELS_FILE",
    "BarsSource",
    "LoadedBars",
    "OfflineChange",
    "exclusive_write",
    "store_is_empty",
    "write_offline",
]

DEMO_SOURCE = "demo"


def load_batch(
    settings: Settings, source: str | BarsSource, date_format: str | None = None
) -> LoadedBars:
    """Read the files of a source (a path, or a ``BarsSource`` of vendor files), or generate
    the demo bars for 'demo'.

    ``date_format`` (strftime syntax) is how the files write their dates, over the
    source's own; without either, the one format that fits every date is used (see
    ``date_formats``).
    """
    if source == DEMO_SOURCE:
        demo = generate_ohlcv(
            n_tickers=settings.demo_tickers,
            start=settings.demo_start,
            end=settings.demo_end,
            seed=settings.demo_seed,
        )
        return LoadedBars(frame=demo, files=0)
    bars = source if isinstance(source, BarsSource) else BarsSource(paths=[str(source)])
    if date_format is not None:
        bars = bars.model_copy(update={"date_format": date_format})
    return load_source(bars, settings.ingest_max_bytes, load_layouts(settings))


def source_label(source: str | BarsSource) -> str:
    """How runs and validation reports name a source."""
    return source.describe() if isinstance(source, BarsSource) else source


def validate_batch(settings: Settings, bars: pd.DataFrame, source: str) -> ValidationReport:
    """Run the Great Expectations gate, with the stored bars around the batch (so a day's
    close is checked against the previous stored close); raises DataValidationError with
    a stored report."""
    return ensure_valid(bars, source, settings.reports_dir, _readable_neighbours(settings, bars))


def _readable_neighbours(settings: Settings, bars: pd.DataFrame) -> pd.DataFrame | None:
    """`neighbour_bars`, for a batch whose keys and prices have their types; None for one
    that does not (the gate refuses it for those types before comparing any rows)."""
    if any(column not in bars.columns for column in BAR_COLUMNS):
        return None
    typed = pd.api.types.is_datetime64_any_dtype(bars["date"]) and all(
        pd.api.types.is_numeric_dtype(bars[c]) for c in BAR_COLUMNS[2:]
    )
    if not typed or bars["date"].isna().any() or bars["ticker"].isna().any():
        return None
    return neighbour_bars(settings, bars)


# --------------------------------------------------------------------------- reading


def stored_rows(snapshot: Snapshot | None, starts: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(context, stored_from) for the tickers of `starts`: up to `LOOKBACK` stored bars
    before each start with the RSI state of the last one, and every stored bar from it on.

    Only the month partitions that can hold those rows are read: from two months before
    the start (further back, a year at a time, for a ticker with gaps) to its last bar."""
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _BAR_DTYPES.items()})
    index = snapshot.tickers().set_index("ticker") if snapshot is not None else None
    if snapshot is None or index is None or index.empty:
        return _with_state(snapshot, empty), empty
    known = starts[starts.index.isin(index.index)]
    if known.empty:
        return _with_state(snapshot, empty), empty
    months = np.array(list(snapshot.partitions(BARS_FILE)))
    first = np.searchsorted(months, month_keys(index.loc[known.index, "first"].to_numpy()))
    low = np.searchsorted(months, month_keys(known.to_numpy()))
    high = np.searchsorted(months, month_keys(index.loc[known.index, "last"].to_numpy()), "right")
    read_from = np.maximum(low - 2, first)
    frames = [_read_months(snapshot, known.index, read_from, high)]
    while True:
        rows = pd.concat(frames, ignore_index=True)
        prior = rows["date"].to_numpy() < rows["ticker"].map(known).to_numpy()
        counts = pd.Series(prior).groupby(rows["ticker"].to_numpy()).sum()
        counts = counts.reindex(known.index, fill_value=0).to_numpy()
        short = (counts < LOOKBACK) & (read_from > first)
        if not short.any():
            break
        earlier = np.where(short, np.maximum(read_from - 12, first), read_from)
        frames.append(_read_months(snapshot, known.index, earlier, read_from))
        read_from = earlier
    rows = sorted_bars(rows)
    prior = rows["date"].to_numpy() < rows["ticker"].map(known).to_numpy()
    context = rows[prior].groupby("ticker", sort=False).tail(LOOKBACK).reset_index(drop=True)
    return _with_state(snapshot, context), rows[~prior].reset_index(drop=True)


_BAR_DTYPES = {"ticker": object, "date": "datetime64[ns]"} | {c: "float64" for c in BAR_COLUMNS[2:]}


def _read_months(
    snapshot: Snapshot, tickers: pd.Index, lows: np.ndarray, highs: np.ndarray
) -> pd.DataFrame:
    """Bars of each ticker in the partitions [low, high) of its own (by index)."""
    months = list(snapshot.partitions(BARS_FILE))
    wanted: dict[int, list[str]] = defaultdict(list)
    for ticker, low, high in zip(tickers, lows, highs, strict=True):
        for position in range(int(low), int(high)):
            wanted[position].append(ticker)
    by_set: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for position, names in wanted.items():
        by_set[tuple(names)].add(months[position])
    tables = [
        snapshot.read_table(BARS_FILE, list(BAR_COLUMNS), parts, list(names))
        for names, parts in by_set.items()
    ]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _BAR_DTYPES.items()})
    return pa.concat_tables(tables).to_pandas()


def _with_state(snapshot: Snapshot | None, context: pd.DataFrame) -> pd.DataFrame:
    """The context bars with the stored RSI state of each (from the feature rows)."""
    if snapshot is None or context.empty:
        return context.assign(**{c: pd.Series(dtype="float64") for c in STATE_COLUMNS})
    last = context.groupby("ticker", sort=False).tail(1)
    months = set(month_keys(last["date"].to_numpy()))
    state = snapshot.read(
        FEATURES_FILE,
        ["ticker", "event_timestamp", *STATE_COLUMNS],
        months,
        last["ticker"].tolist(),
    )
    state["date"] = state.pop("event_timestamp").dt.tz_localize(None)
    return context.merge(state, on=["ticker", "date"], how="left")


def neighbour_bars(settings: Settings, batch: pd.DataFrame) -> pd.DataFrame:
    """The stored bars next to the batch, per ticker: the last one before its first batch
    date and the first one after its last batch date (dates the batch replaces are not
    neighbours). The ingest gate compares the batch's first and last bars with them."""
    bars = as_bars(batch)
    context, stored_from = stored_rows(open_snapshot(settings), starts_of(bars))
    before = context.groupby("ticker", sort=True).tail(1)
    last = bars.groupby("ticker")["date"].max()
    later = stored_from[stored_from["date"].to_numpy() > stored_from["ticker"].map(last).to_numpy()]
    after = later.groupby("ticker", sort=True).head(1)
    return pd.concat([before, after], ignore_index=True)[list(BAR_COLUMNS)]


# --------------------------------------------------------------------------- computing


def plan_change(settings: Settings, batch: pd.DataFrame) -> OfflineChange:
    """Read what the batch needs from the current snapshot and recompute its tickers.

    Call it holding `exclusive_write` (so the change is based on the latest snapshot)."""
    snapshot = open_snapshot(settings)
    bars = as_bars(batch)
    starts = starts_of(bars)
    context, stored_from = stored_rows(snapshot, starts)
    merged = sorted_bars(
        pd.concat([stored_from, bars], ignore_index=True) if len(stored_from) else bars
    )
    features, labels, where = computed_frames(settings, merged, context if len(context) else None)
    last_context = context.groupby("ticker")["date"].max()
    label_starts = last_context.reindex(starts.index).fillna(starts)
    return OfflineChange(
        base=snapshot,
        starts=starts,
        label_starts=label_starts,
        bars=merged,
        features=features,
        labels=labels,
        tickers=updated_tickers(snapshot, merged, stored_from),
        computed_on=where,
    )


def compute_offline_frames(settings: Settings, batch: pd.DataFrame) -> OfflineChange:
    """The compute step: the change the batch makes to the offline store."""
    return plan_change(settings, batch)


def apply_definitions(settings: Settings, author: str, message: str) -> list[VersionInfo]:
    """Apply the repository's definitions to Feast; record a version per changed view."""
    store = open_store(settings)
    repo = load_repo_definitions(settings)
    recorded = []
    with session_scope(settings.metadata_url) as session:
        changed = views_to_apply(session, repo.views)
        if changed or not _registered(store, repo):  # an unchanged repository writes nothing
            store.apply([*repo.entities, *repo.sources, *changed, *repo.services])
        active = active_versions(session)
        for view in changed:
            row = record_version(
                session,
                view_definition(view),
                origin="repo",
                author=author,
                message=message,
                feast_version=feast_version_of(store, view.name),
                previous=active.get(view.name),
            )
            recorded.append(row)
        infos = [version_info(r, active_version=r.version) for r in recorded]
    return infos


def _registered(store: FeatureStore, repo: RepoDefinitions) -> bool:
    """Whether Feast's registry holds the repository's entities, sources and services as
    declared (Feast's objects compare by definition); Feast's `apply` rewrites and syncs
    the whole registry file even when nothing changed."""
    from feast.errors import FeastObjectNotFoundException

    try:
        return (
            all(store.get_entity(e.name) == e for e in repo.entities)
            and all(store.get_data_source(s.name) == s for s in repo.sources)
            and all(store.get_feature_service(f.name) == f for f in repo.services)
        )
    except FeastObjectNotFoundException:
        return False


def online_view_names(settings: Settings) -> list[str]:
    store = open_store(settings)
    return [view.name for view in store.list_feature_views() if view.online]


def latest_rows(snapshot: Snapshot, dataset: str, tickers: list[str] | None) -> pd.DataFrame:
    """The newest row of each ticker in `dataset` (the month of its last bar and the one
    before are read: a label row is one bar older than the ticker's last bar)."""
    index = snapshot.tickers()
    if tickers is not None:
        index = index[index["ticker"].isin(tickers)]
    if index.empty:
        return pd.DataFrame()
    last = index["last"].to_numpy(dtype="datetime64[ns]").astype("datetime64[M]")
    months = set(np.concatenate([last, last - 1]).astype(str))
    rows = snapshot.read(dataset, None, months, index["ticker"].tolist())
    time = TIME_COLUMN[dataset]
    rows = rows.sort_values(["ticker", time], kind="mergesort")
    return rows.groupby("ticker", sort=True).tail(1).reset_index(drop=True)


def materialize(
    settings: Settings,
    snapshot: Snapshot | None,
    tickers: list[str] | None = None,
    views: list[str] | None = None,
) -> list[str]:
    """Write the latest value of each ticker (of `tickers`, default all) into the online
    store, for every online view (or `views`): what online reads serve. A ticker whose
    latest bar is older than the view's ttl (counted back from the newest bar in the
    store) is left out, as Feast's own materialization would leave it out."""
    from feast import FileSource

    from mlops.features.offline import dataset_name

    store = open_store(settings)
    online = [
        v for v in store.list_feature_views() if v.online and (views is None or v.name in views)
    ]
    if snapshot is None or not online:
        return []
    newest = pd.Timestamp(snapshot.tickers()["last"].max(), tz=UTC)
    latest: dict[str, pd.DataFrame] = {}
    for view in online:
        source = view.batch_source
        assert isinstance(source, FileSource)  # every offline view reads a dataset
        dataset = dataset_name(source.path)
        if dataset not in latest:
            latest[dataset] = latest_rows(snapshot, dataset, tickers)
        rows = latest[dataset]
        if rows.empty:
            continue
        time = source.timestamp_field
        if view.ttl:
            rows = rows[rows[time] >= newest - view.ttl]
        columns = ["ticker", time, *(f.name for f in view.features)]
        store.write_to_online_store(view.name, rows[columns].reset_index(drop=True))
    return [view.name for view in online]


def materialize_after_ingest(
    settings: Settings, snapshot: Snapshot | None, tickers: list[str], changed: list[str]
) -> list[str]:
    """The batch's tickers for every online view; every ticker for the views whose
    definition the ingest changed (their online values may not exist yet)."""
    names = online_view_names(settings)
    done = materialize(settings, snapshot, tickers, [n for n in names if n not in changed])
    return done + materialize(settings, snapshot, None, [n for n in names if n in changed])


def store_statistics(settings: Settings, snapshot: Snapshot | None) -> int:
    """Statistics and samples of every active view's features, stored per version.

    They are merged from the snapshot's partition summaries (`statistics.py`), so the
    step costs about the same on a long history as on a short one."""
    if snapshot is None:
        return 0
    with session_scope(settings.metadata_url) as session:
        active = active_versions(session)
        wanted: dict[str, set[str]] = defaultdict(set)
        for row in active.values():
            names = (feature["name"] for feature in row.definition["features"])
            wanted[row.definition["source"]["file"]].update(names)
        computed = {
            dataset: snapshot_statistics(snapshot, dataset, sorted(columns))
            for dataset, columns in wanted.items()
            if snapshot.has(dataset)
        }
        return record_statistics(session, active, computed)


class IngestResult(BaseModel):
    """What a completed ingest did, as its record keeps it."""

    rows: int
    files: int
    ignored_columns: list[str]
    new_versions: list[str]
    """Feature view versions the definitions made, `view@vN`."""
    materialized: list[str]
    """The feature views loaded into the online store."""
    statistics: int
    """How many features got fresh statistics."""


class IngestSummary(IngestResult):
    """What one ingest did (the `ingest` flow's result)."""

    run_id: int


def start_run(
    settings: Settings, source: str, flow_run_id: str | None = None, pending: bool = False
) -> int:
    """A record of an ingest: running in this process, or `pending` (accepted by the API,
    to be begun by the process that runs it, `begin_run`)."""
    settings.ensure_dirs()
    with session_scope(settings.metadata_url) as session:
        run = run_records.opened(RUNS, IngestRun(source=source, steps=[], flow_run_id=flow_run_id))
        run.status = "pending" if pending else "running"
        session.add(run)
        session.flush()
        return run.id


def begin_run(settings: Settings, run_id: int, flow_run_id: str | None) -> str:
    """Start a pending run in this process, which becomes its owner (409 if it began
    already or ended); returns how the record names its source."""

    def start(run: IngestRun) -> str:
        run.flow_run_id = flow_run_id
        return run.source

    return run_records.begin(settings, RUNS, run_id, start)


def record_step(
    settings: Settings,
    run_id: int,
    name: str,
    seconds: float,
    status: str,
    where: str | None = None,
) -> None:
    """Add a step's outcome and wall time to the run (and where it ran, if elsewhere than
    in the ingest's process)."""
    step: dict[str, Any] = {"step": name, "seconds": round(seconds, 4), "status": status}
    if where:
        step["where"] = where

    def add(run: IngestRun) -> None:
        run.steps = [*run.steps, step]

    run_records.change(settings, RUNS, run_id, add)


def keep_alive(settings: Settings, run_id: int) -> AbstractContextManager[None]:
    """Beat the run's heartbeat while the block runs it."""
    return run_records.keep_alive(settings, RUNS, run_id)


def finish_run(
    settings: Settings,
    run_id: int,
    status: str,
    *,
    rows: int | None = None,
    error: str | None = None,
    error_code: str | None = None,
    report_path: str | None = None,
    summary: IngestSummary | None = None,
) -> None:
    """Close the run as `status` (completed, rejected or failed), with the error's message
    and code (`MlopsError.code`); a run the reaper closed meanwhile is left as it is."""

    def close(run: IngestRun) -> str:
        run.rows, run.error, run.report_path = rows, error, report_path
        run.error_code = error_code
        if summary is not None:
            run.summary = summary.model_dump(exclude={"run_id"})
        started = aware(run.started_at)
        if run.finished_at is not None and started is not None:
            run.wall_seconds = (run.finished_at - started).total_seconds()
        return status

    run_records.finish(settings, RUNS, run_id, close, lambda _: None)


def _close_interrupted(_settings: Settings, run: IngestRun, now: datetime) -> bool:
    """Close the run of a gone process as `interrupted`, naming the step it stopped in."""
    pending = run.status == "pending"
    run.status, run.finished_at = "interrupted", now
    if pending:
        run.error = (
            f"Interrupted: {runner_of(run.owner, 'the process that accepted it')} stopped "
            "before the ingest began. Nothing was written."
        )
        return True
    done = [s["step"] for s in run.steps if s.get("status") == "completed"]
    stopped_in = next((s for s in INGEST_STEPS if s not in done), INGEST_STEPS[-1])
    run.error = f"Interrupted: {runner_of(run.owner)} stopped during the {stopped_in} step." + (
        " The stores hold what the steps before it wrote." if done else " Nothing was written."
    )
    return True


RUNS = RunKind(
    label="ingest run",
    table=IngestRun,
    statuses=Statuses(open=OPEN_STATUSES, ends=("completed", "failed", "rejected", "interrupted")),
    close_interrupted=_close_interrupted,
)


class IngestStep(BaseModel):
    step: str
    seconds: float
    status: str
    where: str | None = Field(
        None, description="Where the step ran, if not in the ingest's process (a Ray cluster)."
    )


class IngestRunInfo(BaseModel):
    """An ingest run as the API shows it: its status, the steps done so far and, once
    completed, what it did."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    source: str
    status: str = Field(description="pending, running, completed, rejected, failed, interrupted")
    rows: int | None
    steps: list[IngestStep]
    error: str | None
    error_code: str | None = Field(
        None, description="The error's code, as the API's error answers name it (invalid_input)."
    )
    report_path: str | None = Field(description="The validation report of a rejected batch.")
    flow_run_id: str | None = Field(None, description="The Prefect flow run that ran it.")
    started_at: UtcDatetime
    finished_at: UtcDatetime | None
    wall_seconds: float | None
    summary: IngestResult | None = Field(description="What a completed run did.")

    @property
    def ended(self) -> bool:
        return self.status not in OPEN_STATUSES


def run_info(settings: Settings, run_id: int) -> IngestRunInfo:
    """The run's record (404 when there is none)."""
    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        if run is None:
            raise NotFoundError(f"No ingest run {run_id}.", {"id": run_id})
        return IngestRunInfo.model_validate(run)


def latest_runs(settings: Settings, limit: int = 20) -> list[IngestRun]:
    """The newest runs first."""
    with session_scope(settings.metadata_url) as session:
        return list(session.scalars(select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)))


def steps_of_newest_run(settings: Settings, after_id: int) -> list[dict[str, Any]]:
    """The steps recorded so far by the newest run started after run ``after_id`` (a
    progress display polls this, so it reads one row)."""
    with session_scope(settings.metadata_url) as session:
        steps = session.scalars(
            select(IngestRun.steps)
            .where(IngestRun.id > after_id)
            .order_by(IngestRun.id.desc())
            .limit(1)
        ).first()
    return list(steps or [])


def repair_offline(settings: Settings) -> str:
    """Recompute every feature and label from the stored bars into a new snapshot, load
    the latest values into the online store and store fresh statistics (after a change of
    the feature code, or to check a store). Temp files of killed writers are removed."""
    from mlops.features.offline import remove_dead_temp_files

    with exclusive_write(settings):
        removed = remove_dead_temp_files(settings.data_dir)
        removed += remove_dead_temp_files(settings.data_dir / "snapshots")
        snapshot = open_snapshot(settings)
        if snapshot is None or not snapshot.has(BARS_FILE):
            return (
                f"The offline store is empty; nothing to repair ({len(removed)} leftovers removed)."
            )
        bars = snapshot.read(BARS_FILE)
        rebuilt = full_rebuild(settings, bars)
    materialize(settings, rebuilt)
    store_statistics(settings, rebuilt)
    return (
        f"Rebuilt: features and labels were recomputed from {len(bars)} bars "
        f"({len(removed)} leftovers of killed writers removed)."
    )
