"""`mlops up`: start the Prefect server, the MLflow server, the flow deployments and the
API as child processes, check their health, and stop them all cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import httpx
from rich.console import Console
from rich.table import Table

from mlops.errors import ServiceError
from mlops.platform_api import SERVICES_FILE
from mlops.ray_cluster import ensure_installed, head_environment
from mlops.runs import current_owner, owner_alive, owner_of
from mlops.settings import Settings, process_environment

console = Console()
SERVER_NAMES = {"prefect": "Prefect", "mlflow": "MLflow", "ray": "Ray"}
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    health_url: str
    log: IO[bytes] = field(repr=False)


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Raise a clear error when a port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(
                f"Port {port} on {host} for the {what} is already in use; stop what uses it "
                f"or choose another port (see `mlops up --help`).",
                {"port": port, "service": what},
            ) from exc


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of child processes: this one's plus the effective settings."""
    env = process_environment()
    env.update(
        {
            "MLOPS_HOME": str(settings.home),
            "MLOPS_PROFILE": settings.profile,
            "MLOPS_API_PORT": str(settings.api_port),
            "MLOPS_PREFECT_PORT": str(settings.prefect_port),
            "MLOPS_MLFLOW_PORT": str(settings.mlflow_port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings.prefect_environment(use_server=True))
    if "ray" in own_servers(settings):  # the head `mlops up` starts, and its token
        env.update(head_environment(settings, own_ray_address(settings)))
        env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def own_ray_address(settings: Settings) -> str:
    """The address of the Ray head `mlops up` starts (when an engine is `ray` and no
    `ray_address` is given)."""
    return f"127.0.0.1:{settings.ray_port}"


def _die_with_parent() -> None:
    """In a child, before exec: Linux sends it SIGTERM when `mlops up` dies, even by
    kill -9 (the next `mlops up` also stops what a dead one left, see below)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _start(settings: Settings, name: str, args: list[str], health_url: str) -> Child:
    log_path = settings.run_dir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115  (closed in stop_children)
    env = child_environment(settings)
    if name == "prefect":
        env.update(settings.prefect_server_environment())
    process = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C in the terminal reaches `mlops up` only
        preexec_fn=_die_with_parent,
        cwd=settings.home,
    )
    return Child(name=name, process=process, log_path=log_path, health_url=health_url, log=log)


def wait_healthy(child: Child, timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait until the child answers its health URL; fail fast if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ServiceError(
                f"{child.name} exited with code {child.process.returncode}; see {child.log_path}."
            )
        if not child.health_url:
            return
        if child.health_url.startswith("tcp://"):  # a port that accepts connections
            host, _, port = child.health_url.removeprefix("tcp://").rpartition(":")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
            time.sleep(0.25)
            continue
        try:
            if httpx.get(child.health_url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServiceError(
        f"{child.name} did not become healthy in {timeout:.0f} s; see {child.log_path}."
    )


def _terminate(name: str, pid: int) -> None:
    """SIGTERM a child: its process group, except the Ray head, whose `ray start --block`
    stops its own processes at once (with the whole group at once, it waits 40 s for its
    lost GCS first)."""
    with contextlib.suppress(ProcessLookupError):
        if name == "ray":
            os.kill(pid, signal.SIGTERM)
        else:
            os.killpg(pid, signal.SIGTERM)


def stop_children(children: list[Child]) -> None:
    """SIGTERM each child's process group, then SIGKILL what is left after a grace period."""
    for child in reversed(children):
        if child.process.poll() is None:
            _terminate(child.name, child.process.pid)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in reversed(children):
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        child.log.close()


def _commands(settings: Settings) -> dict[str, tuple[list[str], str]]:
    from mlops.work_pool import worker_command

    python = sys.executable
    return {
        "prefect": (
            [
                python,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.prefect_port),
            ],
            f"{settings.prefect_url}/health",
        ),
        "mlflow": (
            [
                python,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mlflow_port),
                "--backend-store-uri",
                settings.tracking_database_url,
                "--artifacts-destination",
                settings.artifacts_destination,
                "--workers",
                "1",
            ],
            f"{settings.mlflow_url}/health",
        ),
        "ray": (
            [
                str(Path(python).with_name("ray")),
                "start",
                "--head",
                "--block",  # in the foreground: stopped (with its processes) by SIGTERM
                "--node-ip-address=127.0.0.1",
                f"--port={settings.ray_port}",
                f"--ray-client-server-port={settings.ray_client_port}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                # Ray's socket paths must stay short: not under a deep state folder.
                f"--temp-dir={Path(tempfile.gettempdir()) / f'mlops-ray-{settings.ray_port}'}",
            ],
            f"tcp://{own_ray_address(settings)}",
        ),
        "flows": ([python, "-m", "mlops.serve_flows"], ""),
        "worker": (worker_command(settings, f"{socket.gethostname()}-up"), ""),
        "api": (
            [
                python,
                "-m",
                "uvicorn",
                "mlops.app:create_app",
                "--factory",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
                "--workers",
                str(settings.api_workers),
            ],
            f"{settings.api_url}/healthz",
        ),
    }


