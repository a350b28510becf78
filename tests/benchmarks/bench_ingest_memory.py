"""Peak memory of loading and validating a CSV of daily bars (`load_bars` + `validate_bars`).

A script, not a pytest test. It writes seeded demo bars as a CSV of about ``--mb``
megabytes, then measures, in a fresh child process each time, the peak resident set size
(``ru_maxrss``) of: the imports alone (GX context built), and the imports plus loading and
validating the file. The difference is what the ingest gate costs for that file. The file is
written by a child process too: Linux carries a parent's peak RSS over into its children.

    .venv/bin/python tests/benchmarks/bench_ingest_memory.py --mb 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

CHILD = """
import json, resource, sys, time
from datetime import date
from pathlib import Path
import pandas as pd
from mlops.features import validation
validation.validate_bars(pd.DataFrame({"ticker": ["A"]}), "warm-up", today=date(2025, 1, 1))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seconds = 0.0
if sys.argv[1] != "-":
    started = time.perf_counter()
    frame = validation.load_bars(Path(sys.argv[1]), 4 * 1024**3)
    loaded = time.perf_counter() - started
    report = validation.validate_bars(frame, "bench", today=date(2025, 1, 1))
    assert report.success, validation.failure_message(report)
    seconds = time.perf_counter() - started
else:
    loaded = 0.0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024,
                  "load_s": loaded, "total_s": seconds}))
"""


def write_bars(path: Path, megabytes: float) -> int:
    """Demo bars (2018-2024) with enough tickers for about ``megabytes`` of CSV."""
    from mlops.features.demo_data import generate_ohlcv

    sample = generate_ohlcv(n_tickers=10, start=date(2018, 1, 2), end=date(2024, 12, 31))
    per_ticker = len(sample.to_csv(index=False)) / 10
    tickers = max(1, round(megabytes * 1e6 / per_ticker))
    bars = generate_ohlcv(n_tickers=tickers, start=date(2018, 1, 2), end=date(2024, 12, 31))
    bars.to_csv(path, index=False)
    return len(bars)


def measure(path: str) -> dict[str, float]:
    """Peak RSS and times of a fresh process loading and validating ``path`` ("-": none)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, path], check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def write_bars_in_child(path: Path, megabytes: float) -> int:
    """``write_bars`` in a child process, so this process's peak RSS stays small."""
    code = (
        "import sys, bench_ingest_memory as b; "
        "print(b.write_bars(b.Path(sys.argv[1]), float(sys.argv[2])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(megabytes)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    return int(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="Size of the CSV to write.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bars.csv"
        rows = write_bars_in_child(path, args.mb)
        size_mb = path.stat().st_size / 1e6
        idle = measure("-")
        run = measure(str(path))
    cost = run["peak_mb"] - idle["peak_mb"]
    print(f"file: {size_mb:.1f} MB, {rows} rows")
    print(f"peak RSS: imports {idle['peak_mb']:.0f} MB, with load+validate {run['peak_mb']:.0f} MB")
    print(f"load+validate cost: {cost:.0f} MB ({cost / size_mb:.1f}x the file)")
    print(f"time: load {run['load_s']:.1f} s, load+validate {run['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
