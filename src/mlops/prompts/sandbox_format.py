"""Sizing of string formatting: `fmt % args`, `|format`, `"...".format(...)` and
`format_map`. Widths are capped where they are written, and the output is sized (and charged
to the render's ledger) field by field before it is built."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from mlops.prompts.sandbox_allowlist import MAX_WIDTH
from mlops.prompts.sandbox_sizes import (
    ESCAPE_GROWTH,
    MAX_OUTPUT_CHARS,
    Estimate,
    SandboxRefusal,
    charge,
    escaped_size,
    refuse_over,
    str_repr_size,
    text_size,
)

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?")
_WHAT = "A formatted string"


@lru_cache(maxsize=4096)
def _percent_fields(fmt: str) -> tuple[int, int]:
    """(number of `%` fields, sum of their widths); `*` widths and widths over MAX_WIDTH are
    refused."""
    fields = widths = 0
    for match in _PERCENT_SPEC.finditer(fmt):
        fields += 1
        for number in match.groups():
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise SandboxRefusal(f"Format widths over {MAX_WIDTH} are not allowed.")
            widths += int(number) if number else 0
    return fields, widths


def _field_size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """The longest a value can be in one field: `%s` is its text, `%r` / `!r` its repr."""
    return str_repr_size(value) if isinstance(value, str) else text_size(value, limit)


def percent_estimate(fmt: str, args: Any) -> Estimate:
    """`fmt % args`: every field may hold the largest argument (`%(a)s` repeats one), widths
    included; a `Markup` format escapes its arguments."""
    fields, widths = _percent_fields(fmt)
    values = (
        args.values() if isinstance(args, dict) else args if isinstance(args, tuple) else (args,)
    )
    limit = MAX_OUTPUT_CHARS // max(fields, 1)  # any one over it is refused anyway
    largest = max([0, *(_field_size(v, limit) for v in values)])
    if isinstance(fmt, Markup):
        largest *= ESCAPE_GROWTH
    return Estimate(len(fmt) + widths + fields * largest)


def _spec_widths(spec: str) -> int:
    """The sum of the numbers in a resolved format spec; any one over MAX_WIDTH is refused."""
    total = 0
    for number in re.findall(r"\d+", spec):
        if len(number) > 6 or int(number) > MAX_WIDTH:
            raise SandboxRefusal(f"Format widths over {MAX_WIDTH} are not allowed.")
        total += int(number)
    return total


def check_brace_format(fmt: str, depth: int = 0) -> None:
    """Literal widths of `{...}` fields, nested specs included, parsed as Python does."""
    if depth > 2:
        raise SandboxRefusal("Format specs nested this deeply are not allowed.")
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error when called
    for _literal, field, spec, _conversion in fields:
        if field is not None and spec:
            check_brace_format(spec, depth + 1)
            if "{" not in spec:
                _spec_widths(spec)


class LimitedFormatter(SandboxedFormatter):
    """The sandbox's `str.format` formatter; every field's resolved spec (nested `{1}` widths
    included) and value is sized and charged before it is formatted, and so is the running
    size of the output."""

    def __init__(self, env: Any, literal_size: int, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.total = literal_size

    def _value_size(self, value: Any) -> int:
        return text_size(value)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            escaped = isinstance(self, LimitedEscapeFormatter)
            refuse_over(self.total + _field_size(value) * (ESCAPE_GROWTH if escaped else 1), _WHAT)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        added = _spec_widths(format_spec) + self._value_size(value)
        self.total += added
        refuse_over(self.total, _WHAT)
        charge(Estimate(added, copies=2), _WHAT)
        return super().format_field(value, format_spec)


class LimitedEscapeFormatter(LimitedFormatter, SandboxedEscapeFormatter):
    """The same checks for `Markup("...").format` (fields are escaped: up to 5x longer)."""

    def _value_size(self, value: Any) -> int:
        return escaped_size(value)