def _print_summary(settings: Settings) -> None:
    table = Table(title="MLOps platform is up", show_header=False)
    table.add_row("Platform API", f"{settings.api_url}/api/v1")
    table.add_row("API docs", f"{settings.api_url}/docs")
    table.add_row("Prefect UI", settings.prefect_url.removesuffix("/api"))
    tracking = settings.tracking_uri
    table.add_row("MLflow UI", tracking if tracking.startswith("http") else settings.mlflow_url)
    if "ray" in own_servers(settings):
        table.add_row("Ray head", own_ray_address(settings))
    table.add_row("State folder", str(settings.home))
    table.add_row("API token", settings.token_hint)
    console.print(table)


def _print_health(settings: Settings) -> None:
    from mlops.health import check_health, health_lines

    for line in health_lines(check_health(settings, services=True)):
        console.print(f"  {line}", highlight=False)


def _write_services_file(settings: Settings, children: list[Child]) -> Path:
    path = settings.run_dir / SERVICES_FILE
    path.write_text(
        json.dumps(
            {
                "api": settings.api_url,
                "prefect": settings.prefect_url,
                "mlflow": settings.mlflow_url,
                **({"ray": own_ray_address(settings)} if "ray" in own_servers(settings) else {}),
                "pids": {c.name: c.process.pid for c in children},
                "children": {c.name: owner_of(c.process.pid) for c in children},
                "supervisor": current_owner(),
            },
            indent=2,
        )
    )
    return path


def stop_stale_services(settings: Settings) -> list[str]:
    """Stop the services a killed `mlops up` of this state folder left running (its
    services file names them); the names of those stopped."""
    path = settings.run_dir / SERVICES_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if owner_alive(str(recorded.get("supervisor", ""))) is not False:
        return []  # it still runs (then the ports are taken, and the start says so)
    stopped = []
    for name, owner in recorded.get("children", {}).items():
        if owner_alive(owner):
            pid = int(owner.split(":")[1])
            _terminate(name, pid)  # each child leads its own session
            stopped.append((name, pid))
    deadline = time.monotonic() + STOP_TIMEOUT
    for _, pid in stopped:
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return [name for name, _ in stopped]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _close_interrupted_runs(settings: Settings) -> None:
    """Close the records of runs whose process is gone (a killed `mlops up` leaves some)."""
    from mlops.reaper import reap_interrupted

    closed = reap_interrupted(settings)
    if closed:
        console.print(f"Closed {closed} runs left open by processes that stopped.")


def _first_ingest(settings: Settings, seed: Callable[[Settings], object]) -> None:
    from mlops.features.offline_state import store_is_empty

    if store_is_empty(settings):
        console.print(
            "The feature store is empty: ingesting the demo data, training the demo models "
            "and deploying the best one."
        )
        seed(settings)


def _supervise(children: list[Child], ready: Callable[[], object]) -> int:
    """Watch the children until Ctrl-C or SIGTERM (0) or one exits (1). `ready` runs once
    those signals mean "stop" rather than "interrupt the start" (it announces the start)."""
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    ready()
    while not stop["signal"]:
        for child in children:
            if child.process.poll() is not None:
                console.print(
                    f"[red]{child.name} exited ({child.process.returncode}); "
                    f"see {child.log_path}. Stopping everything.[/]"
                )
                return 1
        time.sleep(0.5)
    return 0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _listed(servers: tuple[str, ...]) -> str:
    """ "Prefect, MLflow and Ray"."""
    names = [SERVER_NAMES[name] for name in servers]
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else ""


def own_servers(settings: Settings) -> tuple[str, ...]:
    """The servers `mlops up` starts: Prefect unless MLOPS_PREFECT_API_URL names another
    one, MLflow unless the tracking URI is another server, and a Ray head when an engine is
    `ray` and MLOPS_RAY_ADDRESS names none (cluster profile pointed at real clusters: then
    `mlops up` starts only the worker and the API)."""
    from mlops.lifecycle.mlflow_backend import is_database

    servers = []
    if settings.prefect_api_url in (None, settings.own_prefect_url):
        servers.append("prefect")
    tracking = settings.tracking_uri
    if is_database(tracking) or tracking.rstrip("/") == settings.mlflow_url:
        servers.append("mlflow")
    if settings.uses_ray and not settings.ray_address:
        servers.append("ray")
    return tuple(servers)


