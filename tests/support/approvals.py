"""An approver deciding in a process of its own, for the tests of approvals from several
processes at once (started with multiprocessing's spawn: a fresh interpreter each)."""

from __future__ import annotations

from collections.abc import Callable
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


def at_once(
    target: Callable[[Settings, str, str, Barrier, Queue[tuple[str, str]]], None],
    settings: Settings,
    subject_id: str,
    names: tuple[str, ...],
) -> dict[str, str]:
    """Run `target` (`approve_together` or `approve_publication_together`) for each name,
    each in a fresh process, released together; {name: outcome}."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    together, out = context.Barrier(len(names)), context.Queue()
    processes = [
        context.Process(target=target, args=(settings, subject_id, name, together, out))
        for name in names
    ]
    for process in processes:
        process.start()
    outcomes = dict(out.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(60)
    return outcomes
