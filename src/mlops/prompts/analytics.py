"""Usage analytics of one template, computed by the database: GROUP BY for counts, success
rates, failures and time buckets; latency percentiles with `percentile_cont` on PostgreSQL
and, on SQLite, ordered-offset queries over a covering latency index (no sort)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mlops.errors import InvalidInputError
from mlops.prompts.models import Bucket, UsageBucket, UsageGroup, UsageReport, VersionUsage
from mlops.prompts.usage import recorder_for, usage_engine

BUCKET_MS = {"hour": 3_600_000, "day": 86_400_000}
MAX_BUCKETS = 2000

_RANGE = "template = :template AND at_ms >= :start AND at_ms < :end"
_TOTAL = -1
"""Group key of the all-versions row in the percentile queries."""

_PG_STATS = f"""
SELECT version AS k, COUNT(*) AS n, SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS ok,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
FROM prompt_usage_events WHERE {_RANGE} GROUP BY version
UNION ALL
SELECT {_TOTAL}, COUNT(*), SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
FROM prompt_usage_events WHERE {_RANGE} HAVING COUNT(*) > 0
"""

_COUNTS = f"""
SELECT version AS k, COUNT(*) AS n, SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS ok
FROM prompt_usage_events WHERE {_RANGE} GROUP BY version
"""

# The k-th and (k+1)-th latency in order, read from an index already ordered by latency.
# Read from whichever end of the index is nearer, so p95 scans 5% of the rows, not 95%.
_SQLITE_NTH_OF_VERSION = f"""
SELECT latency_ms FROM prompt_usage_events INDEXED BY ix_prompt_usage_version_latency
WHERE {_RANGE} AND version = :version ORDER BY latency_ms {{order}} LIMIT 2 OFFSET :offset
"""
_SQLITE_NTH = f"""
SELECT latency_ms FROM prompt_usage_events INDEXED BY ix_prompt_usage_latency
WHERE {_RANGE} ORDER BY latency_ms {{order}} LIMIT 2 OFFSET :offset
"""

_SERIES = f"""
SELECT (at_ms / :size) * :size AS k, COUNT(*) AS n,
       SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END) AS ok, AVG(latency_ms) AS mean
FROM prompt_usage_events WHERE {_RANGE} GROUP BY 1 ORDER BY 1
"""


class _StatsRow(NamedTuple):
    k: int
    n: int
    ok: int
    p50: float | None
    p95: float | None


def _group(row: Any) -> UsageGroup:
    return UsageGroup(
        calls=int(row.n),
        successes=int(row.ok),
        success_rate=round(int(row.ok) / int(row.n), 6),
        latency_p50_ms=None if row.p50 is None else round(float(row.p50), 4),
        latency_p95_ms=None if row.p95 is None else round(float(row.p95), 4),
    )


def _version_stats(
    conn: Connection, params: dict[str, Any]
) -> tuple[UsageGroup | None, list[VersionUsage]]:
    """The all-versions group and one group per version, with latency percentiles."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(text(_PG_STATS), params).all()
    else:
        rows = _sqlite_stats(conn, params)
    total = next((_group(r) for r in rows if r.k == _TOTAL), None)
    versions = sorted(
        (VersionUsage(version=int(r.k), **_group(r).model_dump()) for r in rows if r.k != _TOTAL),
        key=lambda v: v.version,
    )
    return total, versions


def _sqlite_percentile(
    conn: Connection, params: dict[str, Any], version: int | None, n: int, q: float
) -> float:
    """percentile_cont(q) on SQLite: interpolate between the two rows at offset (n-1)*q."""
    position = (n - 1) * q
    low_rank = int(position)
    high_rank = min(low_rank + 1, n - 1)
    sql = _SQLITE_NTH if version is None else _SQLITE_NTH_OF_VERSION
    ascending = low_rank <= n // 2
    if ascending:
        sql, offset = sql.format(order="ASC"), low_rank
    else:
        sql, offset = sql.format(order="DESC"), n - 1 - high_rank
    args = {**params, "version": version, "offset": offset}
    found = [float(v) for v in conn.execute(text(sql), args).scalars()]
    by_rank = dict(zip(range(offset, offset + 2), found, strict=False))
    if not ascending:
        by_rank = {n - 1 - rank: value for rank, value in by_rank.items()}
    low = by_rank[low_rank]
    high = by_rank.get(high_rank, low)
    return low + (high - low) * (position - low_rank)


