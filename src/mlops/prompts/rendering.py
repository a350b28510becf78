"""Sandboxed rendering of prompt templates: Jinja2's immutable sandbox with StrictUndefined,
includes limited to the same store (and the same commit), declared-variable checks, and
budgets on loop time, ranges, widths, integer sizes and output length."""

from __future__ import annotations

import re
import string
import threading
import time
import types
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
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from mlops.errors import InvalidInputError, MlopsError
from mlops.prompts.models import PromptMetadata, VariableSpec, check_name

MAX_RANGE = 100_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_WIDTH = 10_000
MAX_INT_BITS = 4096
MAX_MAPPED_CHARS = 10 * MAX_OUTPUT_CHARS
_BUDGET_GLOBALS = frozenset({"_loop_budget", "_checked_join"})
"""Globals the parser adds calls to (loops, `~`): a template may not rebind them."""
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


def _size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """An upper-ish estimate of `str(value)`'s length, computed without building it (stops
    counting once over `limit`)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 31 // 100 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        total = 2
        for item in value:
            total += _size(item, limit) + 2
            if total > limit:
                break
        return total
    if isinstance(value, range):
        return len(value) * 8
    return 64


def _refuse_over(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise SecurityError(f"{what} would be over {MAX_OUTPUT_CHARS} characters; refused.")


def _checked_join(*values: Any) -> str:
    """`a ~ b ~ ...`: the size of the result is checked before it is built."""
    _refuse_over(sum(_size(v) for v in values), "A '~' concatenation")
    return "".join(str(v) for v in values)


class _ConcatToCall(NodeTransformer):
    """Compiles `~` as a call of `_checked_join` (Jinja compiles it to `str_join` otherwise)."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        args = [self.visit(n) for n in node.nodes]
        return nodes.Call(
            nodes.Name("_checked_join", "load"), args, [], None, None, lineno=node.lineno
        )


def _spec_widths(spec: str) -> int:
    """The sum of the numbers in a resolved format spec; any one over MAX_WIDTH is refused."""
    total = 0
    for number in re.findall(r"\d+", spec):
        if len(number) > 6 or int(number) > MAX_WIDTH:
            raise SecurityError(f"Format widths over {MAX_WIDTH} are not allowed.")
        total += int(number)
    return total


def _check_brace_format(fmt: str, depth: int = 0) -> None:
    """Literal widths of `{...}` fields, nested specs included, parsed as Python does."""
    if depth > 2:
        raise SecurityError("Format specs nested this deeply are not allowed.")
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error when called
    for _literal, field, spec, _conversion in fields:
        if field is not None and spec:
            _check_brace_format(spec, depth + 1)
            if "{" not in spec:
                _spec_widths(spec)


