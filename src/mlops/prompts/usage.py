"""Usage events of prompt renders: the tables, events buffered in memory and written in
batches by a background thread, downstream outcomes and running call counts. The
aggregates are in `mlops.prompts.analytics`."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from sqlalchemy import BigInteger, Float, Index, String, Table, Text, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapped, mapped_column

from mlops.db import Base, engine_for
from mlops.errors import ConflictError, NotFoundError

log = logging.getLogger("mlops.prompts.usage")
MAX_BUFFER = 200_000


class PromptUsageEvent(Base):
    """One render of a prompt template, and the downstream outcome its caller reported."""

    __tablename__ = "prompt_usage_events"
    # Covering indexes: time-range scans, and latency-ordered scans for SQLite percentiles.
    __table_args__ = (
        Index(
            "ix_prompt_usage_template_at",
            "template",
            "at_ms",
            "version",
            "status",
            "latency_ms",
            "error_kind",
            "outcome",
        ),
        Index("ix_prompt_usage_version_latency", "template", "version", "latency_ms", "at_ms"),
        Index("ix_prompt_usage_latency", "template", "latency_ms", "at_ms"),
        Index(
            "ix_prompt_usage_failures",
            "template",
            "at_ms",
            "error_kind",
            sqlite_where=text("status = 'failure'"),
            postgresql_where=text("status = 'failure'"),
        ),
        Index(
            "ix_prompt_usage_outcomes",
            "template",
            "at_ms",
            "outcome",
            sqlite_where=text("outcome IS NOT NULL"),
            postgresql_where=text("outcome IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    template: Mapped[str] = mapped_column(String(100))
    version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    error_kind: Mapped[str | None] = mapped_column(String(40), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float)
    caller: Mapped[str] = mapped_column(String(200))
    at_ms: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str | None] = mapped_column(String(10), nullable=True)
    outcome_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class PromptUsageCount(Base):
    """Running call count per template, kept with each batch so listings need no scan."""

    __tablename__ = "prompt_usage_counts"

    template: Mapped[str] = mapped_column(String(100), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)


EVENTS: Table = PromptUsageEvent.__table__  # type: ignore[assignment]
COUNTS: Table = PromptUsageCount.__table__  # type: ignore[assignment]
_ready: set[str] = set()


def usage_engine(url: str) -> Engine:
    """The metadata engine with the usage tables created (once per URL and process)."""
    engine = engine_for(url)
    if url not in _ready:
        Base.metadata.create_all(engine, tables=[EVENTS, COUNTS])
        _ready.add(url)
    return engine


def new_event(
    template: str,
    version: int | None,
    error_kind: str | None,
    latency_ms: float,
    caller: str,
) -> dict[str, Any]:
    """An event row for one render (its `id` is the render id given to the caller)."""
    return {
        "id": os.urandom(16).hex(),
        "template": template,
        "version": version,
        "status": "failure" if error_kind else "success",
        "error_kind": error_kind,
        "latency_ms": latency_ms,
        "caller": caller,
        "at_ms": int(time.time() * 1000),
        "outcome": None,
        "outcome_detail": None,
        "outcome_at_ms": None,
    }


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert event rows (executemany) and add them to the per-template counts."""
    if not rows:
        return
    conn.execute(EVENTS.insert(), rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["template"]] = counts.get(row["template"], 0) + 1
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(COUNTS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["template"], set_={"calls": COUNTS.c.calls + stmt.excluded.calls}
    )
    conn.execute(stmt, [{"template": t, "calls": n} for t, n in counts.items()])


class UsageRecorder:
    """Buffers events and writes them in batches from a background thread.

    `record` only appends to a list. The writer thread runs while there is something to
    write and exits when idle; `flush` writes synchronously (reads call it first, so a
    process always sees its own events) and `close` runs at interpreter exit.
    """

    def __init__(self, url: str, interval_s: float = 0.5, batch: int = 2000) -> None:
        self.url = url
        self.interval_s = interval_s
        self.batch = batch
        self._buffer: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, event: dict[str, Any]) -> None:
        with self._cond:
            if len(self._buffer) >= MAX_BUFFER:
                log.error("Usage buffer full (%d events): dropping the oldest.", MAX_BUFFER)
                del self._buffer[0]
            self._buffer.append(event)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="prompt-usage-writer", daemon=True
                )
                self._thread.start()
            elif len(self._buffer) >= self.batch:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._buffer:
                    self._thread = None
                    return
                self._cond.wait(timeout=self.interval_s)
            try:
                self.flush()
            except Exception:
                log.exception("Writing usage events failed; they stay buffered for a retry.")
                with self._cond:
                    self._cond.wait(timeout=self.interval_s * 4)

    def flush(self) -> int:
        """Write every buffered event now; returns how many were written."""
        with self._write_lock:
            with self._cond:
                rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                with usage_engine(self.url).begin() as conn:
                    insert_events(conn, rows)
            except Exception:
                with self._cond:
                    self._buffer[:0] = rows
                raise
            return len(rows)

    def close(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("Could not write %d usage events at exit.", len(self._buffer))


_recorders: dict[str, UsageRecorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(url: str) -> UsageRecorder:
    """The process's recorder for a metadata database."""
    with _recorders_lock:
        if url not in _recorders:
            _recorders[url] = UsageRecorder(url)
        return _recorders[url]


@atexit.register
def flush_all() -> None:
    """Write every buffered event of every recorder (at exit and on API shutdown)."""
    for recorder in list(_recorders.values()):
        recorder.close()


def report_outcome(url: str, render_id: str, success: bool, detail: str) -> None:
    """Record the downstream outcome of one render, once: the UPDATE only matches a render
    whose outcome is still unset, so of concurrent reports exactly one is accepted. A render
    not found is looked for again after flushing this process's buffer (it may have just been
    recorded) before it is a 404."""
    values = {
        "outcome": "success" if success else "failure",
        "outcome_detail": detail,
        "outcome_at_ms": int(time.time() * 1000),
    }
    for _attempt in range(2):
        recorder_for(url).flush()
        with usage_engine(url).begin() as conn:
            updated = conn.execute(
                update(EVENTS)
                .where(EVENTS.c.id == render_id, EVENTS.c.outcome.is_(None))
                .values(**values)
            ).rowcount
            if updated == 1:
                return
            row = conn.execute(select(EVENTS.c.outcome).where(EVENTS.c.id == render_id)).first()
        if row is not None:
            raise ConflictError(
                f"The outcome of render {render_id} was already reported ({row.outcome}).",
                {"outcome": row.outcome},
            )
    raise NotFoundError(f"No render with id {render_id!r}.")


def call_counts(url: str) -> dict[str, int]:
    """Calls per template (from the running counts)."""
    recorder_for(url).flush()
    with usage_engine(url).connect() as conn:
        return {row.template: int(row.calls) for row in conn.execute(select(COUNTS))}
