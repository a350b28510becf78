"""The `ray` engines on a Ray head of their own: Feast's Ray offline store builds the same
dataset file as the platform's DuckDB store from the same snapshot; an ingest whose
features are computed as Ray tasks writes the same offline data as one computed here; and
evaluations and trainings run through Prefect's RayTaskRunner give the results of runs
here. A head that stops during an ingest fails it clearly and leaves the store as it was."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from tests.support.ports import free_ports
from tests.support.registered_models import LIFECYCLE_MODEL
from tests.support.settings import DEMO, make_settings
from tests.support.waiting import wait_for

from mlops.features import ingest, offline_changes
from mlops.features.compute import compute_frames
from mlops.features.datasets import DatasetRequest, create_dataset, dataset_path, list_datasets
from mlops.features.demo_data import generate_ohlcv
from mlops.features.offline import (
    BARS_FILE,
    CURRENT,
    FEATURES_FILE,
    LABELS_FILE,
    exclusive_write,
)
from mlops.features.offline_state import open_snapshot
from mlops.features.offline_store_ray import ray_readable
from mlops.features.store import feature_store_config
from mlops.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


RAY_TOKEN = secrets.token_hex(16)
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
"""Ray's token authentication (on by default), with a token of this test's own rather than
the one `ray start` would save in ~/.ray for every later cluster."""


SESSIONS: dict[str, Path] = {}
"""The temp folder of each head the tests started, by address."""


@contextlib.contextmanager
def started_head(cpus: int) -> Iterator[str]:
    """`ray start --head` on loopback with ports and a temp folder of its own (its
    address); stopped after."""
    ray = str(Path(sys.executable).with_name("ray"))
    gcs, manager, objects, client, agent, runtime_env, metrics = free_ports(7)
    # Ray's socket paths must stay under 107 bytes: a short folder of the system's temp dir.
    session = Path(tempfile.mkdtemp(prefix="ray-"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **RAY_AUTH}
    command = [
        ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
        f"--node-manager-port={manager}", f"--object-manager-port={objects}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-grpc-port={agent}",
        f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
        "--include-dashboard=false", f"--num-cpus={cpus}", f"--temp-dir={session}",
        "--disable-usage-stats",
    ]  # fmt: skip
    started = subprocess.run(command, env=env, capture_output=True, text=True, cwd=session)
    assert started.returncode == 0, started.stdout + started.stderr
    SESSIONS[f"127.0.0.1:{gcs}"] = session
    try:
        yield f"127.0.0.1:{gcs}"
    finally:
        _stop_head(session, gcs)
        shutil.rmtree(session, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head with 2 CPUs for the module's tests."""
    with started_head(cpus=2) as address:
        yield address


def _worker_logs(address: str) -> str:
    """What the head's Ray workers printed (Ray keeps it in its session's log folder)."""
    logs = SESSIONS[address].glob("session_*/logs/worker-*.out")
    return "".join(log.read_text(errors="replace") for log in logs)


def _stop_head(session: Path, gcs: int) -> None:
    """Stop this head's processes only (`ray stop` would stop every Ray of the user): those
    naming its folder or its GCS port, and their children."""
    marks = (str(session), f":{gcs} ")
    named = [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(mark in " ".join(process.info["cmdline"] or []) + " " for mark in marks)
    ]
    family = {p.pid: p for p in named} | {
        child.pid: child for p in named for child in p.children(recursive=True)
    }
    for process in family.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(list(family.values()), timeout=15)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def test_a_platform_source_is_read_from_the_pinned_snapshot_folder(tmp_path: Path) -> None:
    snapshot = tmp_path / "offline" / "snapshots" / "000007"
    (snapshot / "daily_features.parquet").mkdir(parents=True)
    (tmp_path / "offline" / CURRENT).symlink_to(Path("snapshots") / "000007")
    glob = str(
        tmp_path / "offline" / CURRENT / "daily_features.parquet" / "month=*" / "part.parquet"
    )
    assert ray_readable(glob, {}) == str(snapshot / "daily_features.parquet")
    assert ray_readable("/data/other.parquet", {}) == "/data/other.parquet"


