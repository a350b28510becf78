"""How `mlops ingest` finds the platform's API of its state folder, and says when it passes
a live one over (then the batch is ingested in the command's own process)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.ports import free_port
from tests.support.settings import make_settings

from mlops.platform_api import API_FILE, running_api
from mlops.runs import current_owner
from mlops.settings import Settings


@pytest.fixture()
def answering() -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP server on loopback that answers every GET with the status in the dict."""
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", status
    finally:
        server.shutdown()
        server.server_close()


def _registered(settings: Settings, url: str, owner: str) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    (settings.run_dir / API_FILE).write_text(json.dumps({"url": url, "owner": owner}))


def test_a_live_api_that_answers_gets_the_work(
    tmp_path: Path, answering: tuple[str, dict[str, int]]
) -> None:
    settings = make_settings(tmp_path)
    url, _ = answering
    _registered(settings, url, current_owner())
    notes: list[str] = []
    assert running_api(settings, notes.append) == url
    assert notes == []


def test_a_live_api_that_refuses_the_token_is_passed_over_and_said(
    tmp_path: Path, answering: tuple[str, dict[str, int]]
) -> None:
    settings = make_settings(tmp_path)
    url, status = answering
    status["code"] = 401
    _registered(settings, url, current_owner())
    notes: list[str] = []
    assert running_api(settings, notes.append) is None
    assert notes == [f"the platform's API at {url} runs but answered 401 (another state "
                     "folder's token?)"]  # fmt: skip


def test_a_live_owner_whose_port_is_closed_is_passed_over_and_said(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    _registered(settings, url, current_owner())
    notes: list[str] = []
    assert running_api(settings, notes.append) is None
    assert notes == [f"the platform's API at {url} runs but could not be reached (ConnectError)"]


def test_an_api_whose_process_ended_is_skipped_quietly(
    tmp_path: Path, answering: tuple[str, dict[str, int]]
) -> None:
    settings = make_settings(tmp_path)
    url, _ = answering
    _registered(settings, url, current_owner().rsplit(":", 1)[0] + ":0")  # not this start
    notes: list[str] = []
    assert running_api(settings, notes.append) is None
    assert notes == []
