"""Feature-store benchmark: the platform's API next to the bare Feast SDK, at scale.

Run:  .venv/bin/python tests/benchmarks/bench_features.py           (full: ~2M rows, ~500 features)
      .venv/bin/python tests/benchmarks/bench_features.py --quick   (smoke run, ~10x smaller)
      .venv/bin/python tests/benchmarks/bench_features.py --only detail   (one latency row)

Not a pytest test. Everything happens in a temporary state folder that is deleted at
the end (pass --keep to keep it). Prints markdown tables and exits 0 even when a target
fails (failures are shown as FAIL rows).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for `flows.ingest`

from mlops.features.compute import FEATURE_COLUMNS  # noqa: E402  (after sys.path)
from mlops.features.datasets import LABEL_REF  # noqa: E402

SERVICE = "model_features"
OPERATIONS = ("list", "detail", "online", "dataset")
DETAIL_USE_CASE = "catalog.feature_detail (in-process)"
REQUEST_FLOOR = "request floor: GET of an unknown path (404)"
# Issue targets of platform p95 / bare p95; other rows keep the older 1.3.
RATIO_TARGETS = {"GET /features/{name}": 1.5, DETAIL_USE_CASE: 1.5}
LATENCY_HEADERS = [
    "operation",
    "n",
    "platform p50",
    "platform p95",
    "bare p50",
    "bare p95",
    "ratio p95",
    "latency target",
    "overhead target",
]


# --------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def once(fn: Callable[[int], Any], i: int) -> float:
    """Milliseconds of one call fn(i)."""
    started = time.perf_counter()
    fn(i)
    return (time.perf_counter() - started) * 1000


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    text = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in text)])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cli_startup_seconds(runs: int) -> list[float]:
    """Wall seconds of `mlops --help` as a subprocess, once per run."""
    mlops_bin = Path(sys.executable).parent / "mlops"
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(mlops_bin), "--help"], capture_output=True, check=True)
        seconds.append(time.perf_counter() - started)
    return seconds


@contextlib.contextmanager
def api_server(settings: Any) -> Iterator[Any]:
    """An httpx client of the API served by uvicorn in a process of its own on loopback:
    what a caller of the API pays, without the TestClient's hand-offs between threads."""
    import httpx
    import psutil

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLOPS_HOME": str(settings.home), "MLOPS_PROFILE": settings.profile}
    command = [sys.executable, "-m", "uvicorn", "mlops.app:create_app", "--factory"]
    server = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"], env=env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 120
        while not _answers(client) and time.monotonic() < deadline:
            time.sleep(0.2)
        _wait_until_idle(psutil.Process(server.pid), deadline)
        yield client
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=30)


def _wait_until_idle(process: Any, deadline: float) -> None:
    """Until the server's warm-up thread (imports of MLflow, skops, GX) is done."""
    while time.monotonic() < deadline and process.cpu_percent(interval=1.0) > 5:
        log("waiting for the API server's warm-up")


def _answers(client: Any) -> bool:
    import httpx

    try:
        return bool(client.get("/healthz").status_code == 200)
    except httpx.TransportError:
        return False


# ------------------------------------------------------------------ feature repo copy