class _LimitedFormatter(SandboxedFormatter):
    """The sandbox's `str.format` formatter; every field's resolved spec (nested `{1}` widths
    included) and value is checked, and so is the running size of the output."""

    def __init__(self, env: Any, literal_size: int, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.total = literal_size

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:  # `!r` / `!a` escape: up to 4 characters per character
            _refuse_over(self.total + _size(value) * 4, "A formatted string")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.total += _spec_widths(format_spec) + _size(value)
        _refuse_over(self.total, "A formatted string")
        return super().format_field(value, format_spec)


class _LimitedEscapeFormatter(_LimitedFormatter, SandboxedEscapeFormatter):
    """The same checks for `Markup("...").format` (fields are escaped)."""


def _checked_output(value: Any) -> Any:
    """Jinja's `finalize`: each `{{ ... }}` value is sized before it is turned into text."""
    _refuse_over(_size(value), "An output value")
    return value


def _check_percent(fmt: str, args: Any) -> None:
    """`fmt % args`: widths checked, then the result size estimated."""
    _check_format_string(fmt)
    widths = sum(
        int(n) for m in _PERCENT_SPEC.finditer(fmt) for n in m.groups() if n and n.isdigit()
    )
    _refuse_over(len(fmt) + widths + _size(args), "A '%' formatting")


def _sized_filter(
    name: str, estimate: Callable[..., int], func: Callable[..., Any]
) -> Callable[..., Any]:
    """A filter whose result size is estimated (from its arguments) before it runs; an
    iterator argument (`range(..)|map(..)|join`) is materialized first so it can be sized."""
    data = 1 if hasattr(func, "jinja_pass_arg") else 0

    def checked(*args: Any, **kwargs: Any) -> Any:
        if len(args) > data and isinstance(args[data], Iterator):
            args = (*args[:data], _materialized(args[data]), *args[data + 1 :])
        _refuse_over(estimate(*args, **kwargs), f"The result of |{name}")
        return func(*args, **kwargs)

    checked.__wrapped__ = func  # type: ignore[attr-defined]
    if hasattr(func, "jinja_pass_arg"):
        checked.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return checked


def _capped_map(func: Callable[..., Any]) -> Callable[..., Any]:
    """`|map('filter', ...)` builds new values: their total size is capped (at ten times the
    output limit), so materializing them (`|list`, `loop.length`) cannot exhaust memory.
    `|map(attribute=...)` only yields existing values and is not capped."""

    def checked(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        result = func(context, value, *args, **kwargs)
        if "attribute" in kwargs or not args:
            return result
        return _capped_results(result)

    checked.__wrapped__ = func  # type: ignore[attr-defined]
    checked.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return checked


def _capped_results(items: Iterable[Any]) -> Iterator[Any]:
    total = 0
    for item in items:
        total += _size(item)
        if total > MAX_MAPPED_CHARS:
            raise SecurityError(f"|map results over {MAX_MAPPED_CHARS} characters in all.")
        yield item


def _materialized(value: Any) -> Any:
    if isinstance(value, str | list | tuple | dict):
        return value
    items = []
    for item in value:
        _check_deadline()
        items.append(item)
        if len(items) > MAX_OUTPUT_CHARS:
            raise SecurityError("Sequences over the output limit are not allowed.")
    return items


def _est_join(value: Any, d: Any = "", attribute: Any = None) -> int:
    seq = _materialized(value) if not isinstance(value, str) else value
    count = len(seq)
    return _size(d) * max(count - 1, 0) + _size(list(seq) if not isinstance(seq, str) else seq)


def _est_replace(s: Any, old: Any, new: Any, count: Any = None) -> int:
    new_size = _size(new)
    if not isinstance(s, str):
        return _size(s) + (_size(s) + 1) * new_size
    old = str(old)
    hits = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(new_size - len(old), 0)


def _est_indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    text = str(s) if isinstance(s, str) else ""
    size = _size(s)
    pad = width if isinstance(width, int) else _size(width)
    return size + (text.count("\n") + 1) * max(pad, 0)


def _est_wordwrap(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> int:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    size = _size(s)
    text = s if isinstance(s, str) else ""
    step = max(width, 1) if isinstance(width, int) else 1
    lines = size // step + text.count("\n") + text.count(" ") + 1
    return size + lines * max(_size(wrapstring) if wrapstring is not None else 1, 1)


def _est_center(value: Any, width: Any = 80) -> int:
    return max(_size(value), width if isinstance(width, int) else 0)


def _est_truncate(
    s: Any, length: Any = 255, killwords: Any = False, end: Any = "...", leeway: Any = None
) -> int:
    return _size(s) + _size(end)


def _est_value(value: Any, *args: Any, **kwargs: Any) -> int:
    return _size(value)


def _est_sum(env: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> int:
    items = _materialized(iterable)
    if isinstance(start, int | float) and all(isinstance(i, int | float) for i in items):
        return 0
    return _size(items) + _size(start)


def _str_method_size(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The result size of a call of a `str` method that can grow a string, else None."""
    text, name = method.__self__, method.__name__
    values = [*args, *kwargs.values()]
    if name in ("ljust", "rjust", "center", "zfill"):
        width = values[0] if values and isinstance(values[0], int) else 0
        return max(len(text), width)
    if name == "expandtabs":
        tab = values[0] if values and isinstance(values[0], int) else 8
        return len(text) + text.count("\t" if isinstance(text, str) else b"\t") * max(tab, 0)
    if name == "join":
        return _est_join(values[0] if values else "", text)
    if name == "replace" and len(values) >= 2:
        return _est_replace(text, *values[:3])
    if name == "translate" and values:
        table = values[0]
        items = table.values() if isinstance(table, dict) else table
        if not isinstance(items, Iterable) or isinstance(items, str | bytes):
            return len(text) * max(_size(table), 1)
        return len(text) * max([1, *(_size(v) for v in _materialized(items))])
    return None


_GROWING_METHODS = frozenset(
    {"ljust", "rjust", "center", "zfill", "expandtabs", "join", "replace", "translate"}
)


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

    intercepted_binops = frozenset({"*", "**", "%", "+", "//"})

    def __init__(self, read_source: SourceReader) -> None:
        super().__init__(
            loader=_StoreLoader(read_source),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=False,
            cache_size=5000,
            keep_trailing_newline=True,
            finalize=_checked_output,
        )
        for name in ("cycler", "joiner", "lipsum"):
            self.globals.pop(name, None)
        self.concat = _budgeted_concat  # type: ignore[method-assign]
        self.globals["range"] = _budgeted_range
        self.globals["_loop_budget"] = _loop_budget
        self.globals["_checked_join"] = _checked_join
        for name in _WIDTH_FILTERS:
            self.filters[name] = _wrap_width_filter(self.filters[name])
        for name, estimate in _FILTER_ESTIMATES.items():
            self.filters[name] = _sized_filter(name, estimate, self.filters[name])
        self.filters["map"] = _capped_map(self.filters["map"])
        self.filters["format"] = self._format_filter(self.filters["format"])

    @staticmethod
    def _format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
        def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
            _check_percent(str(value), kwargs or args)
            return func(value, *args, **kwargs)

        return checked

    def join_path(self, template: str, parent: str) -> str:
        """`{% include "other" %}` in `<sha>:<name>` loads `<sha>:other` (same store and commit)."""
        sha = parent.partition(":")[0]
        return f"{sha}:{template}"

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for node in tree.find_all((nodes.Name, nodes.Macro, nodes.FromImport, nodes.Import)):
            bound = [getattr(node, "name", None), getattr(node, "target", None)]
            if isinstance(node, nodes.FromImport):
                bound += [n if isinstance(n, str) else n[-1] for n in node.names]
            if isinstance(node, nodes.Name) and node.ctx == "load":
                bound = []
            hidden = sorted(_BUDGET_GLOBALS.intersection(b for b in bound if isinstance(b, str)))
            if hidden:
                raise TemplateSyntaxError(
                    f"'{hidden[0]}' is reserved by the sandbox.", node.lineno, name, filename
                )
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.Name("_loop_budget", "load"), [loop.iter], [], None, None, lineno=loop.lineno
            )
        result: nodes.Template = _ConcatToCall().visit(tree)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        name = getattr(__obj, "__name__", None)
        if name in _GROWING_METHODS and isinstance(getattr(__obj, "__self__", None), str | bytes):
            if name == "join" and args and isinstance(args[0], Iterator):
                args = (_materialized(args[0]), *args[1:])
            size = _str_method_size(__obj, args, kwargs)
            if size is not None:
                _refuse_over(size, f"The result of str.{name}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`"...".format` / `format_map`: literal widths are checked when it is looked up, and
        each field's resolved spec and the output size when it is called."""
        if not isinstance(
            value, types.MethodType | types.BuiltinMethodType
        ) or value.__name__ not in ("format", "format_map"):
            return None
        fmt = value.__self__
        if not isinstance(fmt, str):
            return None
        _check_brace_format(fmt)
        is_format_map = value.__name__ == "format_map"
        env = self

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            formatter = (
                _LimitedEscapeFormatter(env, len(fmt), escape=fmt.escape)
                if isinstance(fmt, Markup)
                else _LimitedFormatter(env, len(fmt))
            )
            return type(fmt)(formatter.vformat(fmt, args, kwargs))

        return wrapper

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        elif operator in ("*", "**", "//"):
            _check_operands(operator, left, right)
        elif operator == "+" and not (
            isinstance(left, int | float) and isinstance(right, int | float)
        ):
            _refuse_over(_size(left) + _size(right), "A '+' result")
        return super().call_binop(context, operator, left, right)


def _check_operands(operator: str, left: Any, right: Any) -> None:
    ints = [v for v in (left, right) if isinstance(v, int)]
    if any(v.bit_length() > MAX_INT_BITS for v in ints):
        raise SecurityError("Integers over 4096 bits are not allowed.")
    if operator == "**" and isinstance(right, int) and abs(right) > 256:
        raise SecurityError("Exponents over 256 are not allowed.")
    sized = [v for v in (left, right) if isinstance(v, str | bytes | list | tuple)]
    counts = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
    if operator == "*" and sized and counts:
        _refuse_over(_size(sized[0]) * max(counts[0], 0), "A '*' result")


_FILTER_ESTIMATES: dict[str, Callable[..., int]] = {
    "join": lambda env, value, d="", attribute=None: _est_join(value, d),
    "replace": lambda env, s, old, new, count=None: _est_replace(s, old, new, count),
    "indent": _est_indent,
    "wordwrap": lambda env, s, width=79, *a, **k: _est_wordwrap(s, width, *a, **k),
    "center": _est_center,
    "truncate": lambda env, s, *a, **k: _est_truncate(s, *a, **k),
    "string": _est_value,
    "tojson": lambda env, value, *a, **k: _size(value) * 2,
    "pprint": _est_value,
    "sum": _est_sum,
}


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
