"""Feature pipeline at the scale of an equity universe: full ingests of 200k, 2M and 5M
rows and one-day batches on each history, step by step, with peak memory and the floors.

Run:  .venv/bin/python tests/benchmarks/bench_scale.py            (200k, 2M, 5M; 3 reps)
      .venv/bin/python tests/benchmarks/bench_scale.py --quick    (50k, 200k; 1 rep)

After the ingests it runs `bench_datasets.py` (point-in-time datasets of 100k and 1M entity
rows next to bare Feast and the DuckDB ASOF floor) and `bench_online.py` (online reads next
to Feast in-process) and prints their tables.

Not a pytest test. The universe is 1,150 seeded demo tickers; the histories differ in
length (about 0.7, 7 and 17 years), so every one-day batch is the same 1,150 rows. Each
ingest runs the real Prefect flow in a child process of its own (its peak RSS is that
child's `ru_maxrss`; Linux carries a parent's peak into a child, so this driver stays
small), against one Prefect server started for the run. Then `mlops api` serves the
folder and two more days go through `mlops ingest`, which hands them to the API's warm
ingest process: the targets are for that path (the platform's when it runs); a fresh
process per day (`--local`, or a flow run spawned by a Prefect worker) is shown beside it.
Prints markdown tables; exits 0 even when a target fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from bench_features import log, md_table

HERE = Path(__file__).resolve().parent
TICKERS = 1150
STEPS = ("load", "validate", "compute", "write_offline", "apply", "materialize", "statistics")

CHILD = r"""
import json, os, resource, sys, time
from datetime import date, timedelta
from pathlib import Path

mode, args = sys.argv[1], sys.argv[2:]

def settings_for(home):
    from mlops.settings import Settings
    return Settings(home=Path(home), profile="local")