def _sqlite_stats(conn: Connection, params: dict[str, Any]) -> list[Any]:
    counts = conn.execute(text(_COUNTS), params).all()
    groups = [(int(r.k), int(r.n), int(r.ok)) for r in counts if r.k is not None]
    if groups:
        groups.append((_TOTAL, sum(g[1] for g in groups), sum(g[2] for g in groups)))
    rows = []
    for key, n, ok in groups:
        version = None if key == _TOTAL else key
        p50 = _sqlite_percentile(conn, params, version, n, 0.5)
        p95 = _sqlite_percentile(conn, params, version, n, 0.95)
        rows.append(_StatsRow(k=key, n=n, ok=ok, p50=p50, p95=p95))
    return rows


def _series(conn: Connection, size: int, params: dict[str, Any]) -> list[UsageBucket]:
    rows = conn.execute(text(_SERIES), {**params, "size": size}).all()
    return [
        UsageBucket(
            start=_ms_to_datetime(int(r.k)),
            calls=int(r.n),
            successes=int(r.ok),
            success_rate=round(int(r.ok) / int(r.n), 6),
            latency_mean_ms=round(float(r.mean), 4),
        )
        for r in rows
    ]


def _counts_by(conn: Connection, column: str, where: str, params: dict[str, Any]) -> dict[str, int]:
    sql = (
        f"SELECT {column} AS k, COUNT(*) AS n FROM prompt_usage_events "
        "WHERE template = :template AND at_ms >= :start AND at_ms < :end "
        f"AND {where} GROUP BY {column}"
    )
    return {str(row.k): int(row.n) for row in conn.execute(text(sql), params)}


def _time_range(
    start: datetime | None, end: datetime | None, bucket: Bucket
) -> tuple[datetime, datetime]:
    end = (end or datetime.now(UTC)).astimezone(UTC)
    start = (start or end - timedelta(days=7)).astimezone(UTC)
    if start >= end:
        raise InvalidInputError("The usage range must start before it ends.")
    buckets = (end - start) / timedelta(milliseconds=BUCKET_MS[bucket])
    if buckets > MAX_BUCKETS:
        raise InvalidInputError(
            f"{int(buckets)} {bucket} buckets is over the limit of {MAX_BUCKETS}: "
            "shorten the range or use a larger bucket."
        )
    return start, end


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def usage_report(
    url: str,
    name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket: Bucket = "hour",
) -> UsageReport:
    """Usage of one template over [start, end) (default: the last 7 days): calls, success
    rate, failures by kind, outcomes and latency p50/p95 overall and per version; calls,
    success rate and mean latency per time bucket."""
    start, end = _time_range(start, end, bucket)
    recorder_for(url).flush()
    params = {
        "template": name,
        "start": int(start.timestamp() * 1000),
        "end": int(end.timestamp() * 1000),
    }
    empty = UsageGroup(
        calls=0, successes=0, success_rate=None, latency_p50_ms=None, latency_p95_ms=None
    )
    with usage_engine(url).connect() as conn:
        total, versions = _version_stats(conn, params)
        series = _series(conn, BUCKET_MS[bucket], params)
        failures = _counts_by(conn, "error_kind", "status = 'failure'", params)
        outcomes = _counts_by(conn, "outcome", "outcome IS NOT NULL", params)
    return UsageReport(
        name=name,
        start=start,
        end=end,
        bucket=bucket,
        total=total or empty,
        failures_by_kind=failures,
        outcomes=outcomes,
        versions=versions,
        series=series,
    )
