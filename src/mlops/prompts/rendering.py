"""Sandboxed rendering of prompt templates: Jinja2's immutable sandbox with StrictUndefined,
includes limited to the same store (and the same commit), declared-variable checks, and a
budget on every render: time, output length, and memory.

What a template may call is an allowlist (`sandbox_allowlist`): each filter, test, global
and method is sized before it runs (`sandbox_sizes`), string formatting field by field
(`sandbox_format`), through the hooks of `sandbox_runtime`; anything not listed is refused
with a RenderError naming it.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
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
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from markupsafe import Markup

from mlops.errors import InvalidInputError, MlopsError
from mlops.prompts.models import PromptMetadata, VariableSpec, check_name
from mlops.prompts.sandbox_allowlist import FILTERS, TESTS
from mlops.prompts.sandbox_format import (
    LimitedEscapeFormatter,
    LimitedFormatter,
    check_brace_format,
    percent_estimate,
)
from mlops.prompts.sandbox_runtime import (
    GLOBALS,
    BudgetedLoop,
    SizedOperations,
    budgeted_concat,
    call_rule,
    check_operands,
    checked_output,
    estimate_call,
    format_filter,
    plus_estimate,
    sized_filter,
)
from mlops.prompts.sandbox_sizes import (
    MAX_OUTPUT_CHARS,
    SandboxRefusal,
    charge,
    check_deadline,
    materialized,
    render_budget,
)

__all__ = ["MAX_OUTPUT_CHARS", "PromptEnvironment", "RenderError", "render_template"]

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
            finalize=checked_output,
        )
        self.concat = budgeted_concat  # type: ignore[method-assign]
        self.globals = dict(GLOBALS)
        builtin = self.filters
        self.filters = {
            name: sized_filter(name, rule, builtin[name]) for name, rule in FILTERS.items()
        }
        self.filters["format"] = format_filter(builtin["format"])
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
        result: nodes.Template = SizedOperations().visit(tree)
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
        rule, owner, what = call_rule(__obj)
        if isinstance(__obj, LoopContext) and args:  # recursive `loop(children)`
            args = (BudgetedLoop(args[0]), *args[1:])
        if rule.size is not None:
            if rule.gather:
                args = tuple(materialized(a) for a in args)
            sized = args if owner is None else (owner, *args)
            charge(estimate_call(rule.size, sized, __obj, args, kwargs), what)
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
            check_operands(operator, left, right)
        elif operator == "+":
            charge(plus_estimate(left, right), "A '+' result")
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