if mode == "prepare":  # bars of TICKERS tickers over `days` trading days, and 3 more days
    from mlops.features.demo_data import generate_ohlcv
    tickers, days, out = int(args[0]), int(args[1]), Path(args[2])
    end = date(2024, 12, 31)
    start = end - timedelta(days=int(days * 365.25 / 252) + 7)
    bars = generate_ohlcv(n_tickers=tickers * 3 // 2, start=start, end=end + timedelta(days=7))
    import pandas as pd
    end = pd.Timestamp(end)
    # a universe filter, as real ones have: over 17 years about a quarter of the random
    # walks fall below $5, some to a few cents, where one tick is a 2x move that the
    # ingest gate refuses; the universe is the first TICKERS tickers that stay above $5
    lowest = bars.groupby("ticker", sort=False)["close"].min()
    bars = bars[bars["ticker"].isin(lowest[lowest >= 5.0].index[:tickers])]
    dates = sorted(bars["date"].unique())
    extra = [d for d in dates if d > end][:4]
    bars[bars["date"] <= end].to_parquet(out / "history.parquet", index=False)
    for number, day in enumerate(extra, 1):
        bars[bars["date"] == day].to_parquet(out / f"day{number}.parquet", index=False)
    print(json.dumps({"rows": int((bars["date"] <= end).sum())}))

elif mode == "ingest":  # the ingest flow in this process; its steps and this peak RSS
    from flows.ingest import ingest_flow
    from mlops.features.ingest import latest_runs
    settings = settings_for(args[0])
    started = time.perf_counter()
    ingest_flow(source=args[1], author="bench", message="bench", settings=settings)
    wall = time.perf_counter() - started
    steps = {s["step"]: s["seconds"] for s in latest_runs(settings, limit=1)[0].steps}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps": steps, "wall": wall, "peak_mb": peak}))

elif mode == "floor":  # what a one-day batch needs, as plain DuckDB + numpy, and the compute
    import duckdb, numpy as np, pandas as pd
    from mlops.features.compute import compute_frames
    history, day = args[0], args[1]
    started = time.perf_counter()
    with duckdb.connect() as con:
        last = con.execute(
            "SELECT * FROM read_parquet(?) QUALIFY row_number() OVER "
            "(PARTITION BY ticker ORDER BY date DESC) <= 21", [history]).df()
    batch = pd.read_parquet(day)
    frame = pd.concat([last, batch], ignore_index=True)
    compute_frames(frame)
    day_floor = time.perf_counter() - started
    bars = pd.read_parquet(history)
    started = time.perf_counter()
    compute_frames(bars)
    compute_s = time.perf_counter() - started
    print(json.dumps({"day_floor": day_floor, "compute_floor": compute_s}))
"""


def child(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run CHILD in a fresh process; its JSON line and its peak RSS (from wait4)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=HERE.parents[1],
    )
    out, err = process.communicate()
    if process.returncode:
        raise RuntimeError(f"child {args[0]} failed:\n{err.decode()[-3000:]}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


MLOPS = Path(sys.executable).parent / "mlops"


def cli_ingest(home: Path, path: Path, env: dict[str, str], *options: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the whole `mlops ingest` command."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(MLOPS), "ingest", str(path), "--json", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env, "MLOPS_HOME": str(home), "MLOPS_PROFILE": "local"},
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status:
        raise RuntimeError(f"mlops ingest failed: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
    return wall, usage.ru_maxrss / 1024


@contextlib.contextmanager
def platform_api(home: Path, env: dict[str, str]) -> Iterator[str]:
    """`mlops api` serving ``home`` (on the run's Prefect server) until the block ends; its
    URL once it answers, as `mlops ingest` finds it (run/api.json)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = subprocess.Popen(
        [str(MLOPS), "api", "--port", str(port)],
        env={**env, "MLOPS_HOME": str(home), "MLOPS_PROFILE": "local"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, token = f"http://127.0.0.1:{port}", (home / "api_token")
    deadline = time.monotonic() + 180
    try:
        while not (home / "run" / "api.json").exists() or not _answers(url, token):
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError("`mlops api` did not start")
            time.sleep(0.2)
        yield url
    finally:
        api.terminate()
        api.wait(timeout=60)


def _answers(url: str, token: Path) -> bool:
    try:
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        return httpx.get(f"{url}/api/v1/ingests", headers=headers, timeout=2).status_code == 200
    except (OSError, httpx.HTTPError):
        return False


def api_ingest(home: Path, url: str, path: Path, env: dict[str, str]) -> dict[str, Any]:
    """`mlops ingest` handing a batch to the API: the command's wall time and the steps of
    the run (in the API's warm ingest process), from the run's record."""
    wall, _ = cli_ingest(home, path, env)
    headers = {"Authorization": f"Bearer {(home / 'api_token').read_text().strip()}"}
    (run,) = httpx.get(f"{url}/api/v1/ingests?limit=1", headers=headers, timeout=10).json()
    if run["status"] != "completed":
        raise RuntimeError(f"ingest through the API ended {run['status']}: {run['error']}")
    return {"steps": {s["step"]: s["seconds"] for s in run["steps"]}, "process": wall}


def sub_benchmark(script: str, quick: bool) -> str:
    """The report of another benchmark of this folder (point-in-time datasets next to bare
    Feast and the ASOF floor; online reads next to Feast in-process)."""
    command = [sys.executable, str(HERE / script), *(["--quick"] if quick else [])]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else f"{script} failed:\n{out.stderr[-3000:]}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_size(tmp: Path, rows_target: int, reps: int, env: dict[str, str]) -> dict[str, Any]:
    days = max(30, round(rows_target / TICKERS))
    data = tmp / f"data-{rows_target}"
    data.mkdir()
    log(f"{rows_target:,} rows: generating {TICKERS} tickers x {days} days")
    rows = child("prepare", str(TICKERS), str(days), str(data), env=env)["rows"]
    fulls, dailies, processes, firsts, warm = [], [], [], [], []
    for rep in range(reps):
        home = tmp / f"home-{rows_target}-{rep}"
        log(f"{rows:,} rows, rep {rep + 1}/{reps}: full ingest")
        fulls.append(child("ingest", str(home), str(data / "history.parquet"), env=env))
        log(f"{rows:,} rows, rep {rep + 1}/{reps}: one-day batch (flow), `mlops ingest --local`")
        dailies.append(child("ingest", str(home), str(data / "day1.parquet"), env=env))
        processes.append(cli_ingest(home, data / "day2.parquet", env, "--local"))
        log(f"{rows:,} rows, rep {rep + 1}/{reps}: `mlops api`, two days through it")
        with platform_api(home, env) as url:
            firsts.append(api_ingest(home, url, data / "day3.parquet", env))
            warm.append(api_ingest(home, url, data / "day4.parquet", env))
        shutil.rmtree(home, ignore_errors=True)
    floor = child("floor", str(data / "history.parquet"), str(data / "day1.parquet"), env=env)
    shutil.rmtree(data, ignore_errors=True)
    return {
        "rows": rows,
        "full": fulls,
        "daily": dailies,
        "process": processes,
        "api_first": firsts,
        "api": warm,
        "floor": floor,
    }


def step_medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {s: median([r["steps"].get(s, 0.0) for r in runs]) for s in STEPS}


def report(results: list[dict[str, Any]]) -> None:
    rows = []
    kinds = {
        "full": "full ingest",
        "daily": "+ 1 day, fresh process",
        "api_first": "+ 1 day, API (first after start)",
        "api": "+ 1 day, API",
    }
    for result in results:
        for kind, what in kinds.items():
            steps = step_medians(result[kind])
            total = sum(steps.values())
            peaks = [r["peak_mb"] for r in result[kind] if "peak_mb" in r]
            peak = f"{median(peaks):.0f}" if peaks else ""
            label = f"{result['rows']:,} {what}"
            rows.append([label, *(f"{steps[s]:.2f}" for s in STEPS), f"{total:.2f}", peak])
    print("#### Ingest steps, seconds (median), and peak RSS of the flow's process (MB)\n")
    print(md_table(["history", *STEPS, "sum", "peak MB"], rows))

    print("\n#### Targets\n")
    targets = []
    sums = {r["rows"]: sum(step_medians(r["api"]).values()) for r in results}
    for result in results:
        n = result["rows"]
        day = sums[n]
        floor = result["floor"]["day_floor"]
        process = median([r["process"] for r in result["api"]])
        fresh = sum(step_medians(result["daily"]).values())
        local = median([p[0] for p in result["process"]])
        targets.append(
            [
                f"one day on {n:,}: steps (API)",
                f"{day:.2f} s",
                f"{floor:.2f} s",
                f"{day / floor:.1f}x",
                _verdict(day <= 1.5, "<= 1.5 s"),
            ]
        )
        targets.append(
            [
                f"one day on {n:,}: `mlops ingest` process (API)",
                f"{process:.2f} s",
                "",
                "",
                _verdict(process <= 5, "<= 5 s"),
            ]
        )
        targets.append(
            [f"one day on {n:,}: steps, fresh process", f"{fresh:.2f} s", "", "", "reference"]
        )
        targets.append(
            [
                f"one day on {n:,}: `mlops ingest --local` process",
                f"{local:.2f} s",
                "",
                "",
                "reference",
            ]
        )
        full = step_medians(result["full"])
        full_sum = sum(full.values())
        peak = median([r["peak_mb"] for r in result["full"]])
        compute_floor = result["floor"]["compute_floor"]
        budget, memory = (25, 2048) if n > 3_000_000 else (10, 1024)
        targets.append(
            [
                f"full ingest of {n:,}: steps",
                f"{full_sum:.2f} s",
                f"compute {compute_floor:.2f} s",
                f"{full['compute'] / compute_floor:.1f}x (compute)",
                _verdict(full_sum <= budget, f"<= {budget} s"),
            ]
        )
        targets.append(
            [
                f"full ingest of {n:,}: peak RSS",
                f"{peak:.0f} MB",
                "",
                "",
                _verdict(peak <= memory, f"<= {memory} MB"),
            ]
        )
        targets.append(
            [
                f"materialize after full ingest of {n:,}",
                f"{full['materialize']:.2f} s",
                "",
                "",
                _verdict(full["materialize"] <= 1, "<= 1 s"),
            ]
        )
    spread = max(sums.values()) / min(sums.values())
    targets.append(
        [
            "one-day batch, largest / smallest history",
            f"{spread:.2f}x",
            "",
            "",
            _verdict(spread <= 1.5, "<= 1.5x"),
        ]
    )
    print(md_table(["work", "measured", "floor", "ratio", "target"], targets))


def _verdict(ok: bool, target: str) -> str:
    return f"{target}: {'PASS' if ok else 'FAIL'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k and 200k rows, 1 rep")
    parser.add_argument(
        "--sizes", help="comma-separated row counts (default 200000,2000000,5000000)"
    )
    parser.add_argument("--reps", type=int, help="repetitions per size (default 3; quick 1)")
    parser.add_argument(
        "--ingest-only", action="store_true", help="skip bench_datasets.py and bench_online.py"
    )
    args = parser.parse_args()
    sizes = [50_000, 200_000] if args.quick else [200_000, 2_000_000, 5_000_000]
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    reps = args.reps or (1 if args.quick else 3)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-scale-"))
    from mlops import prefect_server
    from mlops.settings import Settings

    server = prefect_server.start(Settings(home=tmp / "driver", profile="local"))
    server.wait_until_ready()
    env = {
        **os.environ,
        "PREFECT_API_URL": server.url,
        "MLOPS_PREFECT_API_URL": server.url,
        "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        results = [run_size(tmp, size, reps, env) for size in sizes]
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    for script in () if args.ingest_only else ("bench_datasets.py", "bench_online.py"):
        log(f"running {script}{' --quick' if args.quick else ''}")
        print(f"\n### {script}\n")
        print(sub_benchmark(script, args.quick))
    print(f"\nTotal benchmark run time: {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
