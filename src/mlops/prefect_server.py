"""The Prefect server of one platform process, when no shared server (`mlops up`, or
MLOPS_PREFECT_API_URL) is there.

Prefect's own "ephemeral mode" starts a server subprocess that outlives its parent when
the parent is killed or stopped by a signal (Prefect stops it from `atexit` only). This
module runs the same server (Prefect's `create_app` under uvicorn) as a child that
watches its parent and stops within a second of the parent going away, whatever the
way. Every child is recorded in the state folder's `run/` directory, so the next start
finds and stops one whose parent died while it was hung.

    python -m mlops.prefect_server PORT PARENT_PID     (started by `start`, not by hand)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlops.errors import ServiceError
from mlops.runs import current_owner, owner_alive, owner_of
from mlops.settings import Settings, process_environment

log = logging.getLogger(__name__)
STARTUP_TIMEOUT = 120.0
RECORD_GLOB = "prefect-server-*.json"


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    record: Path

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the server answers; a clear error if it exits or stays silent."""
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                raise ServiceError(
                    f"The Prefect server of this process exited with code "
                    f"{self.process.returncode}; see {self.record.parent / 'prefect-server.log'}."
                )
            if time.monotonic() > deadline:
                raise ServiceError(f"The Prefect server did not start in {timeout:.0f} s.")
            time.sleep(0.1)

    def stop(self) -> None:
        _terminate(self.process.pid, self.process)
        self.record.unlink(missing_ok=True)


_current: ServerProcess | None = None
_lock = threading.Lock()


def current() -> ServerProcess | None:
    """The server this process started, if any."""
    return _current


def wait_until_ready() -> None:
    """Wait for this process's own server (no-op when a shared server is used)."""
    if _current is not None:
        _current.wait_until_ready()


def start(settings: Settings) -> ServerProcess:
    """Start (once per process) the child server and return it without waiting for it."""
    global _current
    with _lock:
        if _current is not None and _current.process.poll() is None:
            return _current
        stop_orphans(settings)
        port = _free_port()
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.run_dir / "prefect-server.log", "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlops.prefect_server", str(port), str(os.getpid())],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**process_environment(), **settings.prefect_environment(use_server=False)},
            )
        record = settings.run_dir / f"prefect-server-{process.pid}.json"
        record.write_text(
            json.dumps({"server": owner_of(process.pid), "parent": current_owner(), "port": port})
        )
        _current = ServerProcess(process, f"http://127.0.0.1:{port}/api", record)
        atexit.register(_current.stop)
        return _current


def stop_orphans(settings: Settings) -> int:
    """Stop the recorded servers whose parent process is gone; forget finished ones."""
    stopped = 0
    for record in sorted(settings.run_dir.glob(RECORD_GLOB)):
        try:
            values = json.loads(record.read_text())
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
            continue
        server, parent = values.get("server", ""), values.get("parent", "")
        if owner_alive(parent) is not False:
            continue  # its parent still runs (or runs on another host): not an orphan
        if owner_alive(server):
            log.warning("stopping an orphaned Prefect server (%s) of a dead process", server)
            _terminate(int(server.split(":")[1]))
            stopped += 1
        record.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM, then SIGKILL after 5 s (a stopped or hung process ignores SIGTERM)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        target = psutil.Process(pid)
        target.terminate()
        try:
            target.wait(timeout=5)
        except psutil.TimeoutExpired:
            target.kill()
            target.wait(timeout=5)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _watch_parent(parent_pid: int) -> None:
    """In the child: stop the server as soon as the parent is gone (re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down on it
    time.sleep(10)
    os._exit(1)


def main(port: int, parent_pid: int) -> None:
    """Serve Prefect's API on 127.0.0.1:`port` until stopped or the parent is gone."""
    import uvicorn

    os.environ.update({"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"})
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
