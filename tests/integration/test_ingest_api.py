"""Ingests through the API: uploaded files are ingested by a warm child process, the run's
record tells the steps and the outcome, refusals come before anything is stored, and a
child that dies leaves a closed record and the stores as they were."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.support.ingest import read_offline
from tests.support.settings import make_settings
from tests.support.waiting import wait_for

from mlops.app import create_app
from mlops.features.demo_data import generate_ohlcv
from mlops.features.ingest_names import INGEST_STEPS
from mlops.features.offline import exclusive_write
from mlops.settings import Settings

API = "/api/v1/ingests"
MiB = 1024**2


@pytest.fixture()
def home(prefect_server: None, tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture()
def client(home: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {home.token}"
        yield test_client


def _bars_csv(tickers: int = 3, end: date = date(2024, 3, 29)) -> bytes:
    bars = generate_ohlcv(n_tickers=tickers, start=date(2024, 1, 2), end=end, seed=11)
    return bars.to_csv(index=False).encode()


BAD_CSV = (
    b"ticker,date,open,high,low,close,volume\n"
    b"AAA,2024-01-02,10,11,9,10.5,100\nAAA,2024-01-03,10,11,9,-3,100\n"
)


def _finished(client: TestClient, run: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        now = client.get(run["status_url"]).json()
        return None if now["status"] in ("pending", "running") else now

    return wait_for(ended, timeout, f"ingest run {run['id']} to end")  # type: ignore[no-any-return]


def _stored(settings: Settings) -> dict[str, bytes]:
    """Every file of the offline store, by path (what a refused ingest must not change)."""
    root = settings.data_dir
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _uploads(settings: Settings) -> list[Path]:
    folder = settings.home / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


def _uploads_removed(settings: Settings) -> None:
    """The upload folder goes once the child has ended (just after its run's record)."""
    wait_for(lambda: _uploads(settings) == [], 30, "the upload folder to be removed")


def test_an_uploaded_file_is_ingested_by_a_child_process_and_its_record_tells_the_outcome(
    client: TestClient, home: Settings
) -> None:
    csv = _bars_csv()
    answer = client.post(API, files=[("files", ("bars.csv", csv))], data={"options": "{}"})
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert run["status"] == "pending" and answer.headers["Location"] == run["status_url"]

    done = _finished(client, run)
    assert done["status"] == "completed", done["error"]
    assert done["source"] == "bars.csv"  # the name the user gave, not the upload folder
    assert [s["step"] for s in done["steps"]] == list(INGEST_STEPS)
    rows = csv.count(b"\n") - 1
    assert done["rows"] == rows and done["summary"]["rows"] == rows
    assert done["summary"]["new_versions"] and done["summary"]["materialized"]
    assert len(read_offline(home, "bars.parquet")) == rows
    assert _child_pid(home, run["id"]) != os.getpid()  # run by a child, not the API
    _uploads_removed(home)
    listed = client.get(API, params={"limit": 5}).json()
    assert [r["id"] for r in listed] == [run["id"]]


def test_a_refused_batch_ends_rejected_naming_its_file_and_leaves_the_store_as_it_was(
    client: TestClient, home: Settings
) -> None:
    first = client.post(API, params={"wait": True}, files=[("files", ("bars.csv", _bars_csv()))])
    assert first.status_code == 200 and first.json()["status"] == "completed", first.text
    before = _stored(home)

    answer = client.post(API, params={"wait": True}, files=[("files", ("bad.csv", BAD_CSV))])
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert run["status"] == "rejected"
    assert "bad.csv" in run["error"] and "close > 0" in run["error"]
    assert "uploads" not in run["error"]
    assert Path(run["report_path"]).is_file()
    assert run["summary"] is None
    assert _stored(home) == before
    _uploads_removed(home)


def test_a_file_that_cannot_be_read_ends_failed_with_the_code_of_its_error(
    client: TestClient, home: Settings
) -> None:
    """A load error (here a column map naming a column the file lacks) is the error of a
    local run: its code goes with the record, so `mlops ingest` exits as it would here."""
    options = '{"source": {"columns": {"Day": "date"}}}'
    answer = client.post(
        API,
        params={"wait": True},
        files=[("files", ("vendor.csv", BAD_CSV))],
        data={"options": options},
    )
    run = answer.json()
    assert run["status"] == "failed" and run["error_code"] == "invalid_input", run
    assert "vendor.csv" in run["error"] and "'Day'" in run["error"]
    assert "uploads" not in run["error"]
    assert _stored(home) == {}
    _uploads_removed(home)


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        ([("files", ("../bars.csv", BAD_CSV))], "{}", "not a relative path"),
        ([("files", ("/etc/bars.csv", BAD_CSV))], "{}", "not a relative path"),
        ([("files", ("bars.txt", BAD_CSV))], "{}", "unsupported file type"),
        (
            [("files", ("a.csv", BAD_CSV)), ("files", ("a.csv", BAD_CSV))],
            "{}",
            "names a file twice",
        ),
        ([("files", ("a.csv", BAD_CSV))], '{"source": {"ticker_from": "x"}}', "Invalid source"),
        ([("files", ("a.csv", BAD_CSV))], '{"source": {"columns": {"D": "day"}}}', "mapped to"),
        ([("files", ("a.csv", BAD_CSV))], "not json", "Invalid options"),
    ],
    ids=["parent", "absolute", "txt", "twice", "ticker-from", "map", "options"],
)
def test_a_refused_upload_is_a_422_and_records_nothing(
    client: TestClient, home: Settings, files: list[Any], options: str, message: str
) -> None:
    answer = client.post(API, files=files, data={"options": options})
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["error"]["message"]
    assert client.get(API).json() == []
    assert _uploads(home) == []


def test_an_upload_needs_the_token_and_fits_the_ingest_size_limit(
    prefect_server: None, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "home", ingest_max_bytes=1000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        anonymous = client.post(API, files=[("files", ("bars.csv", BAD_CSV))])
        assert anonymous.status_code == 401
        big = io.BytesIO(b"x" * (MiB + 2000))
        too_large = client.post(
            API,
            files=[("files", ("bars.csv", big))],
            headers={"Authorization": f"Bearer {settings.token}"},
        )
        assert too_large.status_code == 413, too_large.text
        assert client.get(API).json() == []


def test_a_killed_ingest_process_ends_its_run_and_the_api_keeps_answering(
    client: TestClient, home: Settings
) -> None:
    # The child waits for the store's write lock after validating: hold it, kill the child
    # there, and the run must end as interrupted with nothing written.
    before = _stored(home)
    with exclusive_write(home):
        run = client.post(API, files=[("files", ("bars.csv", _bars_csv()))]).json()
        validated = wait_for(
            lambda: (now := client.get(run["status_url"]).json())["steps"][1:2] and now,
            180,
            "the child to validate the batch",
        )
        assert validated["status"] == "running"
        pid = _child_pid(home, run["id"])
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        done = _finished(client, run, timeout=60)
    assert done["status"] == "interrupted"
    assert "stopped during the compute step" in done["error"]
    assert _stored(home) == before
    _uploads_removed(home)
    assert client.get("/healthz").status_code in (200, 503)


def _child_pid(settings: Settings, run_id: int) -> int:
    from mlops.db import IngestRun, session_scope

    with session_scope(settings.metadata_url) as session:
        run = session.get(IngestRun, run_id)
        assert run is not None and run.owner is not None
        return int(run.owner.split(":")[1])