def generated_repo_text(real_text: str, n_views: int, revision: int) -> str:
    """The real features.py plus `n_views` generated views over the real feature columns.

    Each generated view reuses the 8 real columns of `daily_features` (a Feast field must
    name a column of its source). `revision` only changes descriptions and tags, so every
    revision after the first is a metadata-only version of each generated view.
    """
    lines = [real_text, "", "# ---- generated by tests/benchmarks/bench_features.py ----"]
    for v in range(n_views):
        fields = ",\n        ".join(
            f'Field(name="{c}", dtype=Float64, description="{c} (bench view {v}, rev {revision})")'
            for c in FEATURE_COLUMNS
        )
        lines.append(
            f"""
bench_view_{v:03d} = FeatureView(
    name="bench_view_{v:03d}",
    entities=[ticker],
    ttl=timedelta(days=7),
    schema=[
        {fields},
    ],
    source=daily_features_source,
    online=False,
    description="Benchmark view {v}, revision {revision}.",
    owner=OWNER,
    tags={{"team": "bench", "family": "bench-{v % 7}", "revision": "{revision}"}},
)"""
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def main() -> int:
    with contextlib.ExitStack() as stack:  # the API server, stopped however the run ends
        return _run(stack)


def _run(stack: contextlib.ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10x smaller smoke run")
    parser.add_argument("--tickers", type=int, help="override the number of demo tickers")
    parser.add_argument("--views", type=int, help="override the number of generated views")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    parser.add_argument(
        "--only",
        choices=OPERATIONS,
        help="measure only this operation (no other latency rows, no CLI start-up)",
    )
    args = parser.parse_args()

    quick = args.quick
    n_tickers = args.tickers or (115 if quick else 1150)
    demo_start, demo_end = date(2018, 1, 2), date(2024, 12, 31)  # ~7 years, ~1760 trading days
    n_views = args.views or (7 if quick else 63)  # x 8 features = 56 / 504 generated features
    n_revisions = 10  # edits applied after the first apply: 11 versions per generated view
    reps = 20 if quick else 100
    ds_reps = 3
    online_tickers = 100 if n_tickers >= 100 else n_tickers
    ds_tickers, ds_days = (10, 1000) if quick else (100, 1000)  # 10k / 100k rows

    t_total = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    home = tmp / "home"

    from mlops.settings import Settings

    settings = Settings(
        home=home,
        profile="local",
        demo_tickers=n_tickers,
        demo_start=demo_start,
        demo_end=demo_end,
    )
    settings.ensure_dirs()
    # Prefect state under the temp folder, quiet logs; set before Prefect is imported.
    os.environ.update(settings.prefect_environment(use_server=False))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # ibis/feast noise

    import pandas as pd
    from flows.ingest import ingest_flow
    from prefect.testing.utilities import prefect_test_harness

    from mlops.features import catalog
    from mlops.features import ingest as steps
    from mlops.features.offline_state import open_snapshot
    from mlops.features.store import open_store

    report: list[str] = []

    # ------------------------------------------------------------------ 1. ingest
    log(f"ingest: {n_tickers} tickers {demo_start}..{demo_end} through the Prefect flow")
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        harness_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints materialize progress
            result = ingest_flow(
                source="demo", author="bench", message="bench load", settings=settings
            )
        flow_wall = time.perf_counter() - t1
        run = steps.latest_runs(settings)[0]
    rows = result.rows
    step_rows = [[s["step"], f"{s['seconds']:.2f}", s["status"]] for s in run.steps]
    step_sum = sum(s["seconds"] for s in run.steps)
    log(f"ingested {rows} rows in {flow_wall:.1f}s")

    # ---------------------------------------------------- 2. 500 features x 11 versions
    repo_dir = tmp / "feature_repo"
    repo_dir.mkdir()
    real_text = (settings.feature_repo_dir / "features.py").read_text()
    bench_settings = settings.model_copy(update={"feature_repo_dir": repo_dir})
    apply_secs = []
    for revision in range(n_revisions + 1):
        (repo_dir / "features.py").write_text(generated_repo_text(real_text, n_views, revision))
        t = time.perf_counter()
        infos = steps.apply_definitions(bench_settings, "bench", f"revision {revision}")
        apply_secs.append(time.perf_counter() - t)
        log(f"apply revision {revision}: {len(infos)} versions in {apply_secs[-1]:.1f}s")
    snapshot = open_snapshot(settings)
    assert snapshot is not None
    t = time.perf_counter()
    n_stats = steps.store_statistics(settings, snapshot)
    stats_secs = time.perf_counter() - t
    features = snapshot.read(steps.FEATURES_FILE, ["ticker", "event_timestamp"])
    all_tickers = sorted(features["ticker"].unique().tolist())
    all_days = sorted(features["event_timestamp"].unique())
    del features
    log(f"statistics of {n_stats} features stored in {stats_secs:.1f}s")

    store = open_store(settings)
    views = store.list_feature_views()
    n_features = sum(len(v.features) for v in views)
    n_views_total = len(views)
    from sqlalchemy import func, select

    from mlops.db import FeatureViewVersion, session_scope

    with session_scope(settings.metadata_url) as session:
        n_versions = session.scalar(select(func.count()).select_from(FeatureViewVersion))
        max_versions = session.scalar(
            select(func.max(FeatureViewVersion.version)).where(
                FeatureViewVersion.view_name.like("bench_view_%")
            )
        )

    # ------------------------------------------------------------- 3. measurements
    client = stack.enter_context(api_server(settings))
    auth = {"Authorization": f"Bearer {settings.token}"}
    online = all_tickers[:online_tickers]
    detail_names = [f"bench_view_{v % n_views:03d}:{FEATURE_COLUMNS[v % 8]}" for v in range(97)]

    def check(resp: Any, code: int = 200) -> Any:
        if resp.status_code != code:
            raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    # list
    def api_list(i: int) -> None:
        check(client.get("/api/v1/features", params={"page_size": 50, "page": 1 + abs(i) % 10}))

    def bare_list(i: int) -> None:
        flat = [
            {
                "name": f.name,
                "feature_view": v.name,
                "dtype": str(f.dtype),
                "description": f.description,
                "tags": {**v.tags, **f.tags},
                "owner": v.owner,
                "online": bool(v.online),
            }
            for v in sorted(store.list_feature_views(), key=lambda v: v.name)
            for f in v.features
        ]
        first = (abs(i) % 10) * 50
        _ = flat[first : first + 50]

    # detail
    def api_detail(i: int) -> None:
        body = check(client.get(f"/api/v1/features/{detail_names[abs(i) % len(detail_names)]}"))
        assert body["statistics"] is not None, "no statistics stored"

    def bare_detail(i: int) -> None:
        view_name, _, feature = detail_names[abs(i) % len(detail_names)].partition(":")
        view = store.get_feature_view(view_name)
        field = next(f for f in view.features if f.name == feature)
        _ = {
            "name": field.name,
            "dtype": str(field.dtype),
            "description": field.description,
            "view_description": view.description,
            "tags": {**view.tags, **field.tags},
            "owner": view.owner,
            "entities": list(view.entities),
            "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else 0,
        }

    def usecase_detail(i: int) -> None:
        detail = catalog.feature_detail(settings, detail_names[abs(i) % len(detail_names)])
        assert detail.statistics is not None, "no statistics stored"

    def request_floor(i: int) -> None:
        check(client.get(f"/api/v1/no-such-path-{abs(i) % 97}"), 404)

    # online
    online_param = ",".join(online)

    def api_online(i: int) -> None:
        body = check(
            client.get(
                "/api/v1/online-features",
                params={"tickers": online_param, "feature_service": SERVICE},
            )
        )
        assert len(body["ticker"]) == len(online)

    def bare_online(i: int) -> None:
        out = store.get_online_features(
            features=store.get_feature_service(SERVICE),
            entity_rows=[{"ticker": t} for t in online],
        ).to_dict()
        assert len(out["ticker"]) == len(online)

    # dataset
    ds_tick = all_tickers[:ds_tickers]
    ds_start = pd.Timestamp(all_days[-ds_days]).date()
    ds_end = pd.Timestamp(all_days[-1]).date()
    ds_rows: list[int] = []

    def api_dataset(i: int) -> None:
        body = check(
            client.post(
                "/api/v1/datasets",
                headers=auth,
                json={
                    "name": f"bench_ds_{i + 10}",
                    "feature_service": SERVICE,
                    "tickers": ds_tick,
                    "start": ds_start.isoformat(),
                    "end": ds_end.isoformat(),
                    "include_label": True,
                },
            ),
            201,
        )
        ds_rows.append(body["rows"])

    service = store.get_feature_service(SERVICE)
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    bars_path = snapshot.glob(steps.BARS_FILE)
    bare_rows: list[int] = []

    def bare_dataset(i: int) -> None:
        import duckdb

        entity_df = duckdb.execute(
            f"SELECT ticker, date FROM read_parquet('{bars_path}', hive_partitioning = false) "
            "WHERE ticker IN (SELECT unnest(?)) AND date >= ? AND date <= ? ORDER BY ticker, date",
            [ds_tick, pd.Timestamp(ds_start).to_pydatetime(), pd.Timestamp(ds_end).to_pydatetime()],
        ).df()
        entity_df["event_timestamp"] = pd.to_datetime(entity_df.pop("date")).dt.tz_localize("UTC")
        frame = store.get_historical_features(
            entity_df=entity_df, features=[*refs, LABEL_REF]
        ).to_df()
        frame.to_parquet(tmp / f"bare_{i + 10}.parquet", index=False)
        bare_rows.append(len(frame))

    wanted = {args.only} if args.only else set(OPERATIONS)
    measured: dict[str, tuple[list[float], list[float]]] = {}
    for operation, label, api_fn, bare_fn, n in [
        ("list", "GET /features (page_size 50)", api_list, bare_list, reps),
        ("detail", "GET /features/{name}", api_detail, bare_detail, reps),
        ("detail", DETAIL_USE_CASE, usecase_detail, bare_detail, reps),
        ("detail", REQUEST_FLOOR, request_floor, bare_detail, reps),
        ("online", f"GET /online-features ({len(online)} tickers)", api_online, bare_online, reps),
    ]:
        if operation not in wanted:
            continue
        log(f"measuring {label} x{n}")
        # Interleave platform and bare runs so both see the same registry-cache refreshes.
        a, b = [], []
        for _ in range(2):
            api_fn(-1)
            bare_fn(-1)
        for i in range(n):
            a.append(once(api_fn, i))
            b.append(once(bare_fn, i))
        measured[label] = (a, b)

    if "dataset" in wanted:
        log(f"measuring POST /datasets x{ds_reps}")
        a, b = [], []
        api_dataset(-2)  # warm-up (not measured)
        bare_dataset(-2)
        for i in range(ds_reps):
            a.append(once(api_dataset, i))
            b.append(once(bare_dataset, i))
        measured[f"POST /datasets ({ds_rows[-1]:,} rows)"] = (a, b)

    # ------------------------------------------------------------ 4. mlops --help
    help_secs = [] if args.only else cli_startup_seconds(runs=5)

    # ----------------------------------------------------------------- report
    mode = "quick (--quick)" if quick else "full"
    report.append(f"## Feature store benchmark ({mode})\n")
    report.append(
        f"Catalog: {rows:,} offline rows ({n_tickers} demo tickers x {len(all_days)} trading days, "
        f"{demo_start}..{demo_end}); {n_views_total} feature views / {n_features} features in "
        f"Feast ({n_views} generated views x 8 features reusing the 8 real columns of "
        f"`daily_features`, plus the 4 real views); {n_versions} version rows, generated views "
        f"at v{max_versions} (1 created + {n_revisions} metadata-only edits via "
        f"`apply_definitions`); {n_stats} feature statistics stored. Repetitions: {reps} per "
        f"read endpoint (interleaved platform/bare, 2 warm-ups), {ds_reps} per dataset "
        f"(1 warm-up). Platform = the app served by uvicorn in a process of its own on "
        f"loopback (`mlops.app:create_app`, warm-up awaited), an httpx client with keep-alive; "
        f"bare = Feast SDK `FeatureStore` of the same state folder, in this process. The "
        f"use-case row calls what the endpoint calls, in this process, without HTTP; the "
        f"request-floor row is a 404 through the same server (HTTP, middleware, routing, "
        f"error handler): what any request costs before a lookup.\n"
    )

    result_rows = []
    for label, (a, b) in measured.items():
        is_ds = label.startswith("POST")
        ap50, ap95 = percentile(a, 0.5), percentile(a, 0.95)
        bp50, bp95 = percentile(b, 0.5), percentile(b, 0.95)
        ratio = ap95 / bp95 if bp95 else float("inf")
        limit_ms = 3000.0 if is_ds else 100.0
        target = "p95 < 3 s" if is_ds else "p95 < 100 ms"
        lat_ok = ap95 < limit_ms
        ratio_limit = RATIO_TARGETS.get(label, 1.3)
        ratio_ok = ratio <= ratio_limit
        result_rows.append(
            [
                label,
                len(a),
                f"{ap50:.1f}",
                f"{ap95:.1f}",
                f"{bp50:.1f}",
                f"{bp95:.1f}",
                f"{ratio:.2f}",
                f"{target}: {'PASS' if lat_ok else 'FAIL'}",
                "- (the app's cost without any lookup)"
                if label == REQUEST_FLOOR
                else f"ratio <= {ratio_limit}: {'PASS' if ratio_ok else 'FAIL'}",
            ]
        )
    report.append("### Latency: platform vs bare Feast SDK (ms)\n")
    report.append(
        md_table(
            LATENCY_HEADERS,
            result_rows,
        )
    )
    if ds_rows:
        report.append(
            f"\nDataset rows: platform {ds_rows[-1]:,}, bare {bare_rows[-1]:,} "
            f"({ds_tickers} tickers x {ds_start}..{ds_end}; model_features + label; bare = "
            "duckdb entity rows + get_historical_features().to_df() + to_parquet).\n"
        )
    if help_secs:
        help_median = statistics.median(help_secs)
        report.append("### CLI start-up\n")
        report.append(
            md_table(
                ["command", "runs", "median s", "min s", "target"],
                [
                    [
                        "mlops --help",
                        len(help_secs),
                        f"{help_median:.2f}",
                        f"{min(help_secs):.2f}",
                        f"< 0.5 s: {'PASS' if help_median < 0.5 else 'FAIL'}",
                    ]
                ],
            )
        )
    report.append("\n### Ingest through the Prefect flow `ingest_flow` (one run)\n")
    step_rows.append(["sum of steps", f"{step_sum:.2f}", ""])
    step_rows.append(
        ["Prefect overhead (flow wall - sum of steps)", f"{flow_wall - step_sum:.2f}", ""]
    )
    step_rows.append(["flow wall time (caller side)", f"{flow_wall:.2f}", ""])
    step_rows.append(["flow wall time (IngestRun.wall_seconds)", f"{run.wall_seconds:.2f}", ""])
    report.append(md_table(["step", "seconds", "status"], step_rows))
    report.append(
        f"\nNot part of the flow: Prefect test-harness start {harness_start:.1f} s; "
        f"{n_revisions + 1} applies of the generated repository "
        f"{sum(apply_secs):.1f} s (first {apply_secs[0]:.1f} s, then median "
        f"{statistics.median(apply_secs[1:]):.1f} s); statistics of {n_stats} features "
        f"{stats_secs:.1f} s.\n"
    )
    total = time.perf_counter() - t_total
    report.append(f"Total benchmark run time: {total:.0f} s.")
    print("\n".join(report), flush=True)

    stack.close()  # before its state folder goes
    if args.keep:
        log(f"state kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
