"""Evaluation results as MLflow runs in the `evaluation` experiment: metrics linked to the
model version's logged model, pass/fail tags per test, the JSON report and plots as
artifacts. A run is created only when its result is complete, and it always ends: FINISHED,
or FAILED if logging breaks halfway, never left RUNNING. Plots take longer to draw than
everything else together, so they are added to the finished runs after the results are
recorded (`log_plots`)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from mlops.evaluation import measures
from mlops.lifecycle import mlflow_backend
from mlops.settings import Settings

if TYPE_CHECKING:
    from mlops.evaluation.candidates import Candidate
    from mlops.evaluation.checks import SuiteContext
    from mlops.evaluation.results import SuiteResult

PlotJob = Callable[[Path], None]
"""Draws PNG files into a folder."""
EXPERIMENT = "evaluation"
EVALUATION_TAG = "mlops.evaluation_id"
KIND_TAG = "mlops.evaluation.kind"
MAX_TAG_LENGTH = 5000


@contextmanager
def artifact_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mlops-eval-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _experiment_id(settings: Settings) -> str:
    return mlflow_backend.experiment_id_for(settings, EXPERIMENT)


def _log_run(
    settings: Settings,
    run_name: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, Any],
    model_id: str | None,
    folder: Path,
) -> str:
    """Create, fill and end one run; it ends FAILED if any step fails (and the error rises)."""
    from mlflow.entities import Metric, Param

    client = mlflow_backend.client(settings)
    tags = {key: value[:MAX_TAG_LENGTH] for key, value in tags.items()}
    run = client.create_run(_experiment_id(settings), run_name=run_name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    try:
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, float(value), now, 0, model_id=model_id)
                for key, value in metrics.items()
                if np.isfinite(value)
            ],
            params=[Param(key, str(value)[:6000]) for key, value in params.items()],
        )
        client.log_artifacts(run_id, str(folder))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


def _base_tags(evaluation_id: str, candidate: Candidate, kind: str) -> dict[str, str]:
    tags = {
        EVALUATION_TAG: evaluation_id,
        KIND_TAG: kind,
        "model_name": candidate.name,
        "model_version": candidate.version,
        "model_uri": f"models:/{candidate.name}/{candidate.version}",
    }
    if candidate.run_id:
        tags["source_run_id"] = candidate.run_id
    return tags


def log_suite_run(
    settings: Settings,
    evaluation_id: str,
    candidate: Candidate,
    ctx: SuiteContext,
    result: SuiteResult,
) -> tuple[str, PlotJob]:
    """One (model version, suite) result as a finished MLflow run with its JSON report;
    returns the run's id and the job that draws its plots (`log_plots` adds them later)."""
    tags = {
        **_base_tags(evaluation_id, candidate, "suite"),
        "suite": result.suite,
        "verdict": result.status,
        **{f"test.{t.name}": t.status for t in result.tests},
    }
    metrics = dict(result.metrics)
    metrics.update({f"test.{t.name}": t.value for t in result.tests if t.value is not None})
    params = {
        "suite": result.suite,
        "rows": result.data.rows,
        "data_source": result.data.source,
        "data_start": result.data.start.date().isoformat(),
        "data_end": result.data.end.date().isoformat(),
        "tickers": ",".join(result.data.tickers),
    }
    with artifact_dir() as folder:
        report = result.model_dump(mode="json")
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        run_id = _log_run(
            settings,
            f"{result.suite} · {result.label}",
            tags,
            metrics,
            params,
            candidate.model_id,
            folder,
        )
    _tag_version(settings, candidate, f"evaluation.{result.suite}", f"{result.status} {run_id}")
    labels, output, classified = ctx.labels, ctx.output, ctx.task == "classification"

    def draw(folder: Path) -> None:
        if output is not None and classified:
            reliability_plot(labels, output, result.label, folder / "reliability.png")
        for test in result.tests:
            if test.kind == "slice" and test.details.get("slices"):
                slice_plot(test.name, test.details["slices"], test.threshold, folder)

    return run_id, draw


