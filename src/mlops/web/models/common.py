"""What the models pages share: query and form values, a validation error in words, the
rollback confirmation and the way to a started deployment's stepper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from mlops.errors import InvalidInputError, problems
from mlops.web.common import page

if TYPE_CHECKING:
    from pydantic import ValidationError

    from mlops.usecases.deployments import RollbackPlan, RollbackRequest


def invalid_input(exc: ValidationError, hint: str = "") -> InvalidInputError:
    """A pydantic validation error as the platform's 422, in words."""
    return InvalidInputError(problems(exc) + (f" ({hint})" if hint else ""))


def first_value(form: Mapping[str, list[Any]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return str(values[0]).strip()


def stepper(deployment_id: str) -> Response:
    """After starting a deployment: its live stepper."""
    return RedirectResponse(f"/deployments/{deployment_id}", status_code=303)


def confirm_page(
    request: Request, plan: RollbackPlan, body: RollbackRequest, action: str, cancel: str
) -> Response:
    """The page saying which version a rollback restores, with the confirming form."""
    return page(
        request,
        "models/confirm.html",
        model_name=plan.model_name,
        restore=plan.restore,
        current=plan.current,
        action=action,
        cancel=cancel,
        reason=body.reason,
    )
