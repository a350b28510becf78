"""The answer of a route that starts long work (a deployment, an evaluation, an ingest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from fastapi import Response
from fastapi.concurrency import run_in_threadpool

from mlops.api.errors import WRITE_ERRORS
from mlops.usecases.started import Started


class _Followed(Protocol):
    @property
    def status_url(self) -> str: ...


RecordT = TypeVar("RecordT")
AnswerT = TypeVar("AnswerT", bound=_Followed)


async def answer_started(
    started: Started[RecordT], wait: bool, response: Response, view: Callable[[RecordT], AnswerT]
) -> AnswerT:
    """202 with the record as `view` shows it and its status URL (also in `Location`), or
    200 once the work has done what `wait` waits for."""
    record = await run_in_threadpool(started.wait if wait else started.record)
    response.status_code = 200 if wait else 202
    answer = view(record)
    response.headers["Location"] = answer.status_url
    return answer


def started_responses(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` of a route answering with `answer_started`: 202 (its
    `status_code`) at once, or 200 with the same body under `wait=true`."""
    return {
        **WRITE_ERRORS,
        200: {"model": model, "description": "With `wait=true`: the record once it settled."},
    }
