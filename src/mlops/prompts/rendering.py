"""Sandboxed rendering of prompt templates: Jinja2's immutable sandbox with StrictUndefined,
includes limited to the same store (and the same commit), declared-variable checks, and a
budget on every render: time, output length, and memory.

What a template may call is an allowlist (`sandbox_allowlist`): each filter, test, global
and method is sized before it runs (`sandbox_sizes`), string formatting field by field
(`sandbox_format`), and anything not listed is refused with a RenderError naming it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    meta,
    nodes,
)
from jinja2.runtime import BlockReference, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from mlops.errors import InvalidInputError, MlopsError
from mlops.prompts.models import PromptMetadata, VariableSpec, check_name
from mlops.prompts.sandbox_allowlist import FILTERS, TESTS, Rule, method_rule
from mlops.prompts.sandbox_format import (
    LimitedEscapeFormatter,
    LimitedFormatter,
    check_brace_format,
    percent_estimate,
)
from mlops.prompts.sandbox_sizes import (
    CHAR_BYTES,
    ITEM_BYTES,
    MAX_OUTPUT_CHARS,
    NOTHING,
    Estimate,
    SandboxRefusal,
    charge,
    charge_bytes,
    check_deadline,
    count,
    escaped_size,
    materialized,
    refuse_over,
    render_budget,
    text_size,
)

__all__ = ["MAX_OUTPUT_CHARS", "PromptEnvironment", "RenderError", "render_template"]

MAX_RANGE = 100_000
MAX_INT_BITS = 4096
_BUDGET_GLOBALS = frozenset({"_loop_budget", "_checked_join", "_checked_slice"})
"""Globals the parser adds calls to (loops, `~`, slices): a template may not rebind them."""
_QUOTED = re.compile(r"'([^']+)'")
_END_TOKENS = {"end of print statement": "}}", "end of statement block": "%}"}
_NAMED_BY_ARGUMENT = {"map": (0, "filter"), "select": (0, "test"), "reject": (0, "test")}
_NAMED_BY_ARGUMENT |= {"selectattr": (1, "test"), "rejectattr": (1, "test")}
"""Filters that take the name of another filter or test as an argument (at this position)."""
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


class _Unsupported(TemplateSyntaxError):
    """A template names a filter or test the sandbox does not allow (found when it is parsed)."""

    def __init__(self, what: str, name: str, node: nodes.Node, template: str | None) -> None:
        allowed = [*sorted(FILTERS), "format"] if what == "filter" else sorted(TESTS)
        super().__init__(
            f"The {what} '{name}' is not allowed in templates; allowed: {', '.join(allowed)}.",
            node.lineno,
            template,
        )
        self.kind = f"unsupported_{what}"


class _BudgetedLoop:
    """Wraps every `{% for %}` iterable: the deadline is checked on each item, and the items
    of an iterator (which `loop.length` gathers into a list) are charged to the ledger."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]  # TypeError: LoopContext gathers

    def __iter__(self) -> Iterator[Any]:
        sized = hasattr(self.iterable, "__len__")
        for item in self.iterable:
            check_deadline()
            if not sized:
                charge_bytes(ITEM_BYTES, "A loop")
            yield item


def _budgeted_concat(chunks: Iterable[str]) -> str:
    """Jinja's `concat` (joins the chunks of a render, a macro, a block), stopped as soon as
    the output goes over the limit; the chunks and the joined text are charged to the ledger
    (every 64 KB, so many small chunks cost no call each)."""
    parts: list[str] = []
    size = pending = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise RenderError("output_limit", f"The output is over {MAX_OUTPUT_CHARS} characters.")
        pending += CHAR_BYTES * len(chunk) + 8
        if pending > 65536:
            charge_bytes(pending, "The output")
            pending = 0
        parts.append(chunk)
    charge_bytes(pending + CHAR_BYTES * size, "The output")
    return "".join(parts)


def _budgeted_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range() of {len(rng)} items is over the limit of {MAX_RANGE}.")
    return rng


