"""User-given names that become keys, file names or URL parts: tickers, dataset names, ...

A name is compared byte for byte wherever it is used later, so ``"ZZNX\\n"`` ingested as a
ticker can never be served under ``ZZNX``, and a dataset called ``"x\\n"`` puts a newline in
its download's headers. ``check_name`` refuses, for every kind of name, what can never be
meant: empty names, leading or trailing whitespace and control characters. A ``NameRule``
adds the characters a kind allows, matched against the whole value (``re.fullmatch``;
a ``$`` anchor would also accept a trailing newline).

Domain functions call ``check_name`` / ``NameRule.check`` (``InvalidInputError``: HTTP 422,
exit code 2); request models use the ``Annotated`` types below, which Pydantic turns into
the same 422 in the API and exit code 2 in the CLI.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from mlops.errors import InvalidInputError

__all__ = [
    "DATASET_NAME",
    "EXPERIMENT_NAME",
    "TICKER",
    "NameRule",
    "SafeName",
    "Ticker",
    "check_name",
    "name_problem",
]

_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}  # control, format (zero-width), line/paragraph separators


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a name of any kind, or None."""
    if not value:
        return "it is empty"
    for char in value:
        if unicodedata.category(char) in _INVISIBLE:
            return f"it contains the control character {char!r}"
    if value != value.strip():
        return "it has leading or trailing whitespace"
    return None


def check_name(value: str, kind: str) -> str:
    """Return ``value`` if it is usable as a name; raise ``InvalidInputError`` if not."""
    problem = name_problem(value)
    if problem is not None:
        raise InvalidInputError(f"Invalid {kind} {value!r}: {problem}.", {kind: value})
    return value


@dataclass(frozen=True)
class NameRule:
    """The names of one kind: ``body`` is a regular expression for the whole name."""

    kind: str
    body: str
    allowed: str

    @property
    def regex(self) -> str:
        """``body`` anchored to the whole string, for tools that search (``re.search``)."""
        return rf"\A(?:{self.body})\Z"

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a valid name of this kind, or None."""
        problem = name_problem(value)
        if problem is None and not re.fullmatch(self.body, value):
            problem = f"use {self.allowed}"
        return problem

    def check(self, value: str) -> str:
        """Return ``value`` if valid; raise ``InvalidInputError`` naming the problem."""
        problem = self.problem(value)
        if problem is not None:
            raise InvalidInputError(
                f"Invalid {self.kind} {value!r}: {problem}.", {self.kind: value}
            )
        return value

    def validate(self, value: str) -> str:
        """Pydantic validator: the same check, raised as ``ValueError``."""
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(f"invalid {self.kind} {value!r}: {problem}")
        return value


def _safe_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(f"invalid name {value!r}: {problem}")
    return value


TICKER = NameRule(
    "ticker",
    r"[A-Z][A-Z0-9.\-]{0,9}",
    "1 to 10 uppercase letters, digits, '.' or '-', starting with a letter",
)
DATASET_NAME = NameRule(
    "dataset name",
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}",
    "1 to 100 letters, digits, '_', '-' or '.', starting with a letter or digit",
)
EXPERIMENT_NAME = NameRule(
    "experiment name",
    r"[A-Za-z0-9][A-Za-z0-9 _.\-/]{0,199}",
    "1 to 200 letters, digits, spaces, '_', '.', '-' or '/', starting with a letter or digit",
)
USER_NAME = NameRule(
    "user name",
    r"[a-z0-9][a-z0-9._-]{0,63}",
    "1 to 64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
)

Ticker = Annotated[str, AfterValidator(TICKER.validate)]
"""A ticker in a request model."""
SafeName = Annotated[str, AfterValidator(_safe_name)]
"""Any user-given name in a request model (no whitespace at the ends, no control characters)."""
