"""Where a flow's fanned-out tasks run: on the Ray cluster's workers through Prefect's
`RayTaskRunner` with `compute_engine: ray`, else on the flow's own task runner (threads of
this process). Either way each is a task run of the calling flow run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture

from mlops.settings import Settings

Submit = Callable[[Task[..., Any], dict[str, Any]], PrefectFuture[Any]]
"""Submit a task with its parameters; its future."""


@contextlib.contextmanager
def task_submitter(settings: Settings) -> Iterator[Submit]:
    """The `Submit` of the configured engine, for the block's tasks (a Ray connection
    lasts as long as the block)."""
    if settings.compute_engine == "ray":
        from mlops.ray_cluster import task_runner

        with task_runner(settings) as on_ray:
            yield on_ray.submit
    else:
        yield _submit_here


def _submit_here(task: Task[..., Any], parameters: dict[str, Any]) -> PrefectFuture[Any]:
    return task.submit(**parameters)
