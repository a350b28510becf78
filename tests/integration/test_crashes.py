"""kill -9 at every step of an ingest and of a deployment (tests/support/crash_child.py kills
itself right after a step's work, before it is recorded, or inside the offline commit).
The record stays open until the reaper runs (as the next start of the API or of a CLI
command does), which closes it (`interrupted`, or the outcome the registry proves); the
offline store is byte for byte its state before the ingest or after it, and the next
write removes what the killed one left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tests.support.ingest import run_ingest_flow
from tests.support.registered_models import add_version, copy_version

from mlops.features import ingest, offline, offline_state
from mlops.features.datasets import DatasetRequest, create_dataset
from mlops.features.demo_data import generate_ohlcv
from mlops.lifecycle import deployments, registry
from mlops.reaper import reap_interrupted
from mlops.settings import Settings

pytestmark = pytest.mark.slow
CHILD = Path(__file__).resolve().parents[1] / "support" / "crash_child.py"
NEW = "ZZNX"
BEFORE_COMMIT = ["load", "validate", "compute", "mid-staging", "before-swap"]
AFTER_COMMIT = ["write_offline", "apply", "materialize", "statistics", "before-record"]


def _killed_child(*args: str) -> str:
    """Run the child to its own SIGKILL; its stdout."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child = subprocess.run(
        [sys.executable, str(CHILD), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    return child.stdout


def _new_ticker_batch(settings: Settings, folder: Path) -> Path:
    bars = generate_ohlcv(n_tickers=1, start=settings.demo_start, end=settings.demo_end, seed=9)
    path = folder / "new-ticker.csv"
    bars.assign(ticker=NEW).to_csv(path, index=False)
    return path


def _leftovers(settings: Settings) -> list[Path]:
    folders = (settings.data_dir, settings.data_dir / offline.SNAPSHOTS, settings.datasets_dir)
    return [path for folder in folders for path in folder.glob(".*.tmp")]


def _state(settings: Settings) -> dict[str, str]:
    """Every file of the current snapshot and its hash: the offline store as readers see it."""
    import hashlib

    snapshot = offline_state.open_snapshot(settings)
    assert snapshot is not None
    return {
        str(p.relative_to(snapshot.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(snapshot.root.rglob("*"))
        if p.is_file()
    }


def _new_ticker_values(settings: Settings, name: str) -> pd.DataFrame:
    request = DatasetRequest(name=name, features=["ret_1d", "rsi_14"], tickers=[NEW])
    create_dataset(settings, request, "crash-test")
    return pd.read_parquet(settings.datasets_dir / f"{name}.parquet")


def test_an_ingest_killed_at_any_step_leaves_the_store_as_before_or_after_byte_for_byte(
    fresh: Settings, tmp_path: Path
) -> None:
    source = _new_ticker_batch(fresh, tmp_path)
    before, after = _state(fresh), None
    for number, point in enumerate([*BEFORE_COMMIT, *AFTER_COMMIT]):
        _killed_child("ingest", point, str(fresh.home), str(source))
        assert ingest.latest_runs(fresh, limit=1)[0].status == "running", point
        assert reap_interrupted(fresh) == 1, point
        run = ingest.latest_runs(fresh, limit=1)[0]
        assert run.status == "interrupted", point
        assert run.finished_at is not None and "stopped during" in (run.error or "")
        if point in BEFORE_COMMIT:
            assert _state(fresh) == before, point
            continue
        after = after or _state(fresh)
        assert _state(fresh) == after != before, point  # re-ingesting gives the same bytes
        values = _new_ticker_values(fresh, f"after-{number}")
        stored = offline_state.open_snapshot(fresh).tickers().set_index("ticker")  # type: ignore[union-attr]
        assert len(values) == stored.loc[NEW, "bars"], point
        assert values["ret_1d"].notna().mean() > 0.9, point
    result = run_ingest_flow(fresh, source=str(source))
    assert result.rows > 0 and ingest.latest_runs(fresh, limit=1)[0].status == "completed"
    assert _state(fresh) == after
    assert _leftovers(fresh) == []  # the killed writers' folders went with the next commit


@pytest.mark.parametrize(
    ("point", "outcome"),
    [
        ("validate", "failed"),
        ("staging", "failed"),
        ("production", "succeeded"),  # the alias moved, the record did not learn it
        ("finish", "succeeded"),  # every stage recorded, the record not closed
    ],
)
def test_a_deployment_killed_at_any_stage_is_closed_as_the_registry_shows(
    lifecycle: dict[str, object], point: str, outcome: str
) -> None:
    settings = lifecycle["settings"]
    assert isinstance(settings, Settings)
    name = copy_version(settings, "1")
    first = deployments.request_deployment(settings, name, "1", "production", "t")
    from mlops.orchestration import run_deployment

    run_deployment(settings, first.id)
    second = add_version(settings, name, "1")
    deployment_id = _killed_child("deploy", point, str(settings.home), name, second).split()[0]
    assert deployments.get_deployment(settings, deployment_id).status == "running"
    reap_interrupted(settings)
    record = deployments.get_deployment(settings, deployment_id)
    production = registry.alias_version(settings, name, registry.PRODUCTION_ALIAS)
    assert record.status == outcome and record.finished_at is not None
    assert production == (second if outcome == "succeeded" else "1")
    assert all(s.status in ("passed", "failed", "skipped") for s in record.stages)
    if outcome == "failed":
        assert "Production was not moved" in (record.error or "")
        stage = {s.name: s.status for s in record.stages}
        if point == "staging":  # its one step, moving the staging alias, had happened
            assert stage == {"validate": "passed", "staging": "passed", "production": "skipped"}
            assert registry.alias_version(settings, name, registry.STAGING_ALIAS) == second
        else:
            assert record.failed_stage == "validate" and stage["validate"] == "failed"
        return
    rollback = deployments.request_rollback(settings, name, "t")  # the history is intact
    run_deployment(settings, rollback.id)
    assert registry.alias_version(settings, name, registry.PRODUCTION_ALIAS) == "1"
