"""A fixed set of usage events and the figures any correct aggregation must report, shared by
the SQLite (unit) and PostgreSQL (production) usage tests."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from typing import Any

import pytest

from mlops.prompts.models import UsageReport
from mlops.prompts.usage import insert_events, usage_engine

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR_MS = 3_600_000


def percentile_cont(values: list[float], q: float) -> float:
    """percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def make_events() -> list[dict[str, Any]]:
    """v1: 30 events in hour 0 (5 failures); v2: 21 events in hours 1-2 (1 failure)."""
    base = int(T0.timestamp() * 1000)
    events = []
    for i in range(51):
        version = 1 if i < 30 else 2
        failed = (version == 1 and i % 6 == 0) or i == 40
        events.append(
            {
                "id": f"{i:032x}",
                "template": "greet",
                "version": version,
                "status": "failure" if failed else "success",
                "error_kind": ("missing_variable" if i % 12 == 0 else "timeout")
                if failed
                else None,
                "latency_ms": float((i * 37) % 101) / 10,
                "caller": "tester",
                "at_ms": base + (0 if version == 1 else HOUR_MS * (1 + i % 2)) + i * 1000,
                "outcome": None,
                "outcome_detail": None,
                "outcome_at_ms": None,
            }
        )
    events.append({**events[0], "id": "f" * 32, "template": "other"})
    return events


def load_events(url: str) -> list[dict[str, Any]]:
    events = make_events()
    with usage_engine(url).begin() as conn:
        insert_events(conn, events)
    return events


def check_report(report: UsageReport, events: list[dict[str, Any]]) -> None:
    """The report matches the events computed by hand in Python."""
    mine = [e for e in events if e["template"] == "greet"]
    latencies = [e["latency_ms"] for e in mine]
    assert report.total.calls == 51 and report.total.successes == 45
    assert report.total.success_rate == pytest.approx(45 / 51, abs=1e-6)
    assert report.total.latency_p50_ms == pytest.approx(statistics.median(latencies), abs=1e-3)
    assert report.total.latency_p95_ms == pytest.approx(percentile_cont(latencies, 0.95), abs=1e-3)
    assert report.failures_by_kind == {"missing_variable": 3, "timeout": 3}
    by_version = {v.version: v for v in report.versions}
    for version in (1, 2):
        values = [e["latency_ms"] for e in mine if e["version"] == version]
        assert by_version[version].calls == len(values)
        assert by_version[version].latency_p95_ms == pytest.approx(
            percentile_cont(values, 0.95), abs=1e-3
        )
    assert [(b.start, b.calls) for b in report.series] == [
        (T0, 30),
        (T0.replace(hour=11), 11),
        (T0.replace(hour=12), 10),
    ]
