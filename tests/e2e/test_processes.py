"""No process of the platform outlives the one that started it: the Prefect server of
`mlops api` / `mlops ingest` stops with its parent however the parent ends (SIGTERM,
kill -9), an orphan that could not stop itself is stopped by the next start, and what a
killed `mlops up` left running is stopped by the next `mlops up`. Also what a user sees
of a refused `mlops ingest`: the progress bar and one line, no Prefect logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from tests.support.ports import free_port
from tests.support.settings import make_settings
from tests.support.waiting import wait_for

from mlops import prefect_server
from mlops.runs import current_owner, owner_of
from mlops.services import stop_stale_services

pytestmark = pytest.mark.slow
MLOPS = [sys.executable, "-m", "mlops"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    return {**env, "MLOPS_HOME": str(home), "MLOPS_DEMO_TICKERS": "3"}


def _own_servers(home: Path) -> list[psutil.Process]:
    """The Prefect servers recorded in this state folder that still run."""
    found = []
    for record in (home / "run").glob(prefect_server.RECORD_GLOB):
        pid = int(json.loads(record.read_text())["server"].split(":")[1])
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            found.append(psutil.Process(pid))
    return found


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start_api(home: Path) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    port = free_port()
    api = subprocess.Popen(
        [*MLOPS, "api", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 600
        except httpx.HTTPError:
            return False

    wait_for(healthy, 120, "the API to answer")
    (server,) = wait_for(lambda: _own_servers(home), 60, "the API's Prefect server")
    return api, server


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_the_prefect_server_of_mlops_api_stops_with_it(tmp_path: Path, how: int) -> None:
    api, server = _start_api(tmp_path / "home")
    api.send_signal(how)
    api.wait(timeout=60)
    wait_for(lambda: _gone(server), 20, "the Prefect server to stop with its parent")
    if how == signal.SIGTERM:  # a clean stop also forgets the record
        assert not list((tmp_path / "home" / "run").glob(prefect_server.RECORD_GLOB))


def test_an_orphan_that_could_not_stop_itself_is_stopped_by_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mlops import prefect_server; from tests.support.settings "
            "import make_settings; from pathlib import Path\n"
            "s = prefect_server.start(make_settings(Path(sys.argv[1])))\n"
            "print(s.process.pid, flush=True); time.sleep(600)",
            str(home),
        ],
        env={**_env(home), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    orphan = psutil.Process(int(parent.stdout.readline()))
    orphan.suspend()  # hung: its watcher cannot notice the parent's death
    parent.kill()
    parent.wait()
    assert not _gone(orphan)
    settings = make_settings(home)
    assert prefect_server.stop_orphans(settings) == 1
    wait_for(lambda: _gone(orphan), 20, "the orphan to be stopped")
    assert not list((home / "run").glob(prefect_server.RECORD_GLOB))


def test_services_left_by_a_killed_mlops_up_are_stopped_by_the_next(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    service = subprocess.Popen(["sleep", "600"], start_new_session=True)
    dead_supervisor = f"{socket.gethostname()}:999999999:0"
    (settings.run_dir / "services.json").write_text(
        json.dumps({"supervisor": dead_supervisor, "children": {"mlflow": owner_of(service.pid)}})
    )
    assert stop_stale_services(settings) == ["mlflow"]
    assert service.wait(timeout=20) == -signal.SIGTERM
    assert not (settings.run_dir / "services.json").exists()
    alive = {"supervisor": current_owner(), "children": {"api": owner_of(os.getpid())}}
    (settings.run_dir / "services.json").write_text(json.dumps(alive))
    assert stop_stale_services(settings) == []  # a running `mlops up` is left alone


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_a_refused_ingest_shows_progress_and_one_line_not_prefect_logs(
    tmp_path: Path, verbose: bool
) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "ticker,date,open,high,low,close,volume\n"
        "AAA,2024-01-02,1,2,0.5,1.5,100\nAAA,2024-01-03,1,2,0.5,-1.5,100\n"
    )
    ingest = subprocess.run(
        [*MLOPS, "ingest", str(bad), *(["--verbose"] if verbose else [])],
        env={**_env(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = ingest.stdout + ingest.stderr
    assert ingest.returncode == 3, output
    assert "stopped at validate" in output and "Error: " in output and "close > 0" in output
    if verbose:
        assert "Flow run" in output
    else:
        assert "Flow run" not in output and "Traceback" not in output
        assert len(output.strip().splitlines()) <= 6, output
    assert _own_servers(home) == []


def test_mlops_ingest_hands_its_files_to_the_running_api_and_reports_as_a_local_run(
    tmp_path: Path,
) -> None:
    from datetime import date

    from mlops.features.demo_data import generate_ohlcv

    home = tmp_path / "home"
    bars = generate_ohlcv(n_tickers=3, start=date(2024, 1, 2), end=date(2024, 4, 30), seed=5)
    (tmp_path / "march").mkdir()
    history, later = bars[bars["date"] < "2024-04-01"], bars[bars["date"] >= "2024-04-01"]
    history.to_csv(tmp_path / "march" / "bars.csv", index=False)
    later.to_csv(tmp_path / "april.csv", index=False)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "ticker,date,open,high,low,close,volume\n"
        "AAA,2024-05-02,1,2,0.5,1.5,100\nAAA,2024-05-03,1,2,0.5,-1.5,100\n"
    )
    api, _ = _start_api(home)
    try:
        url = json.loads(wait_for(lambda: _api_file(home), 60, "run/api.json"))["url"]

        def ingest(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*MLOPS, "ingest", *args],
                env={**_env(home), "COLUMNS": "200"},
                capture_output=True,
                text=True,
                timeout=300,
            )

        sent = ingest(str(tmp_path / "march" / "bars.csv"))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"runs in the API's ingest process ({url})" in sent.stdout
        assert f"Ingested {len(history)} rows." in sent.stdout
        assert "Prefect:" not in sent.stdout  # no Prefect server of its own

        refused = ingest(str(bad))
        output = refused.stdout + refused.stderr
        assert refused.returncode == 3, output  # the exit code of a local refusal
        assert "stopped at validate" in output and "close > 0" in output
        assert str(bad) in output and "uploads" not in output

        unmapped = ingest(str(bad), "--map", "Day=date")
        output = unmapped.stdout + unmapped.stderr
        assert unmapped.returncode == 2, output  # invalid input, as a local run exits
        assert "'Day'" in output and "uploads" not in output

        local = ingest(str(tmp_path / "april.csv"), "--local", "--json")
        assert local.returncode == 0, local.stdout + local.stderr
        assert "runs in the API's ingest process" not in local.stdout

        token = (home / "api_token").read_text().strip()
        runs = httpx.get(
            f"{url}/api/v1/ingests", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert [(r["source"], r["status"]) for r in runs] == [
            (str(tmp_path / "april.csv"), "completed"),
            (str(bad), "failed"),
            (str(bad), "rejected"),
            (str(tmp_path / "march" / "bars.csv"), "completed"),
        ]
        assert runs[3]["summary"]["rows"] == len(history)
    finally:
        api.terminate()
        api.wait(timeout=60)
    assert not (home / "run" / "api.json").exists()  # a stopped API is not handed work


def _api_file(home: Path) -> str | None:
    path = home / "run" / "api.json"
    return path.read_text() if path.exists() else None