def test_the_ray_engine_builds_the_same_dataset_as_duckdb(tmp_path: Path, ray_head: str) -> None:
    duck = make_settings(tmp_path / "home")
    bars = generate_ohlcv(n_tickers=4, start=date(2024, 1, 2), end=date(2024, 3, 29), seed=5)
    with exclusive_write(duck):
        offline_changes.full_rebuild(duck, bars)
    ingest.apply_definitions(duck, "tester", "views")
    by_duckdb = create_dataset(duck, DatasetRequest(name="by-duckdb", end=date(2024, 3, 15)), "t")
    ray = duck.model_copy(update={"dataset_engine": "ray", "ray_address": ray_head})
    config = feature_store_config(ray)
    assert config["offline_store"]["ray_address"] == ray_head
    assert config["batch_engine"] == {
        "type": "ray.engine", "ray_address": ray_head, "enable_ray_logging": False,
    }  # fmt: skip

    # A Ray client reads its token from the environment it starts with: a process of its own.
    env = {
        **os.environ,
        **RAY_AUTH,
        "MLOPS_HOME": str(duck.home),
        "MLOPS_PROFILE": "local",
        "MLOPS_DATASET_ENGINE": "ray",
        "MLOPS_RAY_ADDRESS": ray_head,
    }
    mlops = str(Path(sys.executable).with_name("mlops"))
    command = [mlops, "datasets", "create", "by-ray", "--end", "2024-03-15", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    by_ray = json.loads(done.stdout)

    assert (by_ray["rows"], by_ray["tickers"], by_ray["features"]) == (
        by_duckdb.rows, by_duckdb.tickers, by_duckdb.features,
    )  # fmt: skip
    expected = pd.read_parquet(dataset_path(duck, "by-duckdb"))
    got = pd.read_parquet(dataset_path(duck, "by-ray"))[list(expected.columns)]
    assert len(expected) == by_duckdb.rows > 100
    assert expected[["ret_20d", "rsi_14"]].notna().any().all()  # the windows filled in
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_an_unreachable_ray_cluster_fails_the_dataset_and_records_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    bars = generate_ohlcv(n_tickers=2, start=date(2024, 1, 2), end=date(2024, 2, 29), seed=5)
    with exclusive_write(settings):
        offline_changes.full_rebuild(settings, bars)
    ingest.apply_definitions(settings, "tester", "views")
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "MLOPS_HOME": str(settings.home),
        "MLOPS_PROFILE": "local",
        "MLOPS_DATASET_ENGINE": "ray",
        "MLOPS_RAY_ADDRESS": f"127.0.0.1:{port}",
    }
    mlops = str(Path(sys.executable).with_name("mlops"))
    done = subprocess.run(
        [mlops, "datasets", "create", "nowhere"], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 12, done.stdout + done.stderr[-3000:]
    assert f"Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert list_datasets(settings) == []
    assert not dataset_path(settings, "nowhere").exists()


def _mlops(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    mlops = str(Path(sys.executable).with_name("mlops"))
    return subprocess.Popen(
        [mlops, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _ray_env(home: Path, address: str) -> dict[str, str]:
    """A process of the local profile whose ingest computes features on the Ray head (a
    Ray client reads its token from the environment it starts with)."""
    return {
        **os.environ,
        **RAY_AUTH,
        "MLOPS_HOME": str(home),
        "MLOPS_PROFILE": "local",
        "MLOPS_COMPUTE_ENGINE": "ray",
        "MLOPS_RAY_COMPUTE_MIN_BARS": "0",  # the tests' small batches go to the head too
        "MLOPS_RAY_ADDRESS": address,
    }


def _offline(settings: Settings) -> dict[str, pd.DataFrame]:
    snapshot = open_snapshot(settings)
    assert snapshot is not None
    return {name: snapshot.read(name) for name in (FEATURES_FILE, LABELS_FILE)}


def _two_batches(tmp_path: Path) -> tuple[pd.DataFrame, Path, Path]:
    """Five months of bars, and CSV files of its first four months and of the last one."""
    bars = generate_ohlcv(n_tickers=5, start=date(2024, 1, 2), end=date(2024, 5, 31), seed=9)
    history, later = tmp_path / "history.csv", tmp_path / "may.csv"
    cut = pd.Timestamp("2024-05-01")
    bars[pd.to_datetime(bars["date"]) < cut].to_csv(history, index=False)
    bars[pd.to_datetime(bars["date"]) >= cut].to_csv(later, index=False)
    return bars, history, later


def test_an_ingest_computed_on_ray_writes_what_one_computed_here_writes(
    tmp_path: Path, ray_head: str
) -> None:
    bars, history, later = _two_batches(tmp_path)
    on_ray = make_settings(tmp_path / "ray")
    for batch in (history, later):  # a full ingest, then one on top (with context)
        done = _mlops(_ray_env(on_ray.home, ray_head), "ingest", str(batch), "--local")
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0, out + err[-3000:]
    # The run's compute step names where it ran.
    (run, _) = ingest.latest_runs(on_ray, limit=2)
    (compute,) = [step for step in run.steps if step["step"] == "compute"]
    assert compute["where"] == f"Ray cluster at {ray_head}"

    # What one computation here gives for the bars the two ingests stored, bit for bit
    # (that an ingest on top of stored bars gives the full computation's values is
    # tests/unit/features/test_incremental.py's).
    snapshot = open_snapshot(on_ray)
    assert snapshot is not None
    stored = offline_changes.sorted_bars(offline_changes.as_bars(snapshot.read(BARS_FILE)))
    assert len(stored) == len(bars) > 500
    for name, expected in zip((FEATURES_FILE, LABELS_FILE), compute_frames(stored), strict=True):
        got = _offline(on_ray)[name]
        got = got.sort_values(["ticker", "event_timestamp"], ignore_index=True)
        expected = expected.astype({"event_timestamp": got["event_timestamp"].dtype})
        pd.testing.assert_frame_equal(got[list(expected.columns)], expected, check_exact=True)


def _files(settings: Settings) -> dict[str, tuple[int, int]]:
    """Every file of the offline store with its size and modification time."""
    root = settings.data_dir
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


def _has_pending_tasks(address: str) -> bool:
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **RAY_AUTH}
    status = subprocess.run(
        [ray, "status", f"--address={address}"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    return "pending tasks" in status.stdout


def test_a_ray_head_that_stops_during_an_ingest_fails_it_and_leaves_the_store(
    tmp_path: Path,
) -> None:
    bars, _, later = _two_batches(tmp_path)
    settings = make_settings(tmp_path / "home")
    with exclusive_write(settings):
        offline_changes.full_rebuild(settings, bars[pd.to_datetime(bars["date"]) < "2024-05-01"])
    ingest.apply_definitions(settings, "tester", "views")
    before, current = _files(settings), (settings.data_dir / CURRENT).resolve()

    # A head without CPUs holds the ingest's tasks pending: it stops while they wait.
    with started_head(cpus=0) as address:
        running = _mlops(_ray_env(settings.home, address), "ingest", str(later), "--local")
        wait_for(lambda: _has_pending_tasks(address), 300, "the ingest's tasks on the head")
    out, err = running.communicate(timeout=300)

    assert running.returncode == 12, out + err[-3000:]
    assert f"The Ray cluster at {address} is unavailable" in err
    assert (settings.data_dir / CURRENT).resolve() == current
    assert _files(settings) == before
    (run,) = ingest.latest_runs(settings, limit=1)
    assert run.status == "failed"
    assert f"Ray cluster at {address}" in (run.error or "")
    assert [(step["step"], step["status"]) for step in run.steps][-1] == ("compute", "failed")


def _copy_of(lifecycle: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the session's trained state folder (what a test adds stays out of the
    shared one) and the environment of a local-profile command on it."""
    home = tmp_path / "home"
    shutil.copytree(lifecycle["settings"].home, home, symlinks=True)
    return home, {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))},
        "MLOPS_HOME": str(home),
        "MLOPS_PROFILE": "local",
        **{f"MLOPS_{key.upper()}": str(value) for key, value in DEMO.items()},
    }


def test_an_evaluation_on_ray_gives_the_results_of_one_run_here(
    tmp_path: Path, lifecycle: dict[str, Any], ray_head: str
) -> None:
    """The suite and explain tasks through Prefect's RayTaskRunner: the same record."""
    home, env = _copy_of(lifecycle, tmp_path)
    command = [
        "eval", "run", "-s", "smoke", "-m", f"{LIFECYCLE_MODEL}:1", "-m", f"{LIFECYCLE_MODEL}:2",
        "--rows", "40", "--json",
    ]  # fmt: skip
    records = []
    for run_env in (env, {**env, **_ray_env(home, ray_head)}):
        done = _mlops(run_env, *command)
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0, out + err[-3000:]
        records.append(json.loads(out))
    here, on_ray = records

    def outcome(record: dict[str, Any]) -> Any:
        """Verdicts, metrics and test outcomes (not the latency test's measured time)."""
        results = sorted(record["results"], key=lambda r: (r["version"], r["suite"]))
        return record["verdict"], [
            (r["version"], r["suite"], r["status"], r["metrics"], [
                (t["name"], t["status"], t["value"] if t["kind"] == "metric" else None)
                for t in r["tests"]
            ])
            for r in results
        ]  # fmt: skip

    assert outcome(on_ray) == outcome(here)
    assert outcome(here)[0] == "passed" and len(outcome(here)[1]) == 2
    assert sorted(on_ray["explained"]) == sorted(here["explained"]) != []
    # The tasks ran in the head's workers (Ray names each task it ran in their logs).
    logs = _worker_logs(ray_head)
    assert ":task_name:suite\n" in logs and ":task_name:explain\n" in logs


def test_trainings_on_ray_give_the_models_of_a_run_here(
    tmp_path: Path, lifecycle: dict[str, Any], ray_head: str
) -> None:
    """`mlops train a b` fits through Prefect's RayTaskRunner: the same metrics as here."""
    home, env = _copy_of(lifecycle, tmp_path)
    dataset = lifecycle["runs"]["logistic_regression"].dataset
    command = ["train", "logistic_regression", "random_forest", "-d", dataset, "--json"]
    trained = []
    for run_env in (env, {**env, **_ray_env(home, ray_head)}):
        done = _mlops(run_env, *command)
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0, out + err[-3000:]
        trained.append(json.JSONDecoder().raw_decode(out)[0])
    here, on_ray = trained

    assert [t["kind"] for t in on_ray] == ["logistic_regression", "random_forest"]
    assert [t["metrics"] for t in on_ray] == [t["metrics"] for t in here]
    assert [int(t["model_version"]) for t in on_ray] == [
        int(t["model_version"]) + 2 for t in here
    ], "registered after the two of the run here, in the order named"
    # The fits ran in the head's workers (Ray names each task it ran in their logs).
    assert ":task_name:fit-and-log\n" in _worker_logs(ray_head)
