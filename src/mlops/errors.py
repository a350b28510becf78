"""One exception hierarchy for the domain, mapped once to HTTP statuses and exit codes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

ModelT = TypeVar("ModelT", bound="BaseModel")


class MlopsError(Exception):
    """Base of every error the platform reports to a user."""

    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInputError(MlopsError):
    """A request or argument is malformed (bad filter, bad parameter)."""

    code = "invalid_input"
    http_status = 422
    exit_code = 2


class UnsafePathError(MlopsError):
    """A name or path would leave the state folder."""

    code = "unsafe_path"
    http_status = 400
    exit_code = 2


class DataValidationError(MlopsError):
    """A data batch failed to load or failed its expectations; nothing was written."""

    code = "data_validation_failed"
    http_status = 422
    exit_code = 3


class NotFoundError(MlopsError):
    code = "not_found"
    http_status = 404
    exit_code = 4


class ConflictError(MlopsError):
    code = "conflict"
    http_status = 409
    exit_code = 5


class AuthError(MlopsError):
    code = "unauthorized"
    http_status = 401
    exit_code = 6


class ForbiddenError(MlopsError):
    """The caller is known but its role does not allow the action (the message names the
    role needed)."""

    code = "forbidden"
    http_status = 403
    exit_code = 13


class ConfigError(MlopsError):
    code = "configuration_error"
    http_status = 500
    exit_code = 7


class ServiceError(MlopsError):
    """A backing service is unreachable or a port is taken."""

    code = "service_unavailable"
    http_status = 503
    exit_code = 8


class ModelError(MlopsError):
    """A registered model failed to load or to predict."""

    code = "model_failed"
    http_status = 500
    exit_code = 9


class StoreUnavailableError(MlopsError):
    """A store the platform reads or writes is down, locked, corrupt or missing.

    The message names the store and what to check; it never carries a password.
    Nothing was written: the operation stopped before or inside a rolled-back transaction.
    """

    code = "store_unavailable"
    http_status = 503
    exit_code = 12

    def __init__(self, store: str, problem: str, check: str) -> None:
        super().__init__(f"The {store} is unavailable: {problem}. {check}", {"store": store})
        self.store = store


def error_from(code: str, message: str, details: dict[str, Any] | None = None) -> MlopsError:
    """The error an API answer names by its code (a client re-raises what the server said,
    with the same exit code as if it had happened here)."""
    kind = _kind_where(lambda kind: kind.code == code)
    return MlopsError(message, details) if kind is None else _made(kind, message, details)


def _kind_where(match: Callable[[type[MlopsError]], bool]) -> type[MlopsError] | None:
    """The first of the platform's error classes `match` accepts."""
    kinds: list[type[MlopsError]] = [MlopsError]
    while kinds:
        kind = kinds.pop()
        if match(kind):
            return kind
        kinds.extend(kind.__subclasses__())
    return None


def _made(kind: type[MlopsError], message: str, details: dict[str, Any] | None) -> MlopsError:
    """An error of `kind` with `message`; a kind whose constructor takes other arguments
    (StoreUnavailableError) becomes an MlopsError with its code, status and exit code."""
    try:
        return kind(message, details)
    except TypeError:
        error = MlopsError(message, details)
        error.code, error.http_status, error.exit_code = (
            kind.code,
            kind.http_status,
            kind.exit_code,
        )
        return error


def error_named(name: str, message: str) -> MlopsError:
    """The platform's error whose class is called `name` (a failure another process
    reported by its class name, e.g. a flow run's failure message), else MlopsError."""
    kind = _kind_where(lambda kind: kind.__name__ == name)
    if kind is None:
        return MlopsError(f"{name}: {message}" if name else message)
    return _made(kind, message, None)


def field_of(error: ErrorDetails, within: tuple[str, ...] = ()) -> str:
    """Where a pydantic error is, as a dotted path (`models.ridge.params`); '' for the whole."""
    return ".".join(str(part) for part in (*within, *error["loc"]))


def problems(exc: ValidationError, within: tuple[str, ...] = (), *, first: bool = False) -> str:
    """A pydantic validation error in words, one `field: message` per problem joined by '; '
    (only the first with ``first``). ``within`` prefixes each field (where the model sits in
    a file). Every front end and config reader words them this way."""
    found = exc.errors()[:1] if first else exc.errors()
    parts = []
    for error in found:
        where, message = field_of(error, within), error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def checked(model: type[ModelT], values: Mapping[str, Any]) -> ModelT:
    """`values` as a `model`, or an `InvalidInputError` (422) naming every problem: how a
    front end that does not get FastAPI's body validation (a form, CLI options) checks a
    request model."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise InvalidInputError(problems(exc)) from None