def _checked_join(*values: Any) -> str:
    """`a ~ b ~ ...`: the size of the result is checked before it is built."""
    charge(Estimate(sum(text_size(v) for v in values)), "A '~' concatenation")
    return "".join(str(v) for v in values)


def _checked_slice(value: Any, start: Any, stop: Any, step: Any) -> Any:
    """`x[a:b:c]` copies: the copy is charged like the filter `list` or `string`."""
    if isinstance(value, str | list | tuple) and all(
        v is None or isinstance(v, int) for v in (start, stop, step)
    ):
        length = len(range(*slice(start, stop, step).indices(len(value))))
        text = isinstance(value, str)
        charge(Estimate(length if text else 0, 0 if text else length, text=text), "A slice")
    return value[start:stop:step]


class _SizedOperations(NodeTransformer):
    """Compiles `~` as a call of `_checked_join` (Jinja compiles it to `str_join`) and
    slices `x[a:b]` as calls of `_checked_slice` (Jinja compiles them to Python slices)."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        args = [self.visit(n) for n in node.nodes]
        return nodes.Call(
            nodes.Name("_checked_join", "load"), args, [], None, None, lineno=node.lineno
        )

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        if not isinstance(node.arg, nodes.Slice):
            return self.generic_visit(node)
        bounds = [node.arg.start, node.arg.stop, node.arg.step]
        args = [self.visit(node.node)]
        args += [nodes.Const(None) if b is None else self.visit(b) for b in bounds]
        return nodes.Call(
            nodes.Name("_checked_slice", "load"), args, [], None, None, lineno=node.lineno
        )


def _checked_output(value: Any) -> Any:
    """Jinja's `finalize`: each `{{ ... }}` value is sized before it is turned into text."""
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            refuse_over(len(value), "An output value")
    else:
        charge(Estimate(text_size(value)), "An output value")
    return value


