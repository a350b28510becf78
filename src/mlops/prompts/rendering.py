"""Sandboxed rendering of prompt templates: Jinja2's immutable sandbox with StrictUndefined,
includes limited to the same store (and the same commit), declared-variable checks, and
budgets on loop time, ranges, widths, integer sizes and output length."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from mlops.errors import InvalidInputError, MlopsError
from mlops.prompts.models import PromptMetadata, VariableSpec, check_name

MAX_RANGE = 100_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_WIDTH = 10_000
MAX_INT_BITS = 4096
_QUOTED = re.compile(r"'([^']+)'")
_END_TOKENS = {"end of print statement": "}}", "end of statement block": "%}"}
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_SPEC = re.compile(r"\{[^{}]*\}")
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "batch", "slice", "truncate")
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "any": lambda v: True,
}

SourceReader = Callable[[str, str], str]
"""(commit sha, template name) -> template source; raises NotFoundError when absent."""


class RenderError(InvalidInputError):
    """A template failed to parse or render, or its variables do not fit the declaration."""

    code = "render_failed"

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message, {"kind": kind, **details})
        self.kind = kind


class RenderTimeout(SecurityError):
    """The render went over its time budget."""


class _Budget(threading.local):
    deadline: float = float("inf")


_budget = _Budget()


def _check_deadline() -> None:
    if time.monotonic() > _budget.deadline:
        raise RenderTimeout("The render went over its time budget.")


def _loop_budget(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wraps every `{% for %}` iterable: the time budget is checked on each item."""
    for item in iterable:
        _check_deadline()
        yield item


def _budgeted_concat(chunks: Iterable[str]) -> str:
    """Jinja's `concat` (joins the chunks of a render, a macro, a block), stopped as soon as
    the output goes over the limit."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise RenderError("output_limit", f"The output is over {MAX_OUTPUT_CHARS} characters.")
        parts.append(chunk)
    return "".join(parts)


def _budgeted_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() of {len(rng)} items is over the limit of {MAX_RANGE}.")
    return rng


@lru_cache(maxsize=4096)
def _check_format_string(fmt: str) -> None:
    """Refuse width/precision fields that would build huge strings (`%0999999d`, `{:>9999999}`)."""
    numbers = [n for m in _PERCENT_SPEC.finditer(fmt) for n in m.groups() if n]
    for field in _BRACE_SPEC.findall(fmt):
        numbers.extend(re.findall(r"\d+|\*", field.partition(":")[2]))
    for number in numbers:
        if number == "*" or int(number) > MAX_WIDTH:
            raise SecurityError(f"Format widths over {MAX_WIDTH} are not allowed.")


def _wrap_width_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and abs(value) > MAX_WIDTH:
                raise SecurityError(f"Filter arguments over {MAX_WIDTH} are not allowed.")
        return func(*args, **kwargs)

    checked.__wrapped__ = func  # type: ignore[attr-defined]
    for attr in ("jinja_pass_arg",):
        if hasattr(func, attr):
            setattr(checked, attr, getattr(func, attr))
    return checked


class _StoreLoader(BaseLoader):
    """Loads `<sha>:<name>`: template `name` as it was in commit `sha` of the store."""

    def __init__(self, read_source: SourceReader) -> None:
        self.read_source = read_source

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        sha, sep, name = template.partition(":")
        if not sep:
            raise TemplateNotFound(template)
        try:
            source = self.read_source(sha, check_name(name))
        except MlopsError as exc:
            raise TemplateNotFound(name) from exc
        return source, None, lambda: True


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox prompts render in; compiled templates are cached by (commit, name)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, read_source: SourceReader) -> None:
        super().__init__(
            loader=_StoreLoader(read_source),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
            cache_size=5000,
            keep_trailing_newline=True,
        )
        for name in ("cycler", "joiner", "lipsum"):
            self.globals.pop(name, None)
        self.concat = _budgeted_concat  # type: ignore[method-assign]
        self.globals["range"] = _budgeted_range
        self.globals["_loop_budget"] = _loop_budget
        for name in _WIDTH_FILTERS:
            self.filters[name] = _wrap_width_filter(self.filters[name])
        self.filters["format"] = self._format_filter(self.filters["format"])

    @staticmethod
    def _format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
        def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
            _check_format_string(str(value))
            return func(value, *args, **kwargs)

        return checked

    def join_path(self, template: str, parent: str) -> str:
        """`{% include "other" %}` in `<sha>:<name>` loads `<sha>:other` (same store and commit)."""
        sha = parent.partition(":")[0]
        return f"{sha}:{template}"

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.Name("_loop_budget", "load"), [loop.iter], [], None, None, lineno=loop.lineno
            )
        return tree

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`"...".format` is checked for huge widths when it is looked up."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_string(value.__self__)
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            _check_format_string(left)
        elif operator in ("*", "**"):
            _check_operands(operator, left, right)
        return super().call_binop(context, operator, left, right)


def _check_operands(operator: str, left: Any, right: Any) -> None:
    ints = [v for v in (left, right) if isinstance(v, int)]
    if any(v.bit_length() > MAX_INT_BITS for v in ints):
        raise SecurityError("Integers over 4096 bits are not allowed.")
    if operator == "**" and isinstance(right, int) and abs(right) > 256:
        raise SecurityError("Exponents over 256 are not allowed.")
    sized = [v for v in (left, right) if isinstance(v, str | list | tuple)]
    if operator == "*" and sized and ints and len(sized[0]) * max(ints) > MAX_OUTPUT_CHARS:
        raise SecurityError(f"Results over {MAX_OUTPUT_CHARS} items are not allowed.")


def syntax_error(exc: TemplateSyntaxError, source: str) -> RenderError:
    """A syntax error with its line and, where the offending token can be found, column."""
    line_no = exc.lineno
    lines = source.splitlines()
    column = None
    if 1 <= line_no <= len(lines):
        text = lines[line_no - 1]
        tokens = _QUOTED.findall(exc.message or "")
        for token in reversed([_END_TOKENS.get(t, t) for t in tokens]):
            if token in text:
                column = text.index(token) + 1
                break
    where = f"line {line_no}" + (f", column {column}" if column else "")
    return RenderError(
        "syntax", f"Template syntax error at {where}: {exc.message}", line=line_no, column=column
    )


def check_template(env: PromptEnvironment, source: str, metadata: PromptMetadata) -> None:
    """Parse the template and check it only uses declared variables (and known globals)."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc, source) from None
    used = meta.find_undeclared_variables(tree) - set(env.globals)
    undeclared = sorted(used - set(metadata.variables))
    if undeclared:
        raise RenderError(
            "undeclared_variable",
            f"The template uses undeclared variable(s): {', '.join(undeclared)}; "
            "declare them in prompt.yaml.",
            variables=undeclared,
        )