def run_platform(settings: Settings, seed: Callable[[Settings], object]) -> None:
    """Start everything, print URLs and the token, and wait for Ctrl-C. On a first start
    (an empty feature store) ``seed`` fills it, once Prefect and MLflow are up."""
    settings.ensure_dirs()
    stale = stop_stale_services(settings)
    if stale:
        console.print(f"Stopped {', '.join(stale)}, left running by a killed `mlops up`.")
    servers = own_servers(settings)
    ports = {
        "prefect": settings.prefect_port,
        "mlflow": settings.mlflow_port,
        "ray": settings.ray_port,
    }
    ensure_port_free(settings.api_host, settings.api_port, "API")
    for name in servers:
        ensure_port_free("127.0.0.1", ports[name], f"{SERVER_NAMES[name]} server")
    if "ray" in servers:
        ensure_installed()
        ensure_port_free("127.0.0.1", settings.ray_client_port, "Ray Client server")
    # SIGTERM while starting: unwind like Ctrl-C so the children are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    commands = _commands(settings)
    children: list[Child] = []
    code = 1
    try:
        with console.status(f"Starting {_listed(servers)}..."):
            for name in servers:
                children.append(_start(settings, name, *commands[name]))
            for child in children:
                wait_healthy(child)
        if servers:
            verb = "is" if len(servers) == 1 else "are"
            console.print(f"[green]{_listed(servers)} {verb} up.[/]")
        from mlops.orchestration import configure_prefect

        configure_prefect(settings, use_server=True)
        # Cluster: the flows are deployments of the work pool, run by a worker (more on
        # other hosts: `mlops worker`); else served by a process of their own.
        started = len(children)
        if settings.uses_work_pool:
            from mlops.work_pool import register

            register(settings)
            children.append(_start(settings, "worker", *commands["worker"]))
        _close_interrupted_runs(settings)
        _first_ingest(settings, seed)
        with console.status("Serving the scheduled flows and starting the API..."):
            for name in (() if settings.uses_work_pool else ("flows",)) + ("api",):
                children.append(_start(settings, name, *commands[name]))
            for child in children[started:]:
                wait_healthy(child)
        _print_summary(settings)
        _print_health(settings)

        def ready() -> None:  # the services file tells others that the platform is up
            _write_services_file(settings, children)
            console.print("Press Ctrl-C to stop.")

        code = _supervise(children, ready)
    finally:
        (settings.run_dir / SERVICES_FILE).unlink(missing_ok=True)
        with console.status("Stopping..."):
            stop_children(children)
        console.print("Stopped.")
    if code:
        raise ServiceError("A service of the platform stopped unexpectedly.")


def serve_api(settings: Settings, host: str, port: int) -> None:
    """Serve the API in this process (foreground), named in the state folder so that
    `mlops ingest` hands its files to it (`platform_api`)."""
    import uvicorn

    from mlops.app import create_app
    from mlops.platform_api import registered

    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    # Behind an SSO proxy the peer address is what `trusted_proxies` are checked against:
    # uvicorn must not replace it with the client's from X-Forwarded-For.
    proxy_headers = settings.trusted_proxy_header is None
    with registered(settings, f"http://{reachable}:{port}"):
        if settings.api_workers == 1:
            uvicorn.run(create_app(settings), host=host, port=port, proxy_headers=proxy_headers)
        else:  # each worker process builds the app from the same environment
            uvicorn.run(
                "mlops.app:create_app",
                factory=True,
                host=host,
                port=port,
                workers=settings.api_workers,
                proxy_headers=proxy_headers,
            )


def run_worker(settings: Settings, name: str | None = None) -> None:
    """Become a worker of the cluster profile's work pool (this process is replaced by
    `prefect worker start`): the pool and its deployments are registered first, and the
    flow runs it starts get this process's settings through the environment."""
    from mlops.orchestration import configure_prefect
    from mlops.work_pool import register, worker_command

    if not settings.uses_work_pool:
        raise ServiceError(
            f"`mlops worker` runs flows of the cluster profile's work pool; this is the "
            f"{settings.profile} profile, where flows run in the process that starts them. "
            "Set MLOPS_PROFILE=cluster (see docs/cluster.md).",
            {"profile": settings.profile},
        )
    configure_prefect(settings, use_server=True)
    try:
        registered = register(settings)
    except Exception as exc:
        raise ServiceError(
            f"The Prefect server at {settings.prefect_url} could not register the work pool "
            f"'{settings.work_pool}': {type(exc).__name__}: {exc}",
            {"work_pool": settings.work_pool},
        ) from exc
    console.print(
        f"Worker of pool '{settings.work_pool}' at {settings.prefect_url}; deployments: "
        f"{', '.join(registered)}",
        highlight=False,
    )
    command = worker_command(settings, name)
    env = child_environment(settings)
    sys.stdout.flush()
    os.execve(command[0], command, env)
