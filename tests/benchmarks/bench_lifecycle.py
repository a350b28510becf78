"""Model-lifecycle benchmark: the platform's experiment/model API next to a bare MlflowClient,
staged deployment end to end, and online predictions, at scale.

Run:  .venv/bin/python tests/benchmarks/bench_lifecycle.py           (full: 200 x 50 runs, 50 x 10 versions)
      .venv/bin/python tests/benchmarks/bench_lifecycle.py --quick   (smoke run: 20 x 10, 10 x 3)

Not a pytest test. Everything happens in a temporary state folder that is deleted at
the end (pass --keep to keep it). Prints markdown tables and exits 0 even when a target
fails (failures are shown as FAIL rows).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for `flows.ingest`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `bench_features`

from bench_features import (  # noqa: E402  (after sys.path)
    LATENCY_HEADERS,
    log,
    md_table,
    once,
    percentile,
)

MODEL = "direction-model"
API = "/api/v1/ml"
METRICS = ("roc_auc", "accuracy", "f1", "log_loss", "brier", "precision", "recall", "ece")
HISTORY_METRICS = ("cv_roc_auc", "staged_log_loss")  # logged with a history of steps
HISTORY_STEPS = 10


# ------------------------------------------------------------------------------ scale data


def run_rows(e: int, r: int, ts: int) -> tuple[list[Any], list[Any], list[tuple[str, str]]]:
    """(metric points, latest metric points, params) of run `r` of experiment `e`, as
    (key, value, timestamp, step) tuples: 8 single metrics and 2 with a history."""
    seed = (e * 7919 + r * 104729) % 1000 / 1000.0
    points = [(k, 0.4 + 0.2 * ((seed + i * 0.13) % 1.0), ts, 0) for i, k in enumerate(METRICS)]
    latest = list(points)
    for k in HISTORY_METRICS:
        history = [(k, 0.5 + 0.01 * s + 0.1 * seed, ts + s, s) for s in range(HISTORY_STEPS)]
        points += history
        latest.append(history[-1])
    params = [("n_estimators", str(50 + r)), ("max_depth", str(2 + r % 4)), ("kind", "bench")]
    return points, latest, params


def build_experiments(
    mlflow_client: Any, settings: Any, n_experiments: int, n_runs: int
) -> tuple[list[str], list[str], dict[str, float]]:
    """`n_experiments` experiments (tags team=a|b, family) x `n_runs` runs with `run_rows`.

    Experiments are created with the platform's `create_experiment`; the runs of the first
    experiment with MlflowClient (create_run + log_batch + set_terminated, to report its
    write rate), all other runs bulk-inserted into MLflow's tables through MLflow's own
    SQLAlchemy models (one transaction per experiment), since the client writes ~3
    SQLite transactions per run. Returns (experiment ids, run ids, timings)."""
    import uuid

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.tracking.dbmodels.models import (
        SqlLatestMetric,
        SqlMetric,
        SqlParam,
        SqlRun,
        SqlTag,
    )
    from sqlalchemy import insert

    from mlops.lifecycle.mlflow_backend import create_experiment, tracking_engine

    engine = tracking_engine(settings)
    timings = {"experiments": 0.0, "client_runs": 0.0, "bulk_runs": 0.0}
    exp_ids: list[str] = []
    run_ids: list[str] = []
    base_ms = int(time.time() * 1000) - n_experiments * n_runs * 1000
    n_client = 0
    for e in range(n_experiments):
        t = time.perf_counter()
        exp_id = create_experiment(
            settings,
            f"bench-exp-{e:03d}",
            description=f"benchmark experiment {e}",
            tags={"team": "a" if e % 2 == 0 else "b", "family": f"f{e % 5}"},
        )
        location = mlflow_client.get_experiment(exp_id).artifact_location
        timings["experiments"] += time.perf_counter() - t
        exp_ids.append(exp_id)
        t = time.perf_counter()
        tables: dict[Any, list[dict[str, Any]]] = {
            SqlRun: [],
            SqlMetric: [],
            SqlLatestMetric: [],
            SqlParam: [],
            SqlTag: [],
        }
        for r in range(n_runs):
            ts = base_ms + (e * n_runs + r) * 1000
            points, latest, params = run_rows(e, r, ts)
            name = f"run-{e:03d}-{r:02d}"
            if e == 0:
                run_id = mlflow_client.create_run(
                    exp_id, start_time=ts, run_name=name, tags={"bench": "1"}
                ).info.run_id
                mlflow_client.log_batch(
                    run_id,
                    metrics=[Metric(k, v, t_, s) for k, v, t_, s in points],
                    params=[Param(k, v) for k, v in params],
                    tags=[RunTag("e", "1")],
                )
                mlflow_client.set_terminated(run_id, end_time=ts + 500)
                n_client += 1
            else:
                run_id = uuid.uuid4().hex
                tables[SqlRun].append(
                    {
                        "run_uuid": run_id,
                        "name": name,
                        "source_type": "LOCAL",
                        "source_name": "",
                        "entry_point_name": "",
                        "user_id": "bench",
                        "status": "FINISHED",
                        "start_time": ts,
                        "end_time": ts + 500,
                        "source_version": "",
                        "lifecycle_stage": "active",
                        "artifact_uri": f"{location}/{run_id}/artifacts",
                        "experiment_id": int(exp_id),
                    }
                )
                for table, rows in ((SqlMetric, points), (SqlLatestMetric, latest)):
                    tables[table] += [
                        {
                            "key": k,
                            "value": v,
                            "timestamp": t_,
                            "step": s,
                            "is_nan": False,
                            "run_uuid": run_id,
                        }
                        for k, v, t_, s in rows
                    ]
                tables[SqlParam] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in params]
                tables[SqlTag] += [
                    {"key": k, "value": v, "run_uuid": run_id}
                    for k, v in (("mlflow.runName", name), ("mlflow.user", "bench"), ("e", "1"))
                ]
            run_ids.append(run_id)
        if tables[SqlRun]:
            with engine.begin() as conn:
                for table, rows in tables.items():
                    conn.execute(insert(table), rows)
        timings["bulk_runs" if e else "client_runs"] += time.perf_counter() - t
        if (e + 1) % max(1, n_experiments // 5) == 0:
            log(f"  {e + 1} experiments / {(e + 1) * n_runs} runs")
    timings["client_rate"] = n_client / timings["client_runs"] if timings["client_runs"] else 0.0
    bulk = len(run_ids) - n_client
    timings["bulk_rate"] = bulk / timings["bulk_runs"] if timings["bulk_runs"] else 0.0
    return exp_ids, run_ids, timings


def build_models(
    mlflow_client: Any, n_models: int, n_versions: int, source: str, run_ids: list[str]
) -> float:
    """`n_models` registered models x `n_versions` versions (same artifact as direction-model
    v1, each version on another scale run); aliases production/staging and archived tags."""
    started = time.perf_counter()
    k = 0
    for m in range(n_models):
        name = f"bench-model-{m:03d}"
        mlflow_client.create_registered_model(name, description=f"benchmark model {m}")
        for _ in range(n_versions):
            mlflow_client.create_model_version(name, source, run_id=run_ids[k % len(run_ids)])
            k += 1
        if n_versions >= 1:
            mlflow_client.set_registered_model_alias(name, "production", str(n_versions))
        if n_versions >= 2 and m % 2 == 0:
            mlflow_client.set_registered_model_alias(name, "staging", str(n_versions - 1))
        for v in range(1, max(1, n_versions - 2)):
            mlflow_client.set_model_version_tag(name, str(v), "archived", "true")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20x10 runs, 10x3 versions")
    parser.add_argument("--experiments", type=int, help="override the number of experiments")
    parser.add_argument("--runs", type=int, help="override the runs per experiment")
    parser.add_argument("--models", type=int, help="override the number of bench models")
    parser.add_argument("--versions", type=int, help="override the versions per bench model")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()

    quick = args.quick
    n_exp = args.experiments or (20 if quick else 200)
    n_runs = args.runs or (10 if quick else 50)
    n_models = args.models or (10 if quick else 50)
    n_versions = args.versions or (3 if quick else 10)
    reps = 10 if quick else 50
    bare_list_reps = 10
    n_predict_tickers = 10

    t_total = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-lc-"))
    if not args.keep:  # also when a step raises
        atexit.register(shutil.rmtree, tmp, True)

    from mlops.settings import Settings

    settings = Settings(home=tmp / "home", profile="local", demo_tickers=20)
    settings.ensure_dirs()
    os.environ.update(settings.prefect_environment(use_server=False))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    import pandas as pd
    from fastapi.testclient import TestClient
    from flows.ingest import ingest_flow
    from prefect.testing.utilities import prefect_test_harness

    from mlops.app import create_app
    from mlops.features.offline_state import open_snapshot
    from mlops.features.store import open_store
    from mlops.lifecycle import gates, mlflow_backend, registry, training

    report: list[str] = []
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        harness_secs = time.perf_counter() - t0

        # -------------------------------------------------------- 1. demo data + model
        log("ingest: demo data through the Prefect flow")
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            ingest_flow(source="demo", author="bench", message="bench", settings=settings)
        ingest_secs = time.perf_counter() - t

        log("train: gradient_boosting and logistic_regression -> direction-model v1, v2")
        t = time.perf_counter()
        trained = []
        for kind in ("gradient_boosting", "logistic_regression"):
            config = training.get_model_config(settings, kind)
            info = training.prepare_dataset(settings, config, "bench")
            trained.append(training.train_model(settings, config, "bench", dataset=info))
        train_secs = time.perf_counter() - t
        versions_trained = [r.model_version for r in trained]

        # -------------------------------------------------------- 2. scale data
        mlflow_client = mlflow_backend.client(settings)
        log(f"build: {n_exp} experiments x {n_runs} runs")
        exp_ids, run_ids, build = build_experiments(mlflow_client, settings, n_exp, n_runs)
        exp_secs = build["experiments"] + build["client_runs"] + build["bulk_runs"]
        source = mlflow_client.get_model_version(MODEL, versions_trained[0]).source
        log(f"build: {n_models} models x {n_versions} versions")
        model_secs = build_models(mlflow_client, n_models, n_versions, source, run_ids)
        log(f"built in {exp_secs:.0f}s + {model_secs:.0f}s")

        # -------------------------------------------------------- 3. reads
        measured: dict[str, tuple[list[float], list[float]]] = {}
        notes: dict[str, str] = {}
        with TestClient(create_app(settings)) as api:
            auth = {"Authorization": f"Bearer {settings.token}"}

            def check(resp: Any, code: int = 200) -> Any:
                if resp.status_code != code:
                    raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:300]}")
                return resp.json()

            # 1. first page of experiments
            def api_exp_page(i: int) -> None:
                body = check(api.get(f"{API}/experiments"))
                assert len(body["items"]) == min(50, body["total"])

            def bare_summaries(experiments: list[Any]) -> list[tuple[Any, float | None]]:
                out = []
                for exp in experiments:
                    best = mlflow_client.search_runs(
                        [exp.experiment_id], max_results=1, order_by=["metrics.roc_auc DESC"]
                    )
                    value = best[0].data.metrics.get("roc_auc") if best else None
                    out.append((exp, value))
                return out

            def bare_latest(experiments: list[Any]) -> None:
                for exp in experiments:
                    mlflow_client.search_runs(
                        [exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"]
                    )

            def bare_exp_page(i: int) -> None:
                page = mlflow_client.search_experiments(
                    max_results=50, order_by=["last_update_time DESC"]
                )
                bare_summaries(list(page))
                bare_latest(list(page))

            # 2. filtered + sorted page
            search = "1"
            filtered_params = {"tag": "team=a", "sort": "metric:roc_auc", "search": search}

            def api_exp_filtered(i: int) -> None:
                body = check(api.get(f"{API}/experiments", params=filtered_params))
                assert body["total"] > 0

            def bare_exp_filtered(i: int) -> None:
                matching = mlflow_client.search_experiments(
                    max_results=1000,
                    filter_string=f"tags.team = 'a' AND name LIKE '%{search}%'",
                )
                scored = bare_summaries(list(matching))  # sorting needs every match's best
                scored.sort(key=lambda s: (s[1] is None, -(s[1] or 0.0)))
                bare_latest([exp for exp, _ in scored[:50]])

            # 3. models
            def api_models(i: int) -> None:
                body = check(api.get(f"{API}/models"))
                assert body["items"]

            def bare_models(i: int) -> None:
                models = mlflow_client.search_registered_models(max_results=100)
                versions = mlflow_client.search_model_versions(max_results=10000)
                ids = sorted({v.run_id for v in versions if v.run_id})
                for chunk in range(0, len(ids), 100):
                    quoted = ", ".join(f"'{r}'" for r in ids[chunk : chunk + 100])
                    mlflow_client.search_runs(
                        exp_ids_all,
                        filter_string=f"attributes.run_id IN ({quoted})",
                        max_results=1000,
                    )
                assert models

            exp_ids_all = [*exp_ids, trained[0].experiment_id]

            # 4. metric history
            history_runs = run_ids[:: max(1, len(run_ids) // 97)]

            def api_history(i: int) -> None:
                run_id = history_runs[abs(i) % len(history_runs)]
                body = check(api.get(f"{API}/runs/{run_id}/metrics/{HISTORY_METRICS[0]}"))
                assert len(body["points"]) == HISTORY_STEPS

            def bare_history(i: int) -> None:
                run_id = history_runs[abs(i) % len(history_runs)]
                points = mlflow_client.get_metric_history(run_id, HISTORY_METRICS[0])
                assert len(points) == HISTORY_STEPS

            n_matching = check(api.get(f"{API}/experiments", params=filtered_params))["total"]
            n_models_total = check(api.get(f"{API}/models"))["total"]
            read_ops: list[tuple[str, Callable[[int], None], Callable[[int], None]]] = [
                ("GET /ml/experiments (first page)", api_exp_page, bare_exp_page),
                (
                    f"GET /ml/experiments?tag=team=a&sort=metric:roc_auc&search={search} "
                    f"({n_matching} match)",
                    api_exp_filtered,
                    bare_exp_filtered,
                ),
                (f"GET /ml/models (page 1 of {n_models_total})", api_models, bare_models),
                (
                    f"GET /ml/runs/{{id}}/metrics/{HISTORY_METRICS[0]} ({HISTORY_STEPS} pts)",
                    api_history,
                    bare_history,
                ),
            ]
            for label, api_fn, bare_fn in read_ops:
                # The bare experiment lists make ~100 search_runs calls each (seconds at full
                # scale): fewer repetitions of those, still interleaved with the platform's.
                bare_reps = reps if "experiments" not in label else min(reps, bare_list_reps)
                log(f"measuring {label} x{reps} (bare x{bare_reps})")
                a, b = [], []
                for w in range(3):
                    api_fn(-1)
                    if w == 0 or bare_reps == reps:
                        bare_fn(-1)
                for i in range(reps):
                    a.append(once(api_fn, i))
                    if i % (reps // bare_reps) == 0 and len(b) < bare_reps:
                        b.append(once(bare_fn, i))
                measured[label] = (a, b)
                log(
                    f"  platform p95 {percentile(a, 0.95):.1f} ms, bare p95 {percentile(b, 0.95):.1f} ms"
                )

            # ---------------------------------------------------- 4. deployments
            def deploy(version: str) -> dict[str, Any]:
                t_start = time.perf_counter()
                resp = api.post(
                    f"{API}/models/{MODEL}/deploy",
                    json={"version": version, "target_stage": "production", "reason": "bench"},
                    headers=auth,
                )
                answer_ms = (time.perf_counter() - t_start) * 1000
                body = check(resp, 202)
                while True:
                    record = check(api.get(body["status_url"]))
                    if record["status"] in ("succeeded", "failed"):
                        break
                    if time.perf_counter() - t_start > 300:
                        raise RuntimeError(f"deployment {body['id']} still {record['status']}")
                    time.sleep(0.01)
                total = time.perf_counter() - t_start
                return {
                    "version": version,
                    "answer_ms": answer_ms,
                    "total_s": total,
                    "status": record["status"],
                    "error": record["error"],
                    "stages": {s["name"]: (s["status"], s["seconds"]) for s in record["stages"]},
                }

            v1, v2 = versions_trained[0], versions_trained[-1]
            deploys = []
            for version in (v1, v2, v1, v2):
                log(f"deploying {MODEL} v{version}")
                deploys.append(deploy(version))
                log(f"  {deploys[-1]['status']} in {deploys[-1]['total_s']:.2f}s")

            # make sure production serves v1 for the predictions
            if registry.alias_version(settings, MODEL, "production") != v1:
                deploys.append(deploy(v1))

            # ---------------------------------------------------- 5. predictions
            index = open_snapshot(settings).tickers()  # type: ignore[union-attr]
            tickers = [str(x) for x in index["ticker"][:n_predict_tickers]]
            store = open_store(settings)
            service = store.get_feature_service("model_features")
            prod_version = registry.alias_version(settings, MODEL, "production")
            if prod_version is None:  # every deployment failed: nothing to predict with
                log("predict skipped: direction-model has no production version")
                predict_skipped = True
            else:
                predict_skipped = False
                bare_model = registry.load_version(settings, MODEL, prod_version)
            columns = bare_model.metadata.get_input_schema().input_names()

            def api_predict(i: int) -> None:
                body = check(api.post(f"{API}/models/{MODEL}/predict", json={"tickers": tickers}))
                assert len(body["predictions"]) == len(tickers)

            def bare_predict(i: int) -> None:
                values = store.get_online_features(
                    features=service, entity_rows=[{"ticker": t} for t in tickers]
                ).to_dict()
                frame = pd.DataFrame({c: values[c] for c in columns}, dtype=float)
                proba = gates.probabilities(bare_model, frame)
                assert len(proba) == len(tickers)

            predict_label = f"POST /ml/models/{MODEL}/predict ({len(tickers)} tickers)"
            if not predict_skipped:
                log(f"measuring {predict_label} x{reps * 2}")
                a, b = [], []
                for _ in range(3):
                    api_predict(-1)
                    bare_predict(-1)
                for i in range(reps * 2):
                    a.append(once(api_predict, i))
                    b.append(once(bare_predict, i))
                measured[predict_label] = (a, b)
                notes[predict_label] = "informational ratio"

    # ------------------------------------------------------------------------ report
    mode = "quick (--quick)" if quick else "full"
    n_runs_total = n_exp * n_runs
    report.append(f"## Model lifecycle benchmark ({mode})\n")
    report.append(
        f"Scale: {n_exp} experiments x {n_runs} runs = {n_runs_total:,} runs (+ the "
        f"`{MODEL}` experiment), each run {len(METRICS)} metrics + {len(HISTORY_METRICS)} "
        f"metrics with a {HISTORY_STEPS}-step history + 3 params; {n_models} models x "
        f"{n_versions} versions = {n_models * n_versions} versions (+ `{MODEL}` "
        f"v{', v'.join(versions_trained)}). Build {exp_secs:.0f} s: {n_exp} experiments via "
        f"`create_experiment` {build['experiments']:.1f} s; {n_runs} runs of the first through "
        f"MlflowClient {build['client_runs']:.1f} s ({build['client_rate']:.0f} runs/s); the "
        f"others bulk-inserted via MLflow's SQLAlchemy models {build['bulk_runs']:.1f} s "
        f"({build['bulk_rate']:.0f} runs/s); models/versions via MlflowClient "
        f"{model_secs:.0f} s. Repetitions: {reps} per read endpoint (bare experiment lists "
        f"{min(reps, bare_list_reps)}, spread over the platform's), {reps * 2} for predict; "
        "platform and bare calls interleaved, 3 warm-ups. Platform = "
        "FastAPI TestClient on `create_app`; bare = `MlflowClient` (Feast SDK + pyfunc for "
        "predict) on the same state folder, same process.\n"
    )
    rows = []
    for label, (a, b) in measured.items():
        is_predict = label.startswith("POST")
        ap50, ap95 = percentile(a, 0.5), percentile(a, 0.95)
        bp50, bp95 = percentile(b, 0.5), percentile(b, 0.95)
        ratio = ap95 / bp95 if bp95 else float("inf")
        limit = 50.0 if is_predict else 100.0
        lat = f"p95 < {limit:.0f} ms: {'PASS' if ap95 < limit else 'FAIL'}"
        over = notes.get(label) or f"ratio <= 1.3: {'PASS' if ratio <= 1.3 else 'FAIL'}"
        rows.append(
            [
                label,
                len(a),
                f"{ap50:.1f}",
                f"{ap95:.1f}",
                f"{bp50:.1f}",
                f"{bp95:.1f}",
                f"{ratio:.2f}",
                lat,
                over,
            ]
        )
    report.append("### Latency: platform vs bare client (ms)\n")
    report.append(
        md_table(
            LATENCY_HEADERS,
            rows,
        )
    )

    report.append(f"\n### Deployment of `{MODEL}` through validate -> staging -> production\n")
    dep_rows = []
    for n, d in enumerate(deploys):
        stages = d["stages"]
        dep_rows.append(
            [
                f"{n + 1}{' (cold)' if n == 0 else ''}",
                f"v{d['version']}",
                d["status"],
                f"{d['answer_ms']:.0f}",
                f"{d['total_s']:.2f}",
                *(
                    f"{stages[s][1]:.2f}" if stages[s][1] is not None else stages[s][0]
                    for s in ("validate", "staging", "production")
                ),
                "PASS" if d["answer_ms"] < 200 else "FAIL",
                "PASS" if d["total_s"] < 3 and d["status"] == "succeeded" else "FAIL",
            ]
        )
    warm = deploys[1:] or deploys
    med_answer = statistics.median(d["answer_ms"] for d in warm)
    med_total = statistics.median(d["total_s"] for d in warm)
    dep_rows.append(
        [
            f"median of {len(warm)} warm",
            "",
            "",
            f"{med_answer:.0f}",
            f"{med_total:.2f}",
            *(
                f"{statistics.median(d['stages'][s][1] or 0.0 for d in warm):.2f}"
                for s in ("validate", "staging", "production")
            ),
            "PASS" if med_answer < 200 else "FAIL",
            "PASS" if med_total < 3 else "FAIL",
        ]
    )
    report.append(
        md_table(
            [
                "deploy",
                "version",
                "status",
                "202 answer ms",
                "end-to-end s",
                "validate s",
                "staging s",
                "production s",
                "answer < 200 ms",
                "all stages < 3 s",
            ],
            dep_rows,
        )
    )
    failed = [d for d in deploys if d["status"] != "succeeded"]
    for d in failed:
        report.append(f"\nDeployment of v{d['version']} failed: {d['error']}")
    if predict_skipped:
        report.append(f"\n{predict_label}: not measured, no production version (FAIL).")
    total = time.perf_counter() - t_total
    report.append(
        f"\nSet-up (not measured above): Prefect test harness {harness_secs:.1f} s, demo ingest "
        f"{ingest_secs:.1f} s, training of 2 versions {train_secs:.1f} s, scale data "
        f"{exp_secs + model_secs:.0f} s. Total benchmark run time: {total:.0f} s."
    )
    print("\n".join(report), flush=True)

    if args.keep:
        log(f"state kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
