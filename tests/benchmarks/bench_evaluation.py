"""Evaluation-harness benchmark: the standard suite on ~10k rows for 3 model versions with SHAP,
end to end through the API, next to `mlflow.models.evaluate` computing the same metrics on the
same rows in the same process.

Run:  .venv/bin/python tests/benchmarks/bench_evaluation.py           (full: 40 tickers, 10,000 rows)
      .venv/bin/python tests/benchmarks/bench_evaluation.py --quick   (smoke run: 8 tickers, 2,000 rows)

Not a pytest test. Everything happens in a temporary state folder that is deleted at
the end (pass --keep to keep it). Prints markdown tables and exits 0 even when a target
fails (failures are shown as FAIL rows).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
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
API = "/api/v1/evaluation"
SUITE = "standard"
KINDS = ("logistic_regression", "random_forest", "gradient_boosting")  # -> v1, v2, v3
EXPLAIN_ROWS = 500
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
MLFLOW_NAMES = {  # our metric -> the name mlflow's classifier evaluator logs it under
    "accuracy": "accuracy_score",
    "precision": "precision_score",
    "recall": "recall_score",
    "f1": "f1_score",
    "roc_auc": "roc_auc",
    "log_loss": "log_loss",
    "brier": "brier",  # not built in: an extra metric (see brier_metric)
}
E2E_TARGET_S = 3.0
SPEC_TARGET_S = 5.0
READ_TARGET_MS = 50.0


def _stamp(value: str | None) -> datetime | None:
    if not value:
        return None
    stamp = datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _fmt(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f}" if values else "-"


# ------------------------------------------------------------------------------ baseline


def brier_metric() -> Any:
    """Brier score as an mlflow extra metric: the default classifier evaluator has no Brier
    score and hands extra metrics the predicted labels only, so P(up) comes in as the `p_up`
    argument, which mlflow fills from the evaluator_config key of that name (an array in
    `col_mapping` breaks its argument lookup). P(up) is computed inside the timed call."""
    import numpy as np
    from mlflow.metrics import MetricValue
    from mlflow.models import make_metric
    from sklearn.metrics import brier_score_loss

    def brier(predictions: Any, targets: Any, p_up: Any) -> Any:
        proba = np.asarray(p_up)[: len(targets)]  # mlflow first tries the metric on one row
        value = float(brier_score_loss(np.asarray(targets).astype(int), proba))
        return MetricValue(aggregate_results={"brier": value})

    return make_metric(eval_fn=brier, greater_is_better=False, name="brier")


def mlflow_evaluate(
    candidate: Any, data: Any, label: str, experiment_id: str, explain_rows: int | None
) -> dict[str, float]:
    """`mlflow.models.evaluate` of one loaded version on `data` with the default evaluator for
    `model_type="classifier"` (+ Brier); SHAP on `explain_rows` rows, or none when None.
    Returns the metrics under our names."""
    import mlflow

    raw = candidate.raw  # the pipeline; mlflow's evaluator unwraps the same one
    p_up = raw.predict_proba(data[candidate.inputs])[:, 1]
    config: dict[str, Any] = {"p_up": p_up}
    if explain_rows is None:
        config["log_model_explainability"] = False
    else:
        config["explainability_nsamples"] = explain_rows
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"mlflow-evaluate {candidate.label}"
    ):
        result = mlflow.models.evaluate(
            candidate.model,
            data,
            targets=label,
            model_type="classifier",
            evaluators="default",
            extra_metrics=[brier_metric()],
            evaluator_config=config,
        )
    return {ours: float(result.metrics[theirs]) for ours, theirs in MLFLOW_NAMES.items()}


def sklearn_metrics(candidate: Any, frame: Any, label: str) -> dict[str, float]:
    """The floor: P(up) from the pipeline and the 7 metrics with scikit-learn, nothing else."""
    import numpy as np
    from sklearn import metrics as m

    raw = candidate.raw
    p_up = raw.predict_proba(frame[candidate.inputs])[:, 1]
    y = frame[label].to_numpy().astype(int)
    predicted = (p_up >= 0.5).astype(int)
    return {
        "accuracy": float(m.accuracy_score(y, predicted)),
        "precision": float(m.precision_score(y, predicted, zero_division=0)),
        "recall": float(m.recall_score(y, predicted, zero_division=0)),
        "f1": float(m.f1_score(y, predicted, zero_division=0)),
        "roc_auc": float(m.roc_auc_score(y, p_up)),
        "log_loss": float(m.log_loss(y, np.clip(p_up, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(m.brier_score_loss(y, p_up)),
    }


# ------------------------------------------------------------------------------ profile

PROFILE_PARTS = (  # (label, [(module file suffix, function)]) - cumulative times, no overlap
    (
        "plots of the suite runs (reliability, 2 slice plots; after the answer)",
        [
            ("evaluation/tracking.py", "reliability_plot"),
            ("evaluation/tracking.py", "slice_plot"),
        ],
    ),
    ("SHAP plots (bar, beeswarm; after the answer)", [("evaluation/explain.py", "_write_plots")]),
    (
        "SHAP values (incl. the previous version's, for stability)",
        [
            ("evaluation/explain.py", "_shap_values"),
        ],
    ),
    ("the 9 tests (`run_check`)", [("evaluation/checks.py", "run_check")]),
    (
        "  of which batch_latency (21 predictions of 500 rows)",
        [
            ("evaluation/checks.py", "check_latency"),
        ],
    ),
    ("  of which feature_drift (training rows + PSI)", [("evaluation/checks.py", "check_drift")]),
    (
        "predictions of the suite context + production metrics",
        [
            ("evaluation/checks.py", "__post_init__"),
            ("evaluation/runner.py", "_production_metrics"),
        ],
    ),
    (
        "MLflow runs (create, log_batch, log_artifacts, terminate, version tag)",
        [
            ("evaluation/tracking.py", "_log_run"),
            ("evaluation/tracking.py", "_tag_version"),
        ],
    ),
)


def profile_tasks(settings: Any, plan: Any, rows: int) -> tuple[dict[str, float], list[list[str]]]:
    """The flow's 7 tasks (3 suite runs, 3 explanations, then the plots) one after the other:
    wall seconds per task without a profiler, then the same under cProfile, split into
    parts by the cumulative time of the functions in PROFILE_PARTS."""
    import cProfile
    import pstats

    from mlops.evaluation import runner

    tasks: list[tuple[str, Callable[[], Any]]] = []
    for c in plan.candidates:
        tasks.append(
            (
                f"suite v{c.version}",
                functools.partial(runner.run_suite, settings, "bench-profile", plan, c, SUITE),
            )
        )
    for c in plan.candidates:
        tasks.append(
            (
                f"explain v{c.version}",
                functools.partial(runner.run_explanation, settings, "bench-profile", plan, c, rows),
            )
        )

    def draw_plots() -> None:  # the flow's last task, after the answer
        runner.draw_plots(settings, plan)
        plan.plot_jobs.clear()

    tasks.append(("plots (after the answer)", draw_plots))
    plan.plot_jobs.clear()
    walls: dict[str, float] = {}
    for name, fn in tasks:
        started = time.perf_counter()
        fn()
        walls[name] = time.perf_counter() - started
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _, fn in tasks:
        fn()
    profiler.disable()
    profiled = time.perf_counter() - started
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(targets: list[tuple[str, str]]) -> float:
        return sum(
            value[3]
            for (filename, _, func), value in stats.items()
            for suffix, name in targets
            if func == name and filename.replace("\\", "/").endswith(suffix)
        )

    rows_out, counted = [], 0.0
    for label, targets in PROFILE_PARTS:
        seconds = cumulative(targets)
        if not label.startswith("  "):
            counted += seconds
        rows_out.append([label, f"{seconds:.2f}", f"{seconds / profiled:.0%}"])
    rest = max(profiled - counted, 0.0)
    rows_out.append(
        ["rest (metrics, slices, reports, pydantic, ...)", f"{rest:.2f}", f"{rest / profiled:.0%}"]
    )
    rows_out.append(["all 7 tasks under cProfile", f"{profiled:.2f}", "100%"])
    return walls, rows_out


# ------------------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 tickers, 2 repeats")
    parser.add_argument("--tickers", type=int, help="override the number of demo tickers")
    parser.add_argument("--repeats", type=int, help="override the measured end-to-end runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()

    quick = args.quick
    n_tickers = args.tickers or (8 if quick else 40)  # x the suite's 250 last days = rows
    repeats = args.repeats or (2 if quick else 5)
    read_reps = 50 if quick else 200
    shap_reps = 1 if quick else 2  # mlflow with its SHAP: slow, fewer repetitions

    t_total = time.perf_counter()
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-eval-"))
    if not args.keep:  # also when a step raises
        atexit.register(shutil.rmtree, tmp, True)

    from mlops.settings import Settings

    settings = Settings(home=tmp / "home", profile="local", demo_tickers=n_tickers)
    settings.ensure_dirs()
    os.environ.update(settings.prefect_environment(use_server=False))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MPLBACKEND", "Agg")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    import logging

    from fastapi.testclient import TestClient
    from flows.ingest import ingest_flow
    from prefect.testing.utilities import prefect_test_harness

    from mlops.app import create_app
    from mlops.evaluation import results, runner
    from mlops.evaluation.tracking import EVALUATION_TAG, EXPERIMENT, KIND_TAG
    from mlops.lifecycle import mlflow_backend, training

    for noisy in ("mlflow", "shap"):  # mlflow.models.evaluate logs every step at INFO
        logging.getLogger(noisy).setLevel(logging.ERROR)

    report: list[str] = []
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        harness_secs = time.perf_counter() - t0

        # -------------------------------------------------------- 1. data + 3 versions
        log(f"ingest: demo data for {n_tickers} tickers through the Prefect flow")
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            ingest_flow(source="demo", author="bench", message="bench", settings=settings)
        ingest_secs = time.perf_counter() - t

        log(f"train: {', '.join(KINDS)} on one dataset -> {MODEL} v1..v3")
        t = time.perf_counter()
        configs = [training.get_model_config(settings, kind) for kind in KINDS]
        dataset = training.prepare_dataset(settings, configs[0], "bench")
        trained = [training.train_model(settings, c, "bench", dataset=dataset) for c in configs]
        train_secs = time.perf_counter() - t
        versions = [r.model_version for r in trained]
        kind_of = {r.model_version: r.kind for r in trained}
        mlflow_client = mlflow_backend.client(settings)
        # the suite's baseline test compares with production: v1 is production
        mlflow_client.set_registered_model_alias(MODEL, "production", versions[0])
        log(
            f"  trained in {train_secs:.0f}s; test windows start "
            + ", ".join(f"v{r.model_version} {r.test_start.date()}" for r in trained)
        )

        body = {
            "suites": [SUITE],
            "models": [{"name": MODEL, "version": v} for v in versions],
            "explain": True,
            "explain_rows": EXPLAIN_ROWS,
            "reason": "benchmark",
        }
        runs: list[dict[str, Any]] = []
        read_measured: dict[str, tuple[list[float], list[float]]] = {}
        with TestClient(create_app(settings)) as api:
            auth = {"Authorization": f"Bearer {settings.token}"}

            def check(resp: Any, code: int = 200) -> Any:
                if resp.status_code != code:
                    raise RuntimeError(f"{resp.request.url}: {resp.status_code} {resp.text[:500]}")
                return resp.json()

            # ---------------------------------------------------- 2. end to end
            def evaluate_once(label: str) -> dict[str, Any]:
                sent = datetime.now(UTC)
                started = time.perf_counter()
                resp = api.post(f"{API}/run", params={"wait": "true"}, json=body, headers=auth)
                seconds = time.perf_counter() - started
                answered = datetime.now(UTC)
                info = check(resp, 200)
                if info["status"] != "succeeded":
                    raise RuntimeError(f"evaluation {info['id']}: {info['status']} {info['error']}")
                while (
                    plots := check(api.get(f"{API}/results/{info['id']}"))["plots"]
                ) == "pending":
                    time.sleep(0.02)  # the plots are added to the MLflow runs after the answer
                if plots != "done":
                    raise RuntimeError(f"evaluation {info['id']}: plots {plots}")
                with_plots = time.perf_counter() - started
                explained = check(api.get(f"{API}/results/{info['id']}/explainability"))
                run = {
                    "label": label,
                    "id": info["id"],
                    "seconds": seconds,
                    "with_plots": with_plots,
                    "info": info,
                    "explanations": explained["explanations"],
                    "sent": sent,
                    "answered": answered,
                }
                log(f"  {label}: {seconds:.2f}s, plots in at {with_plots:.2f}s ({info['verdict']})")
                return run

            log(f"evaluate: {SUITE} x v{', v'.join(versions)} + SHAP on {EXPLAIN_ROWS} rows")
            cold = evaluate_once("cold (first run)")
            for i in range(repeats):
                runs.append(evaluate_once(f"run {i + 1}"))
            last_id = runs[-1]["id"]
            rows = runs[-1]["info"]["results"][0]["data"]["rows"]

            # ---------------------------------------------------- 3. reads
            evaluation_experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
            assert evaluation_experiment is not None
            eval_exp_id = evaluation_experiment.experiment_id
            suite_names = [b["name"] for b in check(api.get(f"{API}/benchmarks"))]

            def api_result(i: int) -> None:
                info = check(api.get(f"{API}/results/{last_id}"))
                assert len(info["results"]) == len(versions)

            def bare_result(i: int) -> None:
                found = mlflow_client.search_runs(
                    [eval_exp_id], filter_string=f"tags.`{EVALUATION_TAG}` = '{last_id}'"
                )
                assert len(found) == 2 * len(versions)

            def api_benchmarks(i: int) -> None:
                listed = check(api.get(f"{API}/benchmarks"))
                assert any(b["last_run"] for b in listed)

            def bare_benchmarks(i: int) -> None:
                import yaml

                for path in sorted((settings.config_dir / "suites").glob("*.yaml")):
                    yaml.safe_load(path.read_text())
                for name in suite_names:
                    mlflow_client.search_runs(
                        [eval_exp_id],
                        filter_string=f"tags.suite = '{name}' AND tags.`{KIND_TAG}` = 'suite'",
                        order_by=["attributes.start_time DESC"],
                        max_results=len(versions),
                    )

            read_ops: list[tuple[str, Callable[[int], None], Callable[[int], None]]] = [
                (
                    f"GET /evaluation/results/{{id}} ({len(versions)} results)",
                    api_result,
                    bare_result,
                ),
                (
                    f"GET /evaluation/benchmarks ({len(suite_names)} suites)",
                    api_benchmarks,
                    bare_benchmarks,
                ),
            ]
            for label, api_fn, bare_fn in read_ops:
                log(f"measuring {label} x{read_reps}")
                a, b = [], []
                for _ in range(3):
                    api_fn(-1)
                    bare_fn(-1)
                for i in range(read_reps):
                    a.append(once(api_fn, i))
                    b.append(once(bare_fn, i))
                read_measured[label] = (a, b)
                log(f"  p95 {percentile(a, 0.95):.1f} ms (bare {percentile(b, 0.95):.1f} ms)")

        # -------------------------------------------------------- 4. mlflow.models.evaluate
        # The same rows: the plan the platform checks before a run (suite, versions, rows).
        refs = [results.ModelRef(name=MODEL, version=v) for v in versions]
        plan = runner.make_plan(settings, [SUITE], refs)
        frame = plan.suites[SUITE].frame
        assert len(frame) == rows, (len(frame), rows)
        label = training.LABEL
        data = frame[[*plan.candidates[0].inputs, label]].copy()
        data[label] = data[label].astype(int)
        for c in plan.candidates[1:]:
            assert c.inputs == plan.candidates[0].inputs
        mlflow_backend.configure_mlflow(settings)
        base_exp = mlflow_backend.experiment_id_for(settings, "bench-mlflow-evaluate")

        variants: dict[str, Callable[[Any], dict[str, float]]] = {
            "shap": lambda c: mlflow_evaluate(c, data, label, base_exp, EXPLAIN_ROWS),
            "no_shap": lambda c: mlflow_evaluate(c, data, label, base_exp, None),
            "sklearn": lambda c: sklearn_metrics(c, frame, label),
        }
        baseline: dict[str, list[float]] = {k: [] for k in variants}  # totals over 3 models
        per_model: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
        values: dict[str, dict[str, dict[str, float]]] = {k: {} for k in variants}
        log("baseline: mlflow.models.evaluate, warm-up")
        for name in ("no_shap", "sklearn"):
            for c in plan.candidates:
                variants[name](c)
        for name, reps in (("no_shap", repeats), ("sklearn", repeats), ("shap", shap_reps)):
            for r in range(reps):
                total = 0.0
                for c in plan.candidates:
                    started = time.perf_counter()
                    with contextlib.redirect_stderr(io.StringIO()):  # shap's progress bar
                        values[name][c.version] = variants[name](c)
                    spent = time.perf_counter() - started
                    per_model[name].setdefault(c.version, []).append(spent)
                    total += spent
                baseline[name].append(total)
                log(f"  {name} run {r + 1}: {total:.2f}s")

        # -------------------------------------------------------- 5. profile
        log("profile: the 7 tasks one after the other, then under cProfile")
        seq_walls, profile_rows = profile_tasks(settings, plan, EXPLAIN_ROWS)
        load_end = os.getloadavg()[0]

    # ------------------------------------------------------------------------ report
    e2e = [r["seconds"] for r in runs]
    plotted = [r["with_plots"] for r in runs]
    med, p95, worst = statistics.median(e2e), percentile(e2e, 0.95), max(e2e)
    mode = "quick (--quick)" if quick else "full"
    report.append(f"## Evaluation harness benchmark ({mode})\n")
    data_range = runs[-1]["info"]["results"][0]["data"]
    report.append(
        f"State: {n_tickers} demo tickers ingested through `ingest_flow`; `{MODEL}` "
        + ", ".join(f"v{v} {kind_of[v]}" for v in versions)
        + f" trained on one dataset (test_fraction 0.2), production alias on v{versions[0]}. "
        f"Suite `{SUITE}` unchanged (last_days 250, exclude_training): {rows:,} rows "
        f"({len(data_range['tickers'])} tickers x {data_range['start'][:10]}..{data_range['end'][:10]}). "
        f"Request: `POST {API}/run?wait=true` with the 3 versions, explain true, explain_rows "
        f"{EXPLAIN_ROWS}, through `TestClient(create_app(settings))`; 1 cold run, then {repeats} "
        f"measured runs. Baseline in the same process on the same {rows:,} rows (the frame of "
        f"`make_plan`), the 3 models one after the other.\n"
    )

    ours = statistics.median(e2e)
    rows_e2e = [
        [
            f"POST /evaluation/run?wait=true ({SUITE} x 3 versions + SHAP {EXPLAIN_ROWS})",
            len(e2e),
            f"{med:.2f}",
            f"{p95:.2f}",
            f"{worst:.2f}",
            "",
            f"median < {E2E_TARGET_S:.0f} s: {'PASS' if med < E2E_TARGET_S else 'FAIL'}; "
            f"spec < {SPEC_TARGET_S:.0f} s: {'PASS' if med < SPEC_TARGET_S else 'FAIL'}",
        ],
        ["  cold (first run, not in the median)", 1, f"{cold['seconds']:.2f}", "", "", "", ""],
        [
            "  until the plots are in the MLflow runs (drawn after the answer)",
            len(plotted),
            f"{statistics.median(plotted):.2f}",
            f"{percentile(plotted, 0.95):.2f}",
            f"{max(plotted):.2f}",
            "",
            "",
        ],
    ]
    descriptions = {
        "shap": f"mlflow.models.evaluate, default evaluator + SHAP {EXPLAIN_ROWS} rows (3 models)",
        "no_shap": "mlflow.models.evaluate, log_model_explainability=False (3 models)",
        "sklearn": "scikit-learn: predict_proba + the 7 metrics (3 models)",
    }
    for name in ("shap", "no_shap", "sklearn"):
        times = baseline[name]
        rows_e2e.append(
            [
                descriptions[name],
                len(times),
                f"{statistics.median(times):.2f}",
                f"{percentile(times, 0.95):.2f}",
                f"{max(times):.2f}",
                f"{ours / statistics.median(times):.2f}",
                "",
            ]
        )
    report.append("### End to end (s)\n")
    report.append(
        md_table(
            ["operation", "n", "median s", "p95 s", "max s", "ratio ours / it (median)", "target"],
            rows_e2e,
        )
    )

    # metrics agree?
    ours_metrics = {r["version"]: r["metrics"] for r in runs[-1]["info"]["results"]}
    gaps = [
        abs(ours_metrics[v][m] - values[k][v][m])
        for k in variants
        for v in versions
        for m in METRICS
        if m in ours_metrics[v]
    ]
    verdicts = "; ".join(
        f"v{r['version']} {r['status']}"
        + (
            " ("
            + ", ".join(f"{t['name']} {t['status']}" for t in r["tests"] if t["status"] != "passed")
            + ")"
            if r["status"] != "passed"
            else ""
        )
        for r in runs[-1]["info"]["results"]
    )
    report.append(
        f"\nVerdicts (last run): {verdicts}. (The demo data is a random walk: a failed test "
        "would be a finding about the model, an `error` one about the harness.)"
    )
    report.append(
        f"\nSame metrics: the 7 metrics of every version from the platform's results and from "
        f"each baseline differ by at most {max(gaps):.1e}.\n"
    )

    # ---- where the time goes: per (model, suite), per test, explanation
    report.append("### Where the time goes (median over the measured runs, s)\n")
    by_version: dict[str, dict[str, list[float]]] = {v: {} for v in versions}
    explainers: dict[str, str] = {}
    test_names: list[str] = []
    for run in runs:
        for result in run["info"]["results"]:
            slot = by_version[result["version"]]
            slot.setdefault("suite", []).append(result["seconds"])
            tests_total = 0.0
            for test in result["tests"]:
                if test["name"] not in test_names:
                    test_names.append(test["name"])
                slot.setdefault(test["name"], []).append(test["seconds"])
                tests_total += test["seconds"]
            slot.setdefault("tests", []).append(tests_total)
            slot.setdefault("rest", []).append(result["seconds"] - tests_total)
        for expl in run["explanations"]:
            slot = by_version[expl["version"]]
            slot.setdefault("explain", []).append(float(expl.get("seconds") or 0.0))
            explainers[expl["version"]] = str(expl.get("explainer", "error"))
    headers = ["part", *(f"v{v} {kind_of[v]}" for v in versions)]
    part_rows = [
        ["suite task (`SuiteResult.seconds`)", *(_fmt(by_version[v]["suite"]) for v in versions)],
        ["  sum of the 9 tests", *(_fmt(by_version[v]["tests"]) for v in versions)],
    ]
    for name in test_names:
        part_rows.append([f"    {name}", *(_fmt(by_version[v][name], 3) for v in versions)])
    part_rows.append(
        [
            "  rest: predictions, metrics, production metrics, MLflow run + plots",
            *(_fmt(by_version[v]["rest"]) for v in versions),
        ]
    )
    part_rows.append(
        [
            f"explanation (`Explanation.seconds`, SHAP {EXPLAIN_ROWS} rows + plots)",
            *(_fmt(by_version[v].get("explain", [])) for v in versions),
        ]
    )
    part_rows.append(
        [
            "  explainer",
            *(explainers.get(v, "-") for v in versions),
        ]
    )
    part_rows.append(
        [
            "mlflow.models.evaluate + SHAP (per model)",
            *(_fmt(per_model["shap"][v]) for v in versions),
        ]
    )
    part_rows.append(
        [
            "mlflow.models.evaluate without SHAP (per model)",
            *(_fmt(per_model["no_shap"][v]) for v in versions),
        ]
    )
    report.append(md_table(headers, part_rows))

    phases: dict[str, list[float]] = {}
    for run in runs:
        info = run["info"]
        created, begun, finished = (
            _stamp(info["created_at"]),
            _stamp(info["started_at"]),
            _stamp(info["finished_at"]),
        )
        if created and begun and finished:
            phases.setdefault("plan", []).append((created - run["sent"]).total_seconds())
            phases.setdefault("start", []).append((begun - created).total_seconds())
            phases.setdefault("flow", []).append((finished - begun).total_seconds())
            phases.setdefault("answer", []).append((run["answered"] - finished).total_seconds())
    tasks_sum = [
        sum(r["seconds"] for r in run["info"]["results"])
        + sum(float(e.get("seconds") or 0.0) for e in run["explanations"])
        for run in runs
    ]
    report.append(
        "\nPhases of a run (median s, from the record's timestamps): request -> record created "
        f"(plan: suite, versions, rows) {_fmt(phases.get('plan', []))}; record -> flow started "
        f"{_fmt(phases.get('start', []))}; flow (6 tasks on a thread pool) "
        f"{_fmt(phases.get('flow', []))}; record finished -> answer (Prefect flow-run teardown, "
        f"thread join, reading the record) {_fmt(phases.get('answer', []))}. "
        f"Sum of the task times {_fmt(tasks_sum)} s (tasks overlap on 2 cores)."
    )

    # ---- profile
    before_answer = sum(v for k, v in seq_walls.items() if not k.startswith("plots"))
    report.append(
        "\n### CPU profile: the 7 tasks one after the other in one thread (s)\n\n"
        "Without a profiler: "
        + ", ".join(f"{k} {v:.2f}" for k, v in seq_walls.items())
        + f"; the 6 before the answer sum to {before_answer:.2f} s (the flow overlaps them on "
        f"2 cores: {_fmt(phases.get('flow', []))} s). Under cProfile (which inflates pure-Python code "
        "such as matplotlib's the most), by part:\n"
    )
    report.append(md_table(["part", "seconds", "share"], profile_rows))

    # ---- reads
    report.append("\n### Reads (ms)\n")
    read_rows = []
    for label_, (a, b) in read_measured.items():
        ap50, ap95 = percentile(a, 0.5), percentile(a, 0.95)
        bp50, bp95 = percentile(b, 0.5), percentile(b, 0.95)
        read_rows.append(
            [
                label_,
                len(a),
                f"{ap50:.1f}",
                f"{ap95:.1f}",
                f"{bp50:.1f}",
                f"{bp95:.1f}",
                f"{ap95 / bp95:.2f}" if bp95 else "-",
                f"p95 < {READ_TARGET_MS:.0f} ms: {'PASS' if ap95 < READ_TARGET_MS else 'FAIL'}",
                "informational ratio",
            ]
        )
    report.append(md_table(LATENCY_HEADERS, read_rows))
    report.append(
        "\nBare: results = `MlflowClient.search_runs` of the run's MLflow runs by its tag; "
        "benchmarks = `yaml.safe_load` of the suite files + one `search_runs` per suite for "
        "its latest suite runs."
    )
    total = time.perf_counter() - t_total
    report.append(
        f"\nSet-up (not measured above): Prefect test harness {harness_secs:.1f} s, demo ingest "
        f"{ingest_secs:.1f} s, training of 3 versions {train_secs:.1f} s. Load average (1 min) "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end. Total benchmark run time: "
        f"{total:.0f} s."
    )
    print("\n".join(report), flush=True)

    if args.keep:
        log(f"state kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
