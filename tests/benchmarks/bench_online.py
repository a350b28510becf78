"""Online-serving benchmark: online features and predictions through the API, next to Feast
(and the model) called in-process on the same state folder.

Run:  .venv/bin/python tests/benchmarks/bench_online.py           (20 tickers, 200 repetitions)
      .venv/bin/python tests/benchmarks/bench_online.py --quick   (5 tickers, 50 repetitions)

Not a pytest test. A temporary state folder gets the demo data (ingested through the Prefect
flow) and one trained model in production; it is deleted at the end (pass --keep to keep
it). Prints a markdown table and exits 0 even when a target fails (shown as FAIL).
`online_rows` is also called by other benchmarks on a state folder of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for `flows.ingest`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `bench_features`

from bench_features import (  # noqa: E402  (after sys.path)
    api_server,
    log,
    md_table,
    once,
    percentile,
)

SERVICE = "model_features"
NAMED_FEATURES = ("ret_1d", "rsi_14")
MODEL = "direction-model"
FEATURES_OVERHEAD_MS = 1.5  # issue 13: API online features <= Feast in-process + 1.5 ms
PREDICT_TARGET_MS = 4.0  # issue 13: API predict for one ticker <= 4 ms
ONLINE_HEADERS = [
    "operation (1 ticker)",
    "n",
    "API p50",
    "API p95",
    "in-process p50",
    "in-process p95",
    "ratio p50",
    "target (p50)",
]

Call = Callable[[int], Any]


def _measure(api: Call, bare: Call, reps: int) -> tuple[list[float], list[float]]:
    """Milliseconds of `reps` interleaved calls of each, after two warm-ups of each."""
    for i in range(2):
        api(-1 - i)
        bare(-1 - i)
    a, b = [], []
    for i in range(reps):
        a.append(once(api, i))
        b.append(once(bare, i))
    return a, b


def _row(label: str, a: list[float], b: list[float], limit_ms: float, target: str) -> list[str]:
    ap50, bp50 = percentile(a, 0.5), percentile(b, 0.5)
    verdict = "PASS" if ap50 <= limit_ms else "FAIL"
    return [
        label,
        str(len(a)),
        f"{ap50:.2f}",
        f"{percentile(a, 0.95):.2f}",
        f"{bp50:.2f}",
        f"{percentile(b, 0.95):.2f}",
        f"{ap50 / bp50:.1f}" if bp50 else "-",
        f"{target} ({limit_ms:.2f} ms): {verdict}",
    ]


def _checked(response: Any) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    return response.json()


def online_rows(settings: Any, client: Any, reps: int, model: str = MODEL) -> list[list[str]]:
    """Rows for `ONLINE_HEADERS`: online features by service and by name, and a prediction,
    for one ticker through `client` (a TestClient of the app on `settings`, or an httpx
    client of an API server on the same state folder) and in-process.

    The in-process side is Feast's best use: the feature service resolved once, the model
    loaded once. Without a production version of `model`, the predict row says so."""
    import pandas as pd

    from mlops.features.offline_state import open_snapshot
    from mlops.features.store import open_store
    from mlops.lifecycle import gates, registry

    _wait_for_warm_up()
    store = open_store(settings)
    snapshot = open_snapshot(settings)
    assert snapshot is not None, "nothing ingested"
    ticker = str(snapshot.tickers()["ticker"].iloc[0])
    headers = {"Authorization": f"Bearer {settings.token}"}
    service = store.get_feature_service(SERVICE, allow_cache=True)
    rows_of_one = [{"ticker": ticker}]

    def api_service(i: int) -> None:
        params = {"tickers": ticker, "feature_service": SERVICE}
        _checked(client.get("/api/v1/online-features", params=params, headers=headers))

    def bare_service(i: int) -> None:
        store.get_online_features(features=service, entity_rows=rows_of_one).to_dict()

    refs = [f"{view}:{name}" for view, name in _views_of(store, NAMED_FEATURES)]

    def api_named(i: int) -> None:
        params = {"tickers": ticker, "features": ",".join(NAMED_FEATURES)}
        _checked(client.get("/api/v1/online-features", params=params, headers=headers))

    def bare_named(i: int) -> None:
        store.get_online_features(features=refs, entity_rows=rows_of_one).to_dict()

    rows = []
    for label, api, bare in [
        (f"GET /online-features?feature_service={SERVICE}", api_service, bare_service),
        (f"GET /online-features?features={','.join(NAMED_FEATURES)}", api_named, bare_named),
    ]:
        log(f"measuring {label} x{reps}")
        a, b = _measure(api, bare, reps)
        limit = percentile(b, 0.5) + FEATURES_OVERHEAD_MS
        rows.append(_row(label, a, b, limit, f"<= in-process + {FEATURES_OVERHEAD_MS} ms"))

    label = f"POST /ml/models/{model}/predict"
    version = registry.alias_version(settings, model, registry.PRODUCTION_ALIAS)
    if version is None:
        return [*rows, [label, "0", "-", "-", "-", "-", "-", "no production version: FAIL"]]
    loaded = registry.load_version(settings, model, version)
    columns = loaded.metadata.get_input_schema().input_names()

    def api_predict(i: int) -> None:
        body = {"tickers": [ticker]}
        _checked(client.post(f"/api/v1/ml/models/{model}/predict", json=body, headers=headers))

    def bare_predict(i: int) -> None:
        values = store.get_online_features(features=service, entity_rows=rows_of_one).to_dict()
        frame = pd.DataFrame({c: values[c] for c in columns}, dtype=float)
        gates.probabilities(loaded, frame)

    log(f"measuring {label} x{reps}")
    a, b = _measure(api_predict, bare_predict, reps)
    return [*rows, _row(label, a, b, PREDICT_TARGET_MS, "<= 4 ms")]


def _wait_for_warm_up() -> None:
    """Let the app's warm-up thread (imports of MLflow, skops, GX) finish: it would
    compete for the CPU with the measured requests."""
    for thread in threading.enumerate():
        if thread.name == "warm-up":
            thread.join(timeout=180)


def _views_of(store: Any, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(view, feature) of each named feature among the online views."""
    found = {f.name: v.name for v in store.list_feature_views() if v.online for f in v.features}
    return [(found[name], name) for name in names]


