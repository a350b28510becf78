"""Statistics-step benchmark: `store_statistics` after a full ingest and after daily batches.

Run:  .venv/bin/python tests/benchmarks/bench_statistics.py --tickers 115    (~200k rows)
      .venv/bin/python tests/benchmarks/bench_statistics.py --tickers 1150   (~2M rows)

Not a pytest test. A temporary state folder gets `--tickers` demo tickers over
2018-01-02..2024-12-31 through `full_rebuild` (no Prefect, no validation: only the offline
store and the statistics are measured), the repository's definitions are applied, and then
`--days` one-day batches are written with `plan_change` + `write_offline`. For the full
store and after each batch it times `store_statistics` (the median of `--repeat` runs) and
the write of the batch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

from mlops.features import ingest, offline_changes
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import exclusive_write
from mlops.features.offline_state import open_snapshot
from mlops.settings import Settings

START, END = date(2018, 1, 2), date(2024, 12, 31)


def median_seconds(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_statistics(settings: Settings, repeat: int) -> float:
    """The statistics step as the ingest flow runs it, on the current snapshot."""
    snapshot = open_snapshot(settings)
    return median_seconds(lambda: ingest.store_statistics(settings, snapshot), repeat)


def run(tickers: int, days: int, repeat: int, home: Path) -> list[tuple[str, int, float, float]]:
    """(what, rows written, write seconds, statistics seconds) of the rebuild and each batch."""
    settings = Settings(home=home, profile="local", demo_tickers=tickers)
    settings.ensure_dirs()
    bars = generate_ohlcv(n_tickers=tickers, start=START, end=date(2025, 1, 31), seed=7)
    history = bars[bars["date"] <= str(END)]
    batches = [day for _, day in bars[bars["date"] > str(END)].groupby("date")][:days]
    started = time.perf_counter()
    with exclusive_write(settings):
        offline_changes.full_rebuild(settings, history)
    rebuild = time.perf_counter() - started
    ingest.apply_definitions(settings, "bench", "bench")
    rows = [("full store", len(history), rebuild, time_statistics(settings, repeat))]
    for batch in batches:
        started = time.perf_counter()
        with exclusive_write(settings):
            ingest.write_offline(settings, ingest.plan_change(settings, batch))
        write = time.perf_counter() - started
        day = str(batch["date"].iloc[0].date())
        rows.append((f"batch {day}", len(batch), write, time_statistics(settings, repeat)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickers", type=int, default=115)
    parser.add_argument("--days", type=int, default=3, help="one-day batches after the rebuild")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-statistics-"))
    try:
        rows = run(args.tickers, args.days, args.repeat, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n{args.tickers} tickers, {START}..{END}\n")
    print("| what | rows | write s | store_statistics s |")
    print("|---|---|---|---|")
    for what, n, write, stats in rows:
        print(f"| {what} | {n:,} | {write:.3f} | {stats:.3f} |")


if __name__ == "__main__":
    main()