def log_plots(settings: Settings, run_id: str, draw: PlotJob) -> None:
    """Draw a finished run's plots and add them to its artifacts."""
    with artifact_dir() as folder:
        draw(folder)
        if any(folder.iterdir()):
            mlflow_backend.client(settings).log_artifacts(run_id, str(folder))


def log_explanation_run(
    settings: Settings,
    evaluation_id: str,
    candidate: Candidate,
    payload: dict[str, Any],
    folder: Path,
) -> str:
    """The explanation (JSON and Markdown summary, written to `folder`) as a finished run."""
    (folder / "explanation.json").write_text(json.dumps(payload, indent=2))
    (folder / "summary.md").write_text(payload["summary_markdown"])
    metrics = {f"mean_abs_shap.{f['feature']}": f["mean_abs_shap"] for f in payload["importance"]}
    run_id = _log_run(
        settings,
        f"explain · {candidate.label}",
        {
            **_base_tags(evaluation_id, candidate, "explanation"),
            "mlflow.note.content": payload["summary_markdown"],
        },
        metrics,
        {"explainer": payload["explainer"], "rows": payload["rows"]},
        candidate.model_id,
        folder,
    )
    _tag_version(settings, candidate, "evaluation.explanation", run_id)
    return run_id


def _tag_version(settings: Settings, candidate: Candidate, key: str, value: str) -> None:
    """Best effort: the registry page of the version shows its latest evaluation."""
    try:
        mlflow_backend.client(settings).set_model_version_tag(
            candidate.name, candidate.version, key, value
        )
    except Exception:  # bookkeeping; the run itself is logged
        return


def reliability_plot(labels: np.ndarray, proba: np.ndarray, title: str, path: Path) -> None:
    """Observed frequency of `up` against the mean predicted P(up), per probability bin."""
    from matplotlib.figure import Figure

    ece, table = measures.expected_calibration_error(labels, proba, 10)
    figure = Figure(figsize=(5, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="perfectly calibrated")
    axes.plot(
        [row["mean_predicted"] for row in table],
        [row["observed"] for row in table],
        marker="o",
        color="#1f77b4",
        label=f"{title} (ECE {ece:.3f})",
    )
    axes.set_xlabel("mean predicted P(up)")
    axes.set_ylabel("observed frequency of up")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def slice_plot(
    name: str, slices: list[dict[str, Any]], threshold: float | None, folder: Path
) -> None:
    """One bar per judged slice, red where it fails, with the threshold as a line."""
    from matplotlib.figure import Figure

    judged = [s for s in slices if "value" in s]
    if not judged:
        return
    figure = Figure(figsize=(6, 0.35 * len(judged) + 1.5), dpi=100)
    axes = figure.subplots()
    axes.barh(
        [s["slice"] for s in judged],
        [s["value"] for s in judged],
        color=["#2ca02c" if s["passed"] else "#d62728" for s in judged],
    )
    if threshold is not None:
        axes.axvline(threshold, color="#333333", linestyle="--", label=f"threshold {threshold}")
        axes.legend(fontsize=8)
    axes.set_title(name)
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(folder / f"slices_{name}.png")


def artifact_path(settings: Settings, run_id: str, name: str) -> Path:
    """A local copy of one artifact of an evaluation run (404 if the run has no such file)."""
    from mlops.errors import NotFoundError

    client = mlflow_backend.client(settings)
    names = [item.path for item in client.list_artifacts(run_id)]
    if name not in names:
        raise NotFoundError(
            f"Run {run_id} has no artifact '{name}' (it has {', '.join(names) or 'none'}).",
            {"run_id": run_id, "artifact": name},
        )
    root = client.get_run(run_id).info.artifact_uri
    if root.startswith("file:"):  # the local artifact store: serve the file itself
        return Path(url2pathname(urlparse(root).path)) / name
    target = settings.home / "cache" / "artifacts" / run_id
    if not (target / name).exists():
        target.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(run_id, name, str(target))
    return target / name
