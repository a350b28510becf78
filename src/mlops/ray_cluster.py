"""The platform's use of a Ray cluster: which head, its token, connecting, waiting on tasks
with a clear error when the cluster goes away, and Prefect's task runner on it.

The head is `settings.ray_address`, else the one `mlops up` started for this state folder
(named in ``run/services.json`` with its token file while it runs), else none: `ray.init()`
then starts a Ray instance inside the process. Ray is imported only inside the functions
that use it (here, `features.compute_ray`, the Ray offline store, `prefect_ray`), so that
the platform's other paths never load it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import ConfigError, StoreUnavailableError
from mlops.platform_api import services_record
from mlops.runs import owner_alive
from mlops.settings import Settings
from mlops.stores import CONNECT_TIMEOUT_S

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner
    from ray import ObjectRef

__all__ = [
    "AUTH_ENVIRONMENT",
    "connect",
    "ensure_installed",
    "ensure_reachable",
    "gather",
    "head_address",
    "head_token_path",
    "task_runner",
]

AUTH_ENVIRONMENT = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
"""How a Ray process finds the cluster's token (Ray's token authentication)."""
POLL_S = 1.0
"""How often a wait on tasks checks that the head still answers."""


def head_token_path(settings: Settings) -> Path:
    """The token file of the head `mlops up` starts (made once, readable by the user only)."""
    path = settings.home / "ray" / "auth_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path


def head_environment(settings: Settings, address: str) -> dict[str, str]:
    """What a process needs to use the head `mlops up` started: its address and token."""
    return {
        "MLOPS_RAY_ADDRESS": address,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(head_token_path(settings)),
    }


def head_address(settings: Settings) -> str | None:
    """The Ray head this process uses (see the module's docstring); None: one of its own.

    The head of a running `mlops up` also brings its token: this process's environment
    gets `head_environment` unless it names a token of its own."""
    if settings.ray_address:
        return settings.ray_address
    services = services_record(settings)
    address, owner = services.get("ray"), services.get("supervisor")
    if not (isinstance(address, str) and isinstance(owner, str) and owner_alive(owner)):
        return None
    if not any(name in os.environ for name in AUTH_ENVIRONMENT):
        token = head_environment(settings, address)
        os.environ.update({name: token[name] for name in AUTH_ENVIRONMENT if name in token})
    return address


def ensure_reachable(address: str | None) -> None:
    """Refuse at once when nothing answers at the Ray head's address: `ray.init` would
    retry for minutes. None (a Ray instance inside this process) is always reachable."""
    if not address:
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise _unavailable(address, f"nothing answers there ({exc})") from exc


def _unavailable(address: str | None, problem: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"Ray cluster at {address or 'this process'}",
        problem,
        "Start its head (`ray start --head --port ...`, or `mlops up`) or correct "
        "MLOPS_RAY_ADDRESS; MLOPS_COMPUTE_ENGINE=local and MLOPS_DATASET_ENGINE=duckdb "
        "run the work on this host instead.",
    )


MISSING_RAY = (
    "An engine of these settings is `ray` (MLOPS_COMPUTE_ENGINE or MLOPS_DATASET_ENGINE), "
    "but Ray is not installed: pip install 'mlops[cluster]' (it pins ray and prefect-ray)."
)


def ensure_installed() -> None:
    """A clear error when the `ray` engines are chosen without Ray installed."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("prefect_ray") is None:
        raise ConfigError(MISSING_RAY)


def _usable_head(settings: Settings) -> str | None:
    """This process's head, once it answers and Ray is installed."""
    address = head_address(settings)
    ensure_reachable(address)
    ensure_installed()
    return address


def connect(settings: Settings) -> str | None:
    """Connect this process to its Ray head (once; later calls reuse the connection) and
    return the head's address."""
    address = _usable_head(settings)
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    return address


def task_runner(settings: Settings) -> TaskRunner[Any]:
    """Prefect's `RayTaskRunner` on this process's Ray head (refused at once when it does
    not answer). Its tasks run in the cluster's workers, which reach the Prefect API, the
    metadata database and MLflow with the flow's settings (both travel with each task)."""
    address = _usable_head(settings)
    from prefect_ray import RayTaskRunner

    options = {"log_to_driver": False, "logging_level": logging.WARNING}
    return RayTaskRunner(address=address, init_kwargs=options)


def gather(
    refs: Sequence[ObjectRef[Any]],
    address: str | None,
    progress: Callable[[int, int], object] = lambda done, total: None,
) -> list[Any]:
    """The results of `refs`, in their order, once all are done.

    Waits in steps of `POLL_S`, reporting `progress(done, total)` when it changes and
    checking that the head still answers. An error raised by a task's code is raised as it
    is; a lost head, node or worker is a `StoreUnavailableError` naming the cluster, and
    this process disconnects so that its next use connects again."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    place = {ref: index for index, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            for ref in ready:  # a failed task raises here, not after all the others
                results[place[ref]] = ray.get(ref)
            if ready:
                progress(len(refs) - len(pending), len(refs))
            elif pending:
                ensure_reachable(address)
        return results
    except RayTaskError as exc:  # the task's own code failed: its error, as it is
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise
    except RayError as exc:
        ray.shutdown()
        raise _unavailable(address, f"{type(exc).__name__}: {exc}") from exc
    except StoreUnavailableError:
        ray.shutdown()
        raise
