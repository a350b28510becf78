"""What the models pages share: query and form values, a validation error in words, and
starting a recorded deployment (then showing its stepper)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from mlops.errors import InvalidInputError, problems
from mlops.web.common import settings_of

if TYPE_CHECKING:
    from pydantic import ValidationError

    from mlops.lifecycle.deployments import DeploymentInfo

CALLER = "console"


def linker(path: str, params: Mapping[str, Any]) -> Callable[..., str]:
    """A function giving this page's URL with some query parameters changed (None drops)."""

    def link(**changes: Any) -> str:
        merged = {**params, **changes}
        query = {k: v for k, v in merged.items() if v not in (None, "", [])}
        return f"{path}?{urlencode(query, doseq=True)}" if query else path

    return link


def bounded_int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)


def invalid_input(exc: ValidationError, hint: str = "") -> InvalidInputError:
    """A pydantic validation error as the platform's 422, in words."""
    return InvalidInputError(problems(exc) + (f" ({hint})" if hint else ""))


def first_value(form: Mapping[str, list[Any]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return str(values[0]).strip()


async def launch_deployment(request: Request, info: DeploymentInfo) -> Response:
    from fastapi.concurrency import run_in_threadpool

    from mlops.orchestration import start_deployment

    await run_in_threadpool(start_deployment, settings_of(request), info.id)
    return RedirectResponse(f"/deployments/{info.id}", status_code=303)
