"""Time and peak memory of the ingest gate (`validate_bars`) next to the same checks in SQL.

A script, not a pytest test. Seeded demo bars (``--tickers`` x 2018-2024; 1,150 tickers
are 2,026,300 rows) are written as parquet by a child process, then each measurement runs
in a fresh child process that reads them and warms GX up first (Linux carries a parent's
peak RSS over into its children):

- ``validate_bars`` on all rows (a full ingest), no neighbours;
- ``validate_bars`` on the last day (one bar per ticker) with the previous day as
  neighbours (a daily ingest);
- the floor: the same checks as DuckDB SQL over the same frame, both sizes.

Peak RSS is ``ru_maxrss``; "above the frame" is what the step adds to the process once the
bars are loaded.

    .venv/bin/python tests/benchmarks/bench_validation.py            # ~1 min
    .venv/bin/python tests/benchmarks/bench_validation.py --tickers 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
import pandas as pd
import bench_validation as bench
bars = pd.read_parquet(sys.argv[1])
what, size = sys.argv[2], sys.argv[3]
batch, neighbours = bench.batch_of(bars, size)
bench.validate(batch.iloc[:100], neighbours)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run = bench.validate if what == "gx" else bench.sql_checks
best, cpu = float("inf"), float("inf")
for _ in range(3):
    started, used = time.perf_counter(), time.process_time()
    failed = run(batch, neighbours)
    best = min(best, time.perf_counter() - started)
    cpu = min(cpu, time.process_time() - used)
assert not failed, failed
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": len(batch), "seconds": best, "cpu": cpu, "base_mb": base / 1024,
                  "peak_mb": peak / 1024}))
"""

SQL = """
WITH bars AS (
    SELECT *, true AS in_batch FROM batch
    UNION ALL BY NAME
    SELECT ticker, date, close, false AS in_batch FROM neighbours
), moves AS (
    SELECT in_batch, close, LAG(close) OVER w AS before, LEAD(close) OVER w AS after,
           LEAD(in_batch) OVER w AS after_in_batch
    FROM bars WINDOW w AS (PARTITION BY ticker ORDER BY date)
)
SELECT
    (SELECT count(*) FROM batch) = 0,
    (SELECT count(*) FROM batch WHERE ticker IS NULL OR date IS NULL
        OR NOT regexp_full_match(ticker, '[A-Z][A-Z0-9.\\-]{0,9}')
        OR date >= current_date + 1 OR date < DATE '1970-01-01'
        OR open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR volume IS NULL
        OR open <= 0 OR high <= 0 OR low <= 0 OR close <= 0 OR volume < 0
        OR high < low OR high < open OR high < close OR open < low OR close < low),
    (SELECT count(*) FROM (SELECT ticker, date FROM batch GROUP BY ALL HAVING count(*) > 1)),
    (SELECT count(*) FROM moves WHERE in_batch AND (
        greatest(close / before, before / close) >= 2
        OR (NOT after_in_batch AND greatest(close / after, after / close) >= 2)))
"""


def batch_of(bars, size: str):  # type: ignore[no-untyped-def]
    """All bars and no neighbours, or the last day with the day before as neighbours."""
    if size == "full":
        return bars, None
    days = bars["date"].drop_duplicates().nlargest(2)
    batch = bars[bars["date"] == days.iloc[0]].reset_index(drop=True)
    return batch, bars[bars["date"] == days.iloc[1]].reset_index(drop=True)


def validate(batch, neighbours) -> list[str]:  # type: ignore[no-untyped-def]
    from datetime import date

    from mlops.features import validation

    context = () if neighbours is None else (neighbours,)  # also runs on older versions
    report = validation.validate_bars(batch, "bench", *context, today=date.today())
    return [f.description for f in report.failures] + report.skipped


def sql_checks(batch, neighbours) -> list[str]:  # type: ignore[no-untyped-def]
    """The gate's checks as one DuckDB query over the frames (no copy into DuckDB)."""
    import duckdb

    if neighbours is None:
        neighbours = batch.iloc[:0]
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.register("batch", batch)
    con.register("neighbours", neighbours)
    columns = [name for name, *_ in con.execute("DESCRIBE batch").fetchall()]
    counts = con.execute(SQL).fetchone()
    con.close()
    failed = (
        ["columns"]
        if columns != ["ticker", "date", "open", "high", "low", "close", "volume"]
        else []
    )
    return failed + [str(c) for c in counts or () if c]


def write_bars(path: Path, tickers: int) -> int:
    from datetime import date

    from mlops.features.demo_data import generate_ohlcv

    bars = generate_ohlcv(n_tickers=tickers, start=date(2018, 1, 2), end=date(2024, 12, 31))
    bars.to_parquet(path, index=False)
    return len(bars)


def in_child(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    return out.stdout.strip().splitlines()[-1]


WRITE = (
    "import sys, bench_validation as b; print(b.write_bars(b.Path(sys.argv[1]), int(sys.argv[2])))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=1150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bars.parquet"
        rows = int(in_child(WRITE, str(path), str(args.tickers)))
        print(f"{rows:,} rows of demo bars ({args.tickers} tickers, 2018-2024)\n")
        print(
            "| batch | rows | validate_bars s (CPU s) | DuckDB SQL floor s (CPU s) "
            "| peak RSS MB | above the frame MB |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for size, label in (("full", "full ingest"), ("day", "one day + neighbours")):
            gx = json.loads(in_child(CHILD, str(path), "gx", size))
            sql = json.loads(in_child(CHILD, str(path), "sql", size))
            print(
                f"| {label} | {gx['rows']:,} | {gx['seconds']:.3f} ({gx['cpu']:.2f}) "
                f"| {sql['seconds']:.3f} ({sql['cpu']:.2f}) "
                f"| {gx['peak_mb']:.0f} | {gx['peak_mb'] - gx['base_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
