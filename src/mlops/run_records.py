"""The lifecycle of a run record (a deployment, an evaluation run, an ingest run): one row
of the metadata store that is opened, begun, changed by its owner, finished, and closed by
the reaper when its runner is gone.

One state machine for every kind: a record is open (`pending`, then `running`; an ingest
run starts `running`) until it reaches one of its kind's ends, and an ended record is
final. A kind may also have waiting statuses (a deployment awaiting its approvers): no
process runs such a record; people's decisions open it again or end it, and its kind's
`end_overdue` ends it once it waited too long. Only the process that began a run (its
owner: host, pid and start time, see `runs.py`) writes to it, one read-modify-write per
change, renewing its heartbeat. A record whose owner died, or whose heartbeat stopped, is
closed by `reap`; each kind says how in the hooks of its `RunKind`. Readers never reap:
`reaper.py` runs it when a process that serves or starts work starts, and on a schedule
inside the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from mlops.db import locked_scope, session_scope, utcnow
from mlops.errors import ConflictError, NotFoundError
from mlops.runs import current_owner, heartbeat, queued_flow_run, queued_owner, runner_gone
from mlops.settings import Settings

log = logging.getLogger(__name__)


class RunRow(Protocol):
    """The columns every run record has (as each table declares them: read as the widest
    type, written as the narrowest)."""

    status: str

    @property
    def owner(self) -> str | None: ...
    @owner.setter
    def owner(self, value: str) -> None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @started_at.setter
    def started_at(self, value: datetime) -> None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @finished_at.setter
    def finished_at(self, value: datetime) -> None: ...


Row = TypeVar("Row", bound=RunRow)
T = TypeVar("T")


@dataclass(frozen=True)
class Statuses:
    """The statuses a kind stores: the open ones in order (a new record has the first),
    the ends, and the waiting ones: a record that waits for people (a deployment for its
    approvers) has no runner, so the reaper leaves it alone; it keeps what it holds (a
    deployment's model lock) until it opens again or ends."""

    open: tuple[str, ...]
    ends: tuple[str, ...]
    waiting: tuple[str, ...] = ()

    def allows(self, before: str, after: str) -> bool:
        """Open statuses only move forward (or stay) or wait; a waiting record opens again
        at the first open status; any open or waiting status may end; an end is final."""
        if before in self.waiting:
            return after == self.open[0] or after in self.ends
        if before not in self.open:
            return False
        if after in self.ends or after in self.waiting:
            return True
        return after in self.open and self.open.index(after) >= self.open.index(before)


@dataclass(frozen=True)
class RunKind(Generic[Row]):
    """One kind of run record, and the hooks where it differs from the others."""

    label: str
    """How messages name one record ("deployment", "ingest run")."""
    table: type[Row]
    statuses: Statuses
    close_interrupted: Callable[[Settings, Row, datetime], bool]
    """Close what a gone runner left open, inside the reaper's transaction; True when it
    ended the run. A hook that cannot tell the outcome yet leaves the row as it is."""
    heartbeat_column: str = "heartbeat_at"
    """Where the record's heartbeat is: a runner on any host is gone once it is stale."""
    also_open: Callable[[], ColumnElement[bool]] | None = None
    """Ended records whose runner still works on them (an evaluation drawing its plots)."""
    after_reap: Callable[[Settings, list[Any]], None] | None = None
    """What to close outside the metadata store once runs were ended (given their ids)."""
    end_overdue: Callable[[Settings, ColumnElement[bool] | None, datetime], list[Any]] | None = None
    """End the waiting records (those matching the filter) that waited too long, each in a
    transaction of its own; the ids it ended. The reaper runs it before it closes records
    of gone runners."""

    def column(self, name: str) -> Any:
        """A column of the kind's table, for queries."""
        return getattr(self.table, name)

    def open_records(self) -> ColumnElement[bool]:
        """The records a runner may still work on."""
        clause: ColumnElement[bool] = self.column("status").in_(self.statuses.open)
        return clause | self.also_open() if self.also_open is not None else clause


def opened(kind: RunKind[Row], row: Row) -> Row:
    """A new record of this process: its first status, owner and heartbeat."""
    row.status, row.owner = kind.statuses.open[0], current_owner()
    _renew(kind, row)
    return row


def reopened(kind: RunKind[Row], row: Row) -> Row:
    """A waiting record (locked in the caller's transaction) open again, at its first
    status, with this process as its owner: it begins it next, or the reaper closes it."""
    check_change(kind, getattr(row, "id", "?"), row.status, kind.statuses.open[0])
    return opened(kind, row)


def begin(settings: Settings, kind: RunKind[Row], run_id: Any, edit: Callable[[Row], T]) -> T:
    """Start a pending run in this process, which becomes its owner (another process may
    have requested it); `edit` sets the kind's fields of the start. Refused (409) when the
    run was begun already or has ended."""
    with locked_scope(settings.metadata_url) as session:
        row = _locked(session, kind, run_id)
        pending, running = kind.statuses.open[:2]
        if row.status != pending:
            raise ConflictError(
                f"The {kind.label} {run_id} is {row.status}: it cannot start again.",
                {"id": run_id, "status": row.status},
            )
        row.status, row.owner = running, current_owner()
        row.started_at = row.started_at or utcnow()  # a waiting record began before
        _renew(kind, row)
        return edit(row)


def change(settings: Settings, kind: RunKind[Row], run_id: Any, edit: Callable[[Row], T]) -> T:
    """One read-modify-write of an open record this process owns, in one transaction:
    `edit` changes the row (its status forward only) and the heartbeat is renewed; returns
    what `edit` returns. Refused (409) once the record ended or belongs to another
    process."""
    with locked_scope(settings.metadata_url) as session:
        row = _locked(session, kind, run_id)
        if not _ours(kind, row):
            raise ConflictError(
                f"The {kind.label} {run_id} is {row.status} and owned by {row.owner}: this "
                "process may no longer change it.",
                {"id": run_id},
            )
        before = row.status
        result = edit(row)
        check_change(kind, run_id, before, row.status)
        _renew(kind, row)
        return result


def finish(
    settings: Settings,
    kind: RunKind[Row],
    run_id: Any,
    close: Callable[[Row], str],
    view: Callable[[Row], T],
) -> T:
    """End an open record this process owns: `close` sets the kind's fields (`finished_at`
    is set before) and returns the end status. A record that ended already (closed by the
    reaper, or finished before) or belongs to another process is left as it is. Returns
    what `view` makes of the record."""
    with locked_scope(settings.metadata_url) as session:
        row = _locked(session, kind, run_id)
        if _ours(kind, row):
            before, row.finished_at = row.status, utcnow()
            status = close(row)
            if status not in kind.statuses.ends:
                raise ValueError(f"{status!r} does not end a {kind.label}")
            check_change(kind, run_id, before, status)
            row.status = status
        return view(row)


def hand_over(settings: Settings, kind: RunKind[Row], run_id: Any, flow_run_id: str) -> None:
    """Give a pending record this process owns to the flow run submitted for it (on a work
    pool's worker, which begins it): until then the reaper asks Prefect about that run.
    A worker that began it already owns it, and keeps it."""
    with session_scope(settings.metadata_url) as session:
        session.execute(
            update(kind.table)
            .where(
                kind.column("id") == run_id,
                kind.column("status") == kind.statuses.open[0],
                kind.column("owner") == current_owner(),
            )
            .values({"owner": queued_owner(flow_run_id), kind.heartbeat_column: utcnow()})
        )


def beat(settings: Settings, kind: RunKind[Row], run_id: Any) -> None:
    """Renew the heartbeat of an open record this process owns (one UPDATE, nothing read)."""
    with session_scope(settings.metadata_url) as session:
        session.execute(
            update(kind.table)
            .where(
                kind.column("id") == run_id,
                kind.open_records(),
                kind.column("owner") == current_owner(),
            )
            .values({kind.heartbeat_column: utcnow()})
        )


_BEATING: set[tuple[str, Any]] = set()
_BEATING_LOCK = threading.Lock()


@contextmanager
def keep_alive(settings: Settings, kind: RunKind[Row], run_id: Any) -> Iterator[None]:
    """Beat the record's heartbeat from a daemon thread while the block runs. Blocks for
    the same record nested in one process (a flow run inside the call that started it)
    share the outer block's beat."""
    key = (kind.label, run_id)
    with _BEATING_LOCK:
        outer = key not in _BEATING
        _BEATING.add(key)
    if not outer:
        yield
        return
    try:
        with heartbeat(lambda: beat(settings, kind, run_id)):
            yield
    finally:
        with _BEATING_LOCK:
            _BEATING.discard(key)


def reap(
    settings: Settings, kind: RunKind[Row], where: ColumnElement[bool] | None = None
) -> list[Any]:
    """Close the records of `kind` (those matching `where`) whose runner is gone, each in a
    transaction of its own that reads it again, locked: a runner that beat meanwhile keeps
    its record. The ids of the runs it ended."""
    now = utcnow()
    ended = []
    if kind.end_overdue is not None:
        try:
            ended = kind.end_overdue(settings, where, now)
        except Exception as exc:  # crashed runs are still closed below
            log.warning("ending the %ss that waited too long failed: %s", kind.label, exc)
    crashed: list[tuple[str, str]] = []
    for run_id in _gone(settings, kind, where, now):
        # Not `locked_scope`: a kind's hook may read slow stores (a deployment asks the
        # model registry), and SQLite's write lock would hold every other writer that
        # long. Only a runner the reaper finds gone could race it here.
        with session_scope(settings.metadata_url) as session:
            row = session.scalars(
                select(kind.table)
                .where(kind.column("id") == run_id, kind.open_records())
                .with_for_update()
            ).first()
            if row is None or not _runner_gone(settings, row.owner, _beat_of(kind, row), now):
                continue
            before = row.status
            if kind.close_interrupted(settings, row, now):
                ended.append(run_id)
                flow_run_id = getattr(row, "flow_run_id", None) or queued_flow_run(row.owner)
                succeeded = row.status in ("succeeded", "completed")  # what its stores show
                if settings.uses_work_pool and flow_run_id and not succeeded:
                    crashed.append((flow_run_id, str(getattr(row, "error", "") or "")))
            if row.status != before:
                check_change(kind, run_id, before, row.status)
    for flow_run_id, message in crashed:  # its worker, killed with it, cannot say so
        from mlops import pool_runs

        pool_runs.mark_crashed(settings, flow_run_id, message or f"{kind.label} interrupted")
    if ended and kind.after_reap is not None:
        kind.after_reap(settings, ended)
    return ended


def _gone(
    settings: Settings, kind: RunKind[Row], where: ColumnElement[bool] | None, now: datetime
) -> list[Any]:
    """The ids of the open records whose runner is gone, as one query shows them."""
    beat_column = kind.column(kind.heartbeat_column)
    statement = select(kind.column("id"), kind.column("owner"), beat_column).where(
        kind.open_records()
    )
    if where is not None:
        statement = statement.where(where)
    with session_scope(settings.metadata_url) as session:
        rows = session.execute(statement).all()
    return [
        run_id for run_id, owner, beat_at in rows if _runner_gone(settings, owner, beat_at, now)
    ]


def _runner_gone(
    settings: Settings, owner: str | None, beat_at: datetime | None, now: datetime
) -> bool:
    """`runs.runner_gone`, except for a record waiting for its flow run on a work pool:
    Prefect says whether that run can still begin it (waiting for a worker is no outage)."""
    flow_run_id = queued_flow_run(owner)
    if flow_run_id is None:
        return runner_gone(owner, beat_at, now)
    from mlops import pool_runs

    return pool_runs.queued_run_gone(settings, flow_run_id, now)


def _beat_of(kind: RunKind[Row], row: Row) -> datetime | None:
    return getattr(row, kind.heartbeat_column)


def _renew(kind: RunKind[Row], row: Row) -> None:
    setattr(row, kind.heartbeat_column, utcnow())


def _locked(session: Session, kind: RunKind[Row], run_id: Any) -> Row:
    row = session.get(kind.table, run_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"No {kind.label} '{run_id}'.", {"id": run_id})
    return row


def _ours(kind: RunKind[Row], row: Row) -> bool:
    return row.status in kind.statuses.open and row.owner == current_owner()


def check_change(kind: RunKind[Row], run_id: Any, before: str, after: str) -> None:
    """Refuse (409) a status change the kind's state machine does not allow."""
    if not kind.statuses.allows(before, after):
        raise ConflictError(
            f"The {kind.label} {run_id} is {before}: it cannot become {after}.",
            {"id": run_id, "status": before},
        )