def _prepare(settings: Any) -> None:
    """Ingest the demo data, train one model and put it in production."""
    from flows.ingest import ingest_flow
    from prefect.testing.utilities import prefect_test_harness

    from mlops.lifecycle import alias_moves, mlflow_backend, training

    with prefect_test_harness(server_startup_timeout=180):
        log("ingest: demo data through the Prefect flow")
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints materialize progress
            ingest_flow(source="demo", author="bench", message="bench", settings=settings)
    log(f"train: logistic_regression -> {MODEL}")
    config = training.get_model_config(settings, "logistic_regression")
    dataset = training.prepare_dataset(settings, config, "bench")
    trained = training.train_model(settings, config, "bench", dataset=dataset)
    # What the production stage of a deployment does, without its gates.
    mlflow_backend.client(settings).set_registered_model_alias(
        MODEL, "production", trained.model_version
    )
    alias_moves.record_move(settings, MODEL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 tickers, 50 reps")
    parser.add_argument("--reps", type=int, help="override the repetitions per operation")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()
    reps = args.reps or (50 if args.quick else 200)
    n_tickers = 5 if args.quick else 20

    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-online-"))
    from mlops.settings import Settings

    settings = Settings(
        home=tmp / "home", profile="local", demo_tickers=n_tickers, demo_start=date(2023, 1, 2)
    )
    settings.ensure_dirs()
    os.environ.update(settings.prefect_environment(use_server=False))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)

    from fastapi.testclient import TestClient

    from mlops.app import create_app

    started = time.perf_counter()
    try:
        _prepare(settings)
        with TestClient(create_app(settings)) as client:
            in_test_client = online_rows(settings, client, reps)
        with api_server(settings) as client:
            over_http = online_rows(settings, client, reps)
    finally:
        if args.keep:
            log(f"state kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    mode = "quick (--quick)" if args.quick else "full"
    print(f"## Online serving benchmark ({mode})\n")
    print(
        f"{n_tickers} demo tickers from {settings.demo_start}, one logistic-regression model in "
        f"production; {reps} interleaved repetitions per operation after 2 warm-ups. "
        "In-process = the `FeatureStore` of the same state folder with the feature service "
        "resolved once (and the model loaded once). Milliseconds.\n"
    )
    print("### API over HTTP (uvicorn on loopback, a process of its own; httpx client)\n")
    print(md_table(ONLINE_HEADERS, over_http))
    print(
        "\n### API through FastAPI's TestClient (in-process, its hand-offs between threads included)\n"
    )
    print(md_table(ONLINE_HEADERS, in_test_client))
    print(f"\nTotal run time: {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
