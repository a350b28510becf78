"""A process that runs one ingest or deployment and kills itself (SIGKILL) at a chosen
point, for tests/integration/test_crashes.py. The step's real work runs first, so the
kill lands where it hurts most: the work is done and not yet recorded.

    python tests/support/crash_child.py ingest <point> <home> <source>
    python tests/support/crash_child.py deploy <point> <home> <model> <version>
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.settings import make_settings


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str, calls: int = 1) -> None:
    """Replace `owner.name` (a module attribute or a dict entry) so that its `calls`-th
    call runs for real and then kills the process."""
    get: Callable[[], Any] = (
        (lambda: owner[name]) if isinstance(owner, dict) else (lambda: getattr(owner, name))
    )
    real, seen = get(), []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        seen.append(1)
        if len(seen) == calls:
            _die()
        return result

    if isinstance(owner, dict):
        owner[name] = wrapper
    else:
        setattr(owner, name, wrapper)


def _before(owner: Any, name: str) -> None:
    """Replace `owner.name` so that its first call kills the process instead of running."""
    setattr(owner, name, lambda *args, **kwargs: _die())


def ingest(point: str, home: str, source: str) -> None:
    from flows.ingest import ingest_flow

    from mlops.features import ingest as steps

    settings = make_settings(Path(home))
    functions = {
        "load": "load_batch",
        "validate": "validate_batch",
        "compute": "compute_offline_frames",
        "write_offline": "write_offline",
        "apply": "apply_definitions",
        "materialize": "materialize",
        "statistics": "store_statistics",
    }
    from mlops.features import offline

    if point == "mid-staging":  # some partitions of the new snapshot written, not all
        _after(offline.pq, "write_table", calls=2)
    elif point == "before-swap":  # the new snapshot complete, `current` not yet moved
        _before(offline, "_point_current_at")
    elif point == "before-record":  # every step done, the run not closed
        _after(steps, "record_step", calls=len(functions))
    else:
        _after(steps, functions[point])
    ingest_flow(source=source, author="crash-test", message="crash", settings=settings)


def deploy(point: str, home: str, model: str, version: str) -> None:
    from mlops.lifecycle import deployments, promotion
    from mlops.orchestration import run_deployment

    settings = make_settings(Path(home))
    if point == "finish":  # every stage recorded, the deployment not closed
        _after(deployments, "end_stage", calls=3)
    else:
        _after(promotion.STAGE_RUNNERS, point)
    info = deployments.request_deployment(settings, model, version, "production", "crash-test")
    print(info.id, flush=True)
    run_deployment(settings, info.id)


if __name__ == "__main__":
    {"ingest": ingest, "deploy": deploy}[sys.argv[1]](*sys.argv[2:])
