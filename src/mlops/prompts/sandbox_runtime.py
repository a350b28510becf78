"""The sandbox's hooks into a render: the globals and filters templates get, the calls the
parser adds (loops, `~`, slices), and how a call, filter or operator is sized and charged
before it runs (by the rules of `sandbox_allowlist`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import Undefined, nodes
from jinja2.runtime import BlockReference, LoopContext, Macro
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from mlops.prompts.sandbox_allowlist import Rule, method_rule
from mlops.prompts.sandbox_format import percent_estimate
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
    text_size,
)

MAX_RANGE = 100_000
MAX_INT_BITS = 4096


class BudgetedLoop:
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


def budgeted_concat(chunks: Iterable[str]) -> str:
    """Jinja's `concat` (joins the chunks of a render, a macro, a block), stopped as soon as
    the output goes over the limit; the chunks and the joined text are charged to the ledger
    (every 64 KB, so many small chunks cost no call each)."""
    parts: list[str] = []
    size = pending = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SandboxRefusal(
                f"The output is over {MAX_OUTPUT_CHARS} characters.", kind="output_limit"
            )
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


class SizedOperations(NodeTransformer):
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


def checked_output(value: Any) -> Any:
    """Jinja's `finalize`: each `{{ ... }}` value is sized before it is turned into text."""
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            refuse_over(len(value), "An output value")
    else:
        charge(Estimate(text_size(value)), "An output value")
    return value


def sized_filter(name: str, rule: Rule, func: Callable[..., Any]) -> Callable[..., Any]:
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
            charge(estimate_call(rule.size, args[data:], func, args, kwargs), what)
        return func(*args, **kwargs)

    return checked


def estimate_call(
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


def format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
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


GLOBALS: dict[str, Any] = {
    "range": _budgeted_range,
    "dict": dict,
    "namespace": Namespace,
    "_loop_budget": BudgetedLoop,
    "_checked_join": _checked_join,
    "_checked_slice": _checked_slice,
}
"""The only globals a template sees (Jinja's `cycler`, `joiner` and `lipsum` are left out)."""
_SIZED_GLOBALS: dict[int, Rule] = {
    id(dict): Rule(_new_mapping, gather=True),
    id(Namespace): Rule(_new_mapping, gather=True),
    **{id(g): Rule() for g in (_budgeted_range, BudgetedLoop, _checked_join, _checked_slice)},
}
_RUNTIME_CALLABLES = (Macro, BlockReference, LoopContext)
"""Jinja's own callables: macros and `caller`, `self.block()` / `super()`, `loop(...)`."""
_LOOP_METHODS = frozenset({"cycle", "changed"})
FREE = Rule()


def call_rule(obj: Any) -> tuple[Rule, Any, str]:
    """How a call of `obj` from a template is sized: (rule, the value the sizer gets first,
    what to name in an error); a callable that is not on the allowlist is refused."""
    rule = _SIZED_GLOBALS.get(id(obj))
    if rule is not None:
        return rule, None, f"{getattr(obj, '__name__', 'call')}()"
    if isinstance(obj, (Undefined, *_RUNTIME_CALLABLES)):
        return FREE, None, ""  # calling an Undefined raises its own error
    if getattr(obj, "sandbox_sized", False) is True:  # "...".format, sized by its formatter
        return FREE, None, ""
    if isinstance(obj, types.BuiltinMethodType | types.MethodType):
        owner, name = obj.__self__, obj.__name__
        if isinstance(owner, LoopContext) and name in _LOOP_METHODS:
            return FREE, None, ""
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


def plus_estimate(left: Any, right: Any) -> Estimate:
    """`a + b`: strings and sequences are joined (a `Markup` escapes the other side)."""
    if isinstance(left, int | float) and isinstance(right, int | float):
        return NOTHING
    if isinstance(left, str) or isinstance(right, str):
        markup = isinstance(left, Markup) or isinstance(right, Markup)
        size = escaped_size if markup else text_size
        return Estimate(size(left) + size(right))
    return Estimate(items=count(left) + count(right), text=False)


def check_operands(operator: str, left: Any, right: Any) -> None:
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
