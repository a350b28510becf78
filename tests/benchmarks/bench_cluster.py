"""The cluster profile on this machine: API read throughput with one and two API worker
processes, and how long a deployment takes through the work pool; with --ray-compute, the
ingest's feature computation as Ray tasks against the same computation in one process.

The servers are the cluster tests' (`tests/support/cluster.py`: Prefect on PostgreSQL
with Redis messaging, the MLflow tracking server on PostgreSQL, one `mlops worker`), seeded
by `mlops demo`. The load is wrk (Debian's `wrk` package): 50 connections for 60 s (15 s
with --quick) on a read mix of the API's list and detail pages, with the bootstrap admin's token. wrk
runs on the same 2 cores as the API, as the design's 245 req/s figure was measured.

    .venv/bin/python tests/benchmarks/bench_cluster.py [--quick]
    .venv/bin/python tests/benchmarks/bench_cluster.py --ray-compute [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.cluster import TOKEN, Cluster, running_cluster  # noqa: E402

READ_MIX = (
    "/api/v1/features",
    "/api/v1/features/rsi_14",
    "/api/v1/feature-views",
    "/api/v1/ml/models",
    "/api/v1/ml/models/direction-model",
    "/api/v1/ml/experiments",
    "/api/v1/ml/deployments",
    "/api/v1/ingests",
    "/api/v1/evaluation/benchmarks",
    "/api/v1/me",
)
"""What a console user or a script reads most: one path after the other, per connection."""

WRK_SCRIPT = """
local paths = {%(paths)s}
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1], {["Authorization"] = "Bearer %(token)s"})
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format('{"requests": %%d, "seconds": %%f, "errors": %%d, "p50": %%f, "p95": %%f, "p99": %%f}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


def _load(cluster: Cluster, seconds: int, connections: int = 50) -> dict[str, Any]:
    """wrk's summary of `seconds` of the read mix: requests, errors, latency percentiles."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    paths = ", ".join(f'"{p}"' for p in READ_MIX)
    script.write_text(WRK_SCRIPT % {"paths": paths, "token": TOKEN})
    for path in READ_MIX:  # every path answers 200 before the load starts
        cluster.get(path)
    result = subprocess.run(
        [
            "wrk",
            f"-t{2}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            cluster.api,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    script.unlink()
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / summary["seconds"]
    return summary


def _api_with(cluster: Cluster, workers: int) -> None:
    if "api" in cluster.processes:
        cluster.stop_process("api")
    cluster.env["MLOPS_API_WORKERS"] = str(workers)
    cluster.start_api()
    for path in READ_MIX:  # each worker warms up on its first requests
        for _ in range(workers * 3):
            cluster.get(path)


def _deploy_seconds(cluster: Cluster, runs: int) -> list[float]:
    """Wall time of a staging deployment through the API, submitted to the pool, until its
    record ends."""
    versions = [v["version"] for v in cluster.get("/api/v1/ml/models/direction-model")["versions"]]
    seconds = []
    for i in range(runs):
        started = time.perf_counter()
        answer = cluster.post(
            "/api/v1/ml/models/direction-model/deploy",
            {"version": versions[i % len(versions)], "target_stage": "staging"},
        )
        assert answer.status_code == 202, answer.text
        record = cluster.wait_record(answer.json()["status_url"])
        assert record["status"] == "succeeded", record["error"]
        seconds.append(time.perf_counter() - started)
    return seconds


def _timed(work: Any, reps: int) -> tuple[float, Any]:
    """The median wall time of `reps` runs of `work`, and its last result."""
    times, result = [], None
    for _ in range(reps):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def ray_compute(quick: bool) -> int:
    """The compute step of a full ingest (1,150 tickers, ~2M bars) and of a one-day batch
    (one new bar per ticker on top of its 20 stored ones), in this process
    (`compute_frames`, the floor) and as Ray tasks on a head started as `mlops up` starts
    it (`compute_frames_on_ray`, one task per CPU); the results are checked equal."""
    import os

    import pandas as pd
    from tests.support.ports import free_ports

    from mlops import services
    from mlops.features.compute import LOOKBACK, STATE_COLUMNS, compute_frames
    from mlops.features.compute_ray import compute_frames_on_ray
    from mlops.features.demo_data import generate_ohlcv
    from mlops.features.offline_changes import as_bars, sorted_bars
    from mlops.ray_cluster import head_environment
    from mlops.settings import Settings

    years, reps = (2, 1) if quick else (7, 3)
    with tempfile.TemporaryDirectory() as tmp:
        port, client = free_ports(2)
        settings = Settings(
            home=Path(tmp), profile="local", compute_engine="ray", ray_port=port,
            ray_client_port=client,
        )  # fmt: skip
        settings.ensure_dirs()
        os.environ.update(head_environment(settings, services.own_ray_address(settings)))
        head = services._start(settings, "ray", *services._commands(settings)["ray"])
        try:
            services.wait_healthy(head)
            start = pd.Timestamp("2018-01-02")
            end = start + pd.DateOffset(years=years)
            raw = generate_ohlcv(n_tickers=1150, start=start.date(), end=end.date(), seed=11)
            bars = sorted_bars(as_bars(raw))
            compute_frames_on_ray(settings, bars.iloc[:1000], None)  # connect, warm workers
            rows = []
            local, expected = _timed(lambda: compute_frames(bars), reps)
            on_ray, got = _timed(lambda: compute_frames_on_ray(settings, bars, None), reps)
            pd.testing.assert_frame_equal(got[0], expected[0], check_exact=True)
            rows.append(("full ingest", len(bars), local, on_ray))

            last_day = bars["date"].max()
            day = bars[bars["date"] == last_day]
            history = bars[(bars["date"] < last_day) & bars["ticker"].isin(day["ticker"])]
            features, _ = expected
            stored = features[
                (features["event_timestamp"].dt.tz_localize(None) < last_day)
                & features["ticker"].isin(day["ticker"])
            ]
            context = history.groupby("ticker").tail(LOOKBACK).reset_index(drop=True)
            state = stored.groupby("ticker").tail(LOOKBACK).reset_index(drop=True)
            context[list(STATE_COLUMNS)] = state[list(STATE_COLUMNS)].to_numpy()
            day_reps = max(reps, 5)
            local, expected = _timed(lambda: compute_frames(day, context), day_reps)
            on_ray, got = _timed(lambda: compute_frames_on_ray(settings, day, context), day_reps)
            pd.testing.assert_frame_equal(got[0], expected[0], check_exact=True)
            rows.append(("one-day batch", len(day) + len(context), local, on_ray))
        finally:
            services.stop_children([head])
            shutil.rmtree(Path(tempfile.gettempdir()) / f"mlops-ray-{port}", True)

    print(f"\nFeature computation of an ingest, median of {reps}+ runs (2 cores, 2 Ray tasks)")
    print("| batch | bars in | one process s | Ray tasks s | Ray / one process |")
    print("| --- | --- | --- | --- | --- |")
    for name, count, local_s, ray_s in rows:
        print(f"| {name} | {count:,} | {local_s:.2f} | {ray_s:.2f} | {ray_s / local_s:.1f}x |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s of load instead of 60 s")
    parser.add_argument(
        "--ray-compute", action="store_true", help="the ingest's features on Ray vs here"
    )
    args = parser.parse_args()
    if args.ray_compute:
        return ray_compute(args.quick)
    if shutil.which("wrk") is None:
        print("bench_cluster needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    seconds = 15 if args.quick else 60
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        demo = cluster.mlops("demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        rows = []
        for workers in (1, 2):
            _api_with(cluster, workers)
            rows.append((workers, _load(cluster, seconds)))
        deploys = _deploy_seconds(cluster, 1 if args.quick else 3)

    print(f"\nAPI read mix, 50 connections, {seconds} s (wrk on the same 2 cores)")
    print("| API workers | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for workers, r in rows:
        print(
            f"| {workers} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} "
            f"| {r['errors']} |"
        )
    ratio = rows[1][1]["rps"] / rows[0][1]["rps"]
    print(f"\n2 workers / 1 worker: {ratio:.2f}x the requests per second")
    print(
        f"\nStaging deployment through the work pool (submit -> record ended), "
        f"{len(deploys)} runs: median {statistics.median(deploys):.1f} s "
        f"(each a new flow-run process on the worker)"
    )
    errors = sum(r["errors"] for _, r in rows)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
