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
    .venv/bin/python tests/benchmarks/bench_cluster.py --pipeline [--quick]

With --pipeline: the scale benchmark's 2M-row full ingest, a one-day batch and a 1M-row
dataset through the local profile and through the cluster profile's API, worker and Ray
head, in the same run (`pipeline`).
"""

from __future__ import annotations

import argparse
import json
import os
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


STEPS = ("load", "validate", "compute", "write_offline", "apply", "materialize", "statistics")


def pipeline(quick: bool) -> int:
    """The scale benchmark's pipeline in both profiles, one after the other in this run: a
    full ingest of 1,150 tickers x 7 years (about 2M bars), a one-day batch on top, and a
    point-in-time dataset of about 1M rows. Local: `mlops ingest --local` and `mlops
    datasets create` on SQLite and DuckDB in one process each. Cluster: the same commands
    against `running_cluster`; the ingest goes through the API to a flow run on the pool's
    worker (features on the Ray head), the dataset is built by the CLI process on the
    PostgreSQL registry. Wall time of each command, and the ingest's steps from its record."""
    import pandas as pd
    from bench_scale import TICKERS, child

    from mlops.features.ingest import latest_runs
    from mlops.settings import Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    days = 504 if quick else 1743  # 2 or about 7 years of trading days
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        print(f"generating {TICKERS} tickers x {days} days", file=sys.stderr)
        bars = child("prepare", str(TICKERS), str(days), str(data), env=env)["rows"]
        dates = pd.read_parquet(data / "history.parquet", columns=["date"])["date"]
        counts = dates.value_counts().sort_index(ascending=False).cumsum()
        half = min(bars // 2, 1_000_000)  # the last dates that hold about 1M rows
        start = pd.Timestamp(counts[counts >= half].index[0]).date().isoformat()

        def commands(run: Any) -> dict[str, tuple[float, Any]]:
            timed = {}
            for name, args in (
                ("full ingest", ["ingest", str(data / "history.parquet"), "--json"]),
                ("one-day batch", ["ingest", str(data / "day1.parquet"), "--json"]),
                ("dataset", ["datasets", "create", "big", "--start", start, "--json"]),
            ):
                started = time.perf_counter()
                out = run(*args)
                timed[name] = (time.perf_counter() - started, out)
            return timed

        local_home = Path(tmp) / "local"

        def local(*args: str) -> Any:
            command = [sys.executable, "-m", "mlops", *args]
            if args[0] == "ingest":
                command.append("--local")
            done = subprocess.run(
                command, capture_output=True, text=True, cwd=tmp,
                env={**env, "MLOPS_HOME": str(local_home), "MLOPS_PROFILE": "local"},
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr[-3000:]
            return json.JSONDecoder().raw_decode(done.stdout)[0]

        print("local profile", file=sys.stderr)
        here = commands(local)
        here_steps = [
            {s["step"]: s["seconds"] for s in run.steps}
            for run in reversed(latest_runs(Settings(home=local_home, profile="local"), 2))
        ]
        print("cluster profile", file=sys.stderr)
        # the profile's own threshold (the tests send every batch to Ray)
        threshold = str(Settings.model_fields["ray_compute_min_bars"].default)
        with running_cluster(
            Path(tmp) / "cluster", MLOPS_RAY_COMPUTE_MIN_BARS=threshold
        ) as cluster:

            def on_cluster(*args: str) -> Any:
                done = cluster.mlops(*args, timeout=1800)
                assert done.returncode == 0, done.stdout + done.stderr[-3000:]
                return json.JSONDecoder().raw_decode(done.stdout)[0]

            there = commands(on_cluster)
            records = cluster.get("/api/v1/ingests?limit=2")[::-1]
            there_steps = [{s["step"]: s["seconds"] for s in r["steps"]} for r in records]
            where = next(s.get("where") for s in records[0]["steps"] if s["step"] == "compute")
    for (name, (local_s, local_out)), (_, (cluster_s, cluster_out)) in zip(
        here.items(), there.items(), strict=True
    ):
        count = local_out["rows"]
        assert cluster_out["rows"] == count, (name, local_out, cluster_out)
        rows.append((name, count, local_s, cluster_s))

    print(f"\nThe pipeline in both profiles (2 cores; cluster compute: {where})")
    print("| command | rows | local s | cluster s | cluster / local |")
    print("| --- | --- | --- | --- | --- |")
    for name, count, local_s, cluster_s in rows:
        print(
            f"| {name} | {count:,} | {local_s:.2f} | {cluster_s:.2f} | {cluster_s / local_s:.1f}x |"
        )
    print("\nThe ingests' steps, s (local / cluster)")
    print("| batch | " + " | ".join(STEPS) + " |")
    print("| --- |" + " --- |" * len(STEPS))
    for name, a, b in zip(("full ingest", "one-day batch"), here_steps, there_steps, strict=True):
        cells = " | ".join(f"{a.get(s, 0):.2f} / {b.get(s, 0):.2f}" for s in STEPS)
        print(f"| {name} | {cells} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s of load instead of 60 s")
    parser.add_argument(
        "--ray-compute", action="store_true", help="the ingest's features on Ray vs here"
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="2M-row ingest, a day, 1M-row dataset: both profiles",
    )
    args = parser.parse_args()
    if args.ray_compute:
        return ray_compute(args.quick)
    if args.pipeline:
        return pipeline(args.quick)
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