def _sized_filter(name: str, rule: Rule, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with its result sized by `rule` (and charged to the ledger) before it runs; an
    iterator argument (`range(..)|map(..)|join`) is gathered first when the rule measures it.
    Filters may copy their string arguments (an `attribute` is split at dots, then named in
    the error of a failed lookup): three copies are charged, also for filters that cannot
    grow."""
    data = 1 if hasattr(func, "jinja_pass_arg") else 0
    what = f"The result of |{name}"

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if len(args) > data + 1 or kwargs:
            extra = (*args[data + 1 :], *kwargs.values())
            copied = sum(len(a) for a in extra if isinstance(a, str))
            if copied:
                charge(Estimate(copied, text=False, copies=3), f"The arguments of |{name}")
        if rule.size is not None:
            if rule.gather and len(args) > data:
                args = (*args[:data], materialized(args[data]), *args[data + 1 :])
            charge(_estimate(rule.size, args[data:], func, args, kwargs), what)
        return func(*args, **kwargs)

    return checked


def _estimate(
    size: Callable[..., Estimate], sized: tuple[Any, ...], func: Any, args: Any, kwargs: Any
) -> Estimate:
    """`size(*sized, **kwargs)`, for the call `func(*args, **kwargs)`: when the call has
    arguments `func` does not take, `func`'s own TypeError is raised (not the sizer's)."""
    try:
        return size(*sized, **kwargs)
    except TypeError:
        with contextlib.suppress(ValueError):  # a builtin without a signature
            inspect.signature(func).bind(*args, **kwargs)
        raise


def _format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    """`fmt|format(*args)` is `fmt % args`: sized like the `%` operator."""

    @functools.wraps(func)
    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            charge(Estimate(text_size(value)), "The text of a |format string")
        charge(percent_estimate(str(value), kwargs or args), "The result of |format")
        return func(value, *args, **kwargs)

    return checked


def _new_mapping(*args: Any, **kwargs: Any) -> Estimate:
    """`dict(...)` / `namespace(...)`: one entry per item of the argument and keyword."""
    return Estimate(items=sum(count(a) for a in args) + len(kwargs), text=False)


_GLOBALS: dict[str, Any] = {
    "range": _budgeted_range,
    "dict": dict,
    "namespace": Namespace,
    "_loop_budget": _BudgetedLoop,
    "_checked_join": _checked_join,
    "_checked_slice": _checked_slice,
}
"""The only globals a template sees (Jinja's `cycler`, `joiner` and `lipsum` are left out)."""
_SIZED_GLOBALS: dict[int, Rule] = {
    id(dict): Rule(_new_mapping, gather=True),
    id(Namespace): Rule(_new_mapping, gather=True),
    **{id(g): Rule() for g in (_budgeted_range, _BudgetedLoop, _checked_join, _checked_slice)},
}
_RUNTIME_CALLABLES = (Macro, BlockReference, LoopContext)
"""Jinja's own callables: macros and `caller`, `self.block()` / `super()`, `loop(...)`."""
_LOOP_METHODS = frozenset({"cycle", "changed"})
_FREE = Rule()


def _call_rule(obj: Any) -> tuple[Rule, Any, str]:
    """How a call of `obj` from a template is sized: (rule, the value the sizer gets first,
    what to name in an error); a callable that is not on the allowlist is refused."""
    rule = _SIZED_GLOBALS.get(id(obj))
    if rule is not None:
        return rule, None, f"{getattr(obj, '__name__', 'call')}()"
    if isinstance(obj, (Undefined, *_RUNTIME_CALLABLES)):
        return _FREE, None, ""  # calling an Undefined raises its own error
    if getattr(obj, "sandbox_sized", False) is True:  # "...".format, sized by its formatter
        return _FREE, None, ""
    if isinstance(obj, types.BuiltinMethodType | types.MethodType):
        owner, name = obj.__self__, obj.__name__
        if isinstance(owner, LoopContext) and name in _LOOP_METHODS:
            return _FREE, None, ""
        found = method_rule(owner, name)
        if found is not None:
            return found, owner, f"The result of {type(owner).__name__}.{name}()"
        owner_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        raise SandboxRefusal(
            f"The method {owner_name}.{name}() is not allowed in templates.",
            kind="unsupported_method",
        )
    raise SandboxRefusal(
        f"Calling a {type(obj).__name__} is not allowed in templates.", kind="unsupported_method"
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
        self.concat = _budgeted_concat  # type: ignore[method-assign]
        self.globals = dict(_GLOBALS)
        builtin = self.filters
        self.filters = {
            name: _sized_filter(name, rule, builtin[name]) for name, rule in FILTERS.items()
        }
        self.filters["format"] = _format_filter(builtin["format"])
        self.tests = {name: test for name, test in self.tests.items() if name in TESTS}

    def join_path(self, template: str, parent: str) -> str:
        """`{% include "other" %}` in `<sha>:<name>` loads `<sha>:other` (same store and commit)."""
        sha = parent.partition(":")[0]
        return f"{sha}:{template}"

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _check_reserved_names(tree, name, filename)
        self._check_allowlisted(tree, name)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.Name("_loop_budget", "load"), [loop.iter], [], None, None, lineno=loop.lineno
            )
        result: nodes.Template = _SizedOperations().visit(tree)
        return result

    def _check_allowlisted(self, tree: nodes.Template, template: str | None) -> None:
        """Every filter and test the template names, also as an argument of `map('upper')` or
        `select('odd')`, must be on the allowlist."""
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            what, known = (
                ("filter", self.filters) if isinstance(node, nodes.Filter) else ("test", self.tests)
            )
            if node.name not in known:
                raise _Unsupported(what, node.name, node, template)
            position, named = _NAMED_BY_ARGUMENT.get(node.name, (None, ""))
            if (
                isinstance(node, nodes.Filter)
                and position is not None
                and len(node.args) > position
            ):
                arg = node.args[position]
                pool = self.filters if named == "filter" else self.tests
                if (
                    isinstance(arg, nodes.Const)
                    and isinstance(arg.value, str)
                    and arg.value not in pool
                ):
                    raise _Unsupported(named, arg.value, node, template)

    def call_filter(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        """`map(name)` with a name known only at render time: refused unless allowlisted."""
        if name not in self.filters:
            raise SandboxRefusal(f"The filter '{name}' is not allowed.", kind="unsupported_filter")
        return super().call_filter(name, value, *args, **kwargs)

    def call_test(self, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        """`select(name)` with a name known only at render time: refused unless allowlisted."""
        if name not in self.tests:
            raise SandboxRefusal(f"The test '{name}' is not allowed.", kind="unsupported_test")
        return super().call_test(name, value, *args, **kwargs)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call from a template: the deadline is checked, the callable must be on the
        allowlist, and its result is sized (and charged) before it runs."""
        check_deadline()
        rule, owner, what = _call_rule(__obj)
        if isinstance(__obj, LoopContext) and args:  # recursive `loop(children)`
            args = (_BudgetedLoop(args[0]), *args[1:])
        if rule.size is not None:
            if rule.gather:
                args = tuple(materialized(a) for a in args)
            sized = args if owner is None else (owner, *args)
            charge(_estimate(rule.size, sized, __obj, args, kwargs), what)
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
        check_brace_format(fmt)
        is_format_map = value.__name__ == "format_map"
        env = self

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs, args = args[0], ()
            formatter = (
                LimitedEscapeFormatter(env, len(fmt), escape=fmt.escape)
                if isinstance(fmt, Markup)
                else LimitedFormatter(env, len(fmt))
            )
            return type(fmt)(formatter.vformat(fmt, args, kwargs))

        wrapper.sandbox_sized = True  # type: ignore[attr-defined]
        return wrapper

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            charge(percent_estimate(left, right), "A '%' formatting")
        elif operator in ("*", "**", "//"):
            _check_operands(operator, left, right)
        elif operator == "+":
            charge(_plus_estimate(left, right), "A '+' result")
        return super().call_binop(context, operator, left, right)


def _check_reserved_names(tree: nodes.Template, name: str | None, filename: str | None) -> None:
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


def _plus_estimate(left: Any, right: Any) -> Estimate:
    """`a + b`: strings and sequences are joined (a `Markup` escapes the other side)."""
    if isinstance(left, int | float) and isinstance(right, int | float):
        return NOTHING
    if isinstance(left, str) or isinstance(right, str):
        markup = isinstance(left, Markup) or isinstance(right, Markup)
        size = escaped_size if markup else text_size
        return Estimate(size(left) + size(right))
    return Estimate(items=count(left) + count(right), text=False)


def _check_operands(operator: str, left: Any, right: Any) -> None:
    ints = [v for v in (left, right) if isinstance(v, int)]
    if any(v.bit_length() > MAX_INT_BITS for v in ints):
        raise SecurityError(f"Integers over {MAX_INT_BITS} bits are not allowed.")
    if operator == "**" and isinstance(right, int) and abs(right) > 256:
        raise SecurityError("Exponents over 256 are not allowed.")
    if operator != "*":
        return
    sized = [v for v in (left, right) if isinstance(v, str | list | tuple)]
    times = [v for v in (left, right) if isinstance(v, int) and not isinstance(v, bool)]
    if sized and times:
        n = max(times[0], 0)
        text = isinstance(sized[0], str)
        length = len(sized[0]) * n
        charge(Estimate(length if text else 0, 0 if text else length, text=text), "A '*' result")


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
    kind = getattr(exc, "kind", "syntax")
    return RenderError(
        kind, f"Template syntax error at {where}: {exc.message}", line=line_no, column=column
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
    try:
        with render_budget(timeout_s):
            output = template.render(variables)
            check_deadline()
    except RenderError:
        raise
    except Exception as exc:
        raise _render_failure(exc, timeout_s) from None
    return output


def _render_failure(exc: Exception, timeout_s: float) -> RenderError:
    if isinstance(exc, SandboxRefusal) and exc.kind == "timeout":
        return RenderError("timeout", f"The render went over its {timeout_s:g} s budget.")
    if isinstance(exc, SandboxRefusal):
        return RenderError(exc.kind, f"Refused by the sandbox: {exc}")
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
