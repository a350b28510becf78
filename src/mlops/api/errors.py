"""The API's JSON error body: one model, used by the error handlers, the request gate and
the OpenAPI document (every route lists the 4xx codes it can answer with this body)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable kind, e.g. not_found, invalid_input.")
    message: str = Field(description="What went wrong and how to fix it.")
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str | None = Field(default=None, description="Also in the X-Request-ID header.")


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(code=code, message=message, details=details or {}, request_id=request_id)
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses, all with the JSON error body."""
    return {
        status: {"model": ErrorBody, "description": HTTPStatus(status).phrase}
        for status in statuses
    }


READ_ERRORS = responses(400, 401, 404, 422, 503)
"""Any route: unsafe names, a token when the profile requires it for reads, unknown names,
bad input, and a store that is down or being written."""
WRITE_ERRORS = responses(401, 403, 409, 413)
"""Routes with a request body or a side effect: token, role, conflicts, body too large."""
