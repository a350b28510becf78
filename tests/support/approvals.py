"""An approver deciding in a process of its own, for the tests of approvals from several
processes at once (started with multiprocessing's spawn: a fresh interpreter each)."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from mlops.settings import Settings


def approve_together(
    settings: Settings,
    deployment_id: str,
    name: str,
    together: Barrier,
    out: Queue[tuple[str, str]],
) -> None:
    """Once every approver's process is ready (`together`), approve as `name`, and put
    (name, outcome) on `out`: "ready" when this approval completed the count, "approved"
    when more are needed, else the refusal's error code."""
    from mlops.errors import MlopsError
    from mlops.lifecycle import deployments
    from mlops.roles import Principal, Role

    caller = Principal(name, Role.APPROVER)
    together.wait(120)
    try:
        _, ready = deployments.decide(settings, deployment_id, caller, "approve", f"ok by {name}")
    except MlopsError as exc:
        out.put((name, exc.code))
        return
    out.put((name, "ready" if ready else "approved"))


def approve_publication_together(
    settings: Settings, request_id: str, name: str, together: Barrier, out: Queue[tuple[str, str]]
) -> None:
    """As `approve_together`, for a prompt publication: "ready" when this approval
    published it."""
    from mlops.errors import MlopsError
    from mlops.prompts import publications
    from mlops.prompts.store import open_store
    from mlops.roles import Principal, Role

    store = open_store(settings)
    caller = Principal(name, Role.APPROVER)
    together.wait(120)
    try:
        done = publications.decide(store, request_id, caller, "approve", f"ok by {name}")
    except MlopsError as exc:
        out.put((name, exc.code))
        return
    out.put((name, "ready" if done.status == "published" else "approved"))
