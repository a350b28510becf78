"""Usage analytics on SQLite: aggregates computed by the database match a Python reference;
buffered events are never lost; outcomes are recorded once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from tests.support.prompt_usage_data import T0, check_report, load_events, percentile_cont

from mlops.errors import ConflictError, InvalidInputError, NotFoundError
from mlops.prompts import analytics, usage
from mlops.settings import Settings


def test_report_matches_a_python_reference(settings: Settings) -> None:
    events = load_events(settings.metadata_url)
    report = analytics.usage_report(
        settings.metadata_url, "greet", T0, T0 + timedelta(days=1), "hour"
    )
    check_report(report, events)
    daily = analytics.usage_report(
        settings.metadata_url, "greet", T0, T0 + timedelta(days=2), "day"
    )
    assert [(b.start.hour, b.calls) for b in daily.series] == [(0, 51)]
    later = analytics.usage_report(
        settings.metadata_url, "greet", T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    )
    assert later.total.calls == 11 and [v.version for v in later.versions] == [2]
    assert usage.call_counts(settings.metadata_url) == {"greet": 51, "other": 1}


@pytest.mark.parametrize("count", [1, 2, 3, 4, 20, 101])
def test_percentiles_of_small_groups_match_percentile_cont(settings: Settings, count: int) -> None:
    import random

    rng = random.Random(count)
    events = [usage.new_event("t", 1, None, rng.uniform(0, 100), "x") for _ in range(count)]
    with usage.usage_engine(settings.metadata_url).begin() as conn:
        usage.insert_events(conn, events)
    report = analytics.usage_report(settings.metadata_url, "t")
    values = [e["latency_ms"] for e in events]
    for q, got in ((0.5, report.total.latency_p50_ms), (0.95, report.total.latency_p95_ms)):
        assert got == pytest.approx(percentile_cont(values, q), abs=1e-3)
    assert report.versions[0].latency_p95_ms == report.total.latency_p95_ms


def test_an_empty_range_reports_zero_calls(settings: Settings) -> None:
    report = analytics.usage_report(settings.metadata_url, "greet", T0, T0 + timedelta(hours=1))
    assert report.total.calls == 0 and report.total.latency_p50_ms is None
    assert report.series == [] and report.versions == []


@pytest.mark.parametrize(
    ("start", "end", "bucket", "message"),
    [
        (T0, T0, "hour", "must start before"),
        (T0, T0 + timedelta(days=365), "hour", "over the limit"),
    ],
)
def test_bad_ranges_are_refused(
    settings: Settings, start: object, end: object, bucket: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        analytics.usage_report(settings.metadata_url, "greet", start, end, bucket)  # type: ignore[arg-type]


def test_buffered_events_are_all_written(settings: Settings) -> None:
    recorder = usage.UsageRecorder(settings.metadata_url, interval_s=0.05, batch=100)

    def produce(worker: int) -> None:
        for _ in range(500):
            recorder.record(usage.new_event(f"t{worker % 2}", 1, None, 0.1, "x"))

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    assert usage.call_counts(settings.metadata_url) == {"t0": 1000, "t1": 1000}
    with usage.usage_engine(settings.metadata_url).connect() as conn:
        assert len(conn.execute(usage.EVENTS.select()).all()) == 2000


def test_outcomes_are_reported_once_by_render_id(settings: Settings) -> None:
    recorder = usage.recorder_for(settings.metadata_url)
    event = usage.new_event("greet", 1, None, 1.0, "tester")
    recorder.record(event)
    usage.report_outcome(settings.metadata_url, event["id"], False, "model call timed out")
    with pytest.raises(ConflictError, match="already reported"):
        usage.report_outcome(settings.metadata_url, event["id"], True, "")
    with pytest.raises(NotFoundError):
        usage.report_outcome(settings.metadata_url, "0" * 32, True, "")
    report = analytics.usage_report(settings.metadata_url, "greet")
    assert report.outcomes == {"failure": 1} and report.total.calls == 1


def test_concurrent_outcome_reports_of_one_render_exactly_one_accepted(settings: Settings) -> None:
    recorder = usage.recorder_for(settings.metadata_url)
    event = usage.new_event("greet", 1, None, 1.0, "tester")
    recorder.record(event)
    barrier = threading.Barrier(12)
    results: list[str] = []

    def report(i: int) -> None:
        barrier.wait()
        try:
            usage.report_outcome(settings.metadata_url, event["id"], i % 2 == 0, f"thread {i}")
            results.append("accepted")
        except ConflictError:
            results.append("conflict")
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            results.append(repr(exc))

    threads = [threading.Thread(target=report, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["accepted"] + ["conflict"] * 11
    report_ = analytics.usage_report(settings.metadata_url, "greet")
    assert sum(report_.outcomes.values()) == 1
