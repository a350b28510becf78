"""Point-in-time datasets: the platform next to bare Feast and the plain DuckDB ASOF JOIN floor.

Run:  .venv/bin/python tests/benchmarks/bench_datasets.py           (full: 2M rows; 100k and 1M)
      .venv/bin/python tests/benchmarks/bench_datasets.py --quick   (smoke run: 200k; 10k, 100k)

Not a pytest test. The demo bars are ingested into a temporary state folder through the
ingest flow (as `bench_features.py` does), then each dataset size is built the three ways,
in the same process, `reps` times each (medians):

- platform: `create_dataset` (the `model_features` service and the label over the first
  tickers, all days), i.e. Feast with our offline store, streamed to the dataset's file;
- bare Feast: the same entity rows as a DataFrame, Feast with its own DuckDB offline store,
  `get_historical_features(...).to_df()` and `to_parquet`;
- floor: one hand-written DuckDB ASOF JOIN of the same rows (ttl included) into a parquet
  file. The floor's file is checked to hold exactly the platform's rows and values.

Peak RSS is the highest resident memory sampled during a call, over the RSS before it;
retained is what stays after it. `dataset_rows(settings, sizes, reps)` returns the table
rows for other benchmarks (`bench_scale.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for `flows.ingest` and the sibling benchmark

from tests.benchmarks.bench_features import log, md_table  # noqa: E402  (after sys.path)

from mlops.features.datasets import LABEL_REF, DatasetRequest, create_dataset  # noqa: E402
from mlops.settings import Settings  # noqa: E402

SERVICE = "model_features"
HEADERS = [
    "entity rows",
    "way",
    "median s",
    "runs",
    "x floor",
    "peak RSS MB",
    "retained MB",
    "target",
]
TARGET_X_FLOOR = 3.0


@contextlib.contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Sample this process's RSS every 10 ms while the block runs: peak and retained MB
    over the RSS before it."""
    import psutil

    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak.append(max(peak[-1], process.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        gc.collect()
        after = process.memory_info().rss
        result["peak_mb"] = (max(max(peak), after) - before) / 2**20
        result["retained_mb"] = (after - before) / 2**20


def measured(fn: Callable[[int], object], reps: int) -> tuple[list[float], float, float]:
    """Seconds of each of `reps` calls; the highest peak and retained RSS (MB)."""
    secs, peaks, kept = [], [], []
    for i in range(reps):
        with peak_rss() as memory:
            started = time.perf_counter()
            fn(i)
            secs.append(time.perf_counter() - started)
        peaks.append(memory["peak_mb"])
        kept.append(memory["retained_mb"])
    return secs, max(peaks), max(kept)


def _tickers_for(settings: Settings, rows: int) -> list[str]:
    """The first tickers whose bars add up to at least `rows` entity rows."""
    from mlops.features.offline_state import open_snapshot

    snapshot = open_snapshot(settings)
    assert snapshot is not None, "nothing ingested"
    index = snapshot.tickers().sort_values("ticker")
    count = int(index["bars"].cumsum().searchsorted(rows)) + 1
    return index["ticker"].iloc[:count].tolist()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def floor_query(settings: Settings, tickers: list[str], days: int = 7) -> str:
    """The whole dataset as one DuckDB query: entity rows from the bars, one ASOF JOIN for
    the features and one for the label, each value null past the views' ttl (`days`)."""
    from mlops.features.compute import FEATURE_COLUMNS, LABEL_COLUMN
    from mlops.features.offline import BARS_FILE, FEATURES_FILE, LABELS_FILE
    from mlops.features.offline_state import open_snapshot

    snapshot = open_snapshot(settings)
    assert snapshot is not None
    glob = {name: _literal(snapshot.glob(name)) for name in (BARS_FILE, FEATURES_FILE, LABELS_FILE)}
    ttl = f"INTERVAL {days} DAY"
    features = ", ".join(
        f"CASE WHEN f.t + {ttl} >= e.event_timestamp THEN f.{c} END AS {c}" for c in FEATURE_COLUMNS
    )
    label = f"CASE WHEN l.t + {ttl} >= e.event_timestamp THEN l.{LABEL_COLUMN} END"
    wanted = ", ".join(map(_literal, tickers))
    columns = ", ".join(FEATURE_COLUMNS)
    return f"""
        SELECT e.ticker, e.event_timestamp, {features}, {label} AS {LABEL_COLUMN}
        FROM (SELECT ticker, CAST(date AS TIMESTAMPTZ) AS event_timestamp
              FROM read_parquet({glob[BARS_FILE]}, hive_partitioning = false)
              WHERE ticker IN ({wanted})) AS e
        ASOF LEFT JOIN (SELECT ticker, {columns}, CAST(event_timestamp AS TIMESTAMPTZ) AS t
                        FROM read_parquet({glob[FEATURES_FILE]}, hive_partitioning = false)) AS f
          ON e.ticker = f.ticker AND e.event_timestamp >= f.t
        ASOF LEFT JOIN (SELECT ticker, {LABEL_COLUMN}, CAST(event_timestamp AS TIMESTAMPTZ) AS t
                        FROM read_parquet({glob[LABELS_FILE]}, hive_partitioning = false)) AS l
          ON e.ticker = l.ticker AND e.event_timestamp >= l.t
        ORDER BY e.ticker, e.event_timestamp"""


def _feast_duckdb_store(settings: Settings) -> Any:
    """A `FeatureStore` on the same registry with Feast's own DuckDB offline store."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from mlops.features.store import feature_store_config

    config = RepoConfig(**{**feature_store_config(settings), "offline_store": {"type": "duckdb"}})
    config.repo_path = settings.feast_dir
    return FeatureStore(repo_path=str(settings.feast_dir), config=config)


def _same_rows(first: Path, second: Path) -> bool:
    from mlops.features.offline import utc_connection

    with utc_connection() as connection:
        a, b = (f"read_parquet({_literal(str(p))})" for p in (first, second))
        differ = connection.execute(
            f"SELECT count(*) FROM ((FROM {a} EXCEPT ALL FROM {b}) UNION ALL "
            f"(FROM {b} EXCEPT ALL FROM {a}))"
        ).fetchone()
    return differ is not None and differ[0] == 0


def dataset_rows(settings: Settings, sizes: list[int], reps: int = 3) -> list[list[Any]]:
    """Table rows (see HEADERS): for each size, the floor, the platform and bare Feast."""
    import pandas as pd

    from mlops.features.offline import utc_connection
    from mlops.features.store import open_store

    service = open_store(settings).get_feature_service(SERVICE)
    refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
    bare = _feast_duckdb_store(settings)
    out = Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    rows: list[list[Any]] = []
    try:
        for size in sizes:
            tickers = _tickers_for(settings, size)
            query = floor_query(settings, tickers)
            tag = f"{size}-{time.time_ns()}"

            def floor(i: int, query: str = query, tag: str = tag) -> None:
                target = _literal(str(out / f"floor-{tag}-{i}.parquet"))
                with utc_connection() as connection:
                    connection.execute(f"COPY ({query}) TO {target} (FORMAT parquet)")

            def platform(i: int, tickers: list[str] = tickers, tag: str = tag) -> None:
                request = DatasetRequest(
                    name=f"bench-{tag}-{i}", feature_service=SERVICE, tickers=tickers
                )
                create_dataset(settings, request, "bench")

            def feast(i: int, query: str = query, tag: str = tag) -> None:
                with utc_connection() as connection:
                    entity_df = connection.execute(
                        f"SELECT ticker, event_timestamp FROM ({query})"
                    ).df()
                frame = bare.get_historical_features(
                    entity_df=entity_df, features=[*refs, LABEL_REF]
                ).to_df()
                frame.to_parquet(out / f"feast-{tag}-{i}.parquet", index=False)

            log(f"{size:,} entity rows ({len(tickers)} tickers): floor, platform, bare Feast")
            ways = [("floor", floor), ("platform", platform), ("bare Feast", feast)]
            results = {name: measured(fn, reps) for name, fn in ways}
            identical = _same_rows(
                out / f"floor-{tag}-0.parquet", settings.datasets_dir / f"bench-{tag}-0.parquet"
            )
            n_rows = pd.read_parquet(out / f"floor-{tag}-0.parquet", columns=["ticker"]).shape[0]
            floor_s = statistics.median(results["floor"][0])
            bare_s = statistics.median(results["bare Feast"][0])
            for name, (secs, peak, kept) in results.items():
                median = statistics.median(secs)
                target = ""
                if name == "platform":
                    ok = median <= TARGET_X_FLOOR * floor_s and median < bare_s and identical
                    target = (
                        f"<= {TARGET_X_FLOOR:g}x floor, < bare, rows identical to the floor: "
                        f"{'PASS' if ok else 'FAIL'}"
                    )
                rows.append(
                    [
                        f"{n_rows:,}",
                        name,
                        f"{median:.2f}",
                        len(secs),
                        f"{median / floor_s:.2f}",
                        f"{peak:.0f}",
                        f"{kept:.0f}",
                        target,
                    ]
                )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return rows


def ingest_demo(settings: Settings) -> float:
    """The demo bars through the ingest flow (as `bench_features.py`); its seconds."""
    os.environ.update(settings.prefect_environment(use_server=False))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.ingest import ingest_flow
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints materialize progress
            ingest_flow(source="demo", author="bench", message="bench load", settings=settings)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="115 tickers; 10k and 100k rows")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # ibis/feast noise

    n_tickers = 115 if args.quick else 1150
    sizes = [10_000, 100_000] if args.quick else [100_000, 1_000_000]
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-datasets-"))
    settings = Settings(
        home=tmp / "home",
        profile="local",
        demo_tickers=n_tickers,
        demo_start=date(2018, 1, 2),
        demo_end=date(2024, 12, 31),
    )
    settings.ensure_dirs()
    started = time.perf_counter()
    log(f"ingest: {n_tickers} tickers 2018-01-02..2024-12-31 through the ingest flow")
    ingest_secs = ingest_demo(settings)
    rows = dataset_rows(settings, sizes, args.reps)
    mode = "quick (--quick)" if args.quick else "full"
    print(f"## Point-in-time datasets ({mode})\n")
    print(
        f"{n_tickers} demo tickers x 2018-01-02..2024-12-31 ingested in {ingest_secs:.0f} s; "
        f"`model_features` + label; medians of {args.reps}; x floor = median / floor median.\n"
    )
    print(md_table(HEADERS, rows))
    print(f"\nTotal benchmark run time: {time.perf_counter() - started:.0f} s.")
    if args.keep:
        log(f"state kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