def bind_variables(declared: dict[str, VariableSpec], given: dict[str, Any]) -> dict[str, Any]:
    """Declared variables with defaults applied; missing, unknown or mistyped ones refused."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise RenderError(
            "unknown_variable", f"Unknown variable(s): {', '.join(unknown)}.", variables=unknown
        )
    bound: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            if not _TYPES[spec.type](value):
                raise RenderError(
                    "wrong_type",
                    f"Variable '{name}' must be of type {spec.type}, got {type(value).__name__}.",
                    variable=name,
                )
            bound[name] = value
        elif spec.required and spec.default is None:
            raise RenderError(
                "missing_variable", f"Missing required variable '{name}'.", variable=name
            )
        else:
            bound[name] = spec.default
    return bound


def render_template(
    env: PromptEnvironment, sha: str, name: str, variables: dict[str, Any], timeout_s: float
) -> str:
    """Render `name` as of commit `sha` within the time and output budgets."""
    key = f"{sha}:{name}"
    try:
        template = env.get_template(key)
    except TemplateSyntaxError as exc:
        raise syntax_error(exc, env.loader.get_source(env, key)[0]) from None  # type: ignore[union-attr]
    _budget.deadline = time.monotonic() + timeout_s
    try:
        output = template.render(variables)
        _check_deadline()
    except RenderTimeout:
        raise RenderError("timeout", f"The render went over its {timeout_s:g} s budget.") from None
    except RenderError:
        raise
    except Exception as exc:
        raise _render_failure(exc) from None
    finally:
        _budget.deadline = float("inf")
    return output


def _render_failure(exc: Exception) -> RenderError:
    if isinstance(exc, SecurityError) or "is unsafe" in str(exc):
        return RenderError("security", f"Refused by the sandbox: {exc}")
    if isinstance(exc, UndefinedError):
        return RenderError("undefined", f"Undefined value: {exc.message}")
    if isinstance(exc, TemplateNotFound):
        return RenderError("not_found", f"Included template not found: {exc.name}")
    if isinstance(exc, TemplateError):
        return RenderError("template_error", f"Template error: {exc.message}")
    if isinstance(exc, RecursionError):
        return RenderError("recursion", "The template recursed too deeply.")
    return RenderError("runtime_error", f"{type(exc).__name__}: {exc}")
