"""Sizes of template values, computed without building them, and the per-render budget they
are charged to.

Every filter, method and operator that can allocate is sized here *before* it runs: an
`Estimate` bounds the characters and new objects of its result, and `charge` refuses it when
the result alone would be over the value limit or when the render's running total (its
memory ledger) would be over `MAX_RENDER_BYTES`. The ledger counts every charged allocation,
freed or not, so it bounds the render's peak memory from above.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_OUTPUT_CHARS = 1_000_000
"""The longest render output, and the longest string a template may build."""
MAX_ITEMS = 1_000_000
"""The most items a template may gather into one sequence."""
MAX_RENDER_BYTES = 64 * 1024 * 1024
"""The memory ledger of one render: all the values it builds, added up."""
CHAR_BYTES = 4
"""CPython stores a character in 1, 2 or 4 bytes; charged as 4."""
ITEM_BYTES = 96
"""A new small object (a short str is 49-80 bytes, a tuple 56) plus its slot in a list."""
OBJECT_BYTES = 64
"""The header of each value a sized call builds."""
ESCAPE_GROWTH = 5
"""HTML escaping turns one character into at most five (`&#34;`, `&amp;`)."""
REPR_GROWTH = 10
"""`repr` turns one character into at most ten (`\\U000e0001`)."""
JSON_GROWTH = 12
"""JSON (ASCII only) turns one character into at most twelve (a surrogate pair `\\ud83d\\ude00`)."""
CASE_GROWTH = 3
"""Changing case turns one character into at most three (`'ﬃ'.upper() == 'FFI'`)."""
OTHER_CHARS = 80
"""The text of a value of another type (a macro, a loop, a range): `<Macro 'name'>`."""


class SandboxRefusal(SecurityError):
    """The sandbox refused an operation; `kind` is the RenderError kind it is reported as."""

    kind = "security"

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class RenderTimeout(SandboxRefusal):
    """The render went over its time budget."""

    kind = "timeout"


@dataclass(frozen=True)
class Estimate:
    """An upper bound of what a call builds: `chars` characters of text, `items` new objects
    (list slots, tuples, short strings), `copies` of the text alive at once while it is built.
    `text` results are strings, held to the value limit of MAX_OUTPUT_CHARS characters."""

    chars: int = 0
    items: int = 0
    text: bool = True
    copies: int = 1

    @property
    def bytes(self) -> int:
        return CHAR_BYTES * self.chars * self.copies + ITEM_BYTES * self.items + OBJECT_BYTES


NOTHING = Estimate(text=False)
"""What a call that cannot grow builds: a number, a bool, or a value it was given."""


class _Ledger(threading.local):
    deadline: float = float("inf")
    bytes_left: float = float("inf")


_ledger = _Ledger()


@dataclass
class BudgetUse:
    """What one render was allowed (`max_bytes`) and, once it is over, what it charged."""

    max_bytes: int
    charged: int = 0


@contextmanager
def render_budget(timeout_s: float, max_bytes: int | None = None) -> Iterator[BudgetUse]:
    """The time and memory budget of one render, on this thread (memory: MAX_RENDER_BYTES)."""
    use = BudgetUse(MAX_RENDER_BYTES if max_bytes is None else max_bytes)
    _ledger.deadline = time.monotonic() + timeout_s
    _ledger.bytes_left = use.max_bytes
    try:
        yield use
    finally:
        use.charged = int(use.max_bytes - _ledger.bytes_left)
        _ledger.deadline = float("inf")
        _ledger.bytes_left = float("inf")


def check_deadline() -> None:
    if time.monotonic() > _ledger.deadline:
        raise RenderTimeout("The render went over its time budget.")


def refuse_over(chars: int, what: str) -> None:
    """Refuse `what` if its text would be over the value limit."""
    if chars > MAX_OUTPUT_CHARS:
        raise SandboxRefusal(f"{what} would be over {MAX_OUTPUT_CHARS} characters; refused.")


def charge(estimate: Estimate, what: str) -> None:
    """Refuse `what` if its result would be over the value limit or the render's ledger."""
    if estimate.text:
        refuse_over(estimate.chars, what)
    if estimate.items > MAX_ITEMS:
        raise SandboxRefusal(f"{what} would have over {MAX_ITEMS} items; refused.")
    _ledger.bytes_left -= estimate.bytes
    if _ledger.bytes_left < 0:
        raise SandboxRefusal(
            f"{what} would take the render over its {MAX_RENDER_BYTES // 2**20} MB memory "
            "budget; refused.",
            kind="memory_limit",
        )


def charge_bytes(count: int, what: str) -> None:
    """Charge raw bytes (output chunks, materialized items) to the ledger."""
    _ledger.bytes_left -= count
    if _ledger.bytes_left < 0:
        raise SandboxRefusal(
            f"{what} would take the render over its memory budget; refused.", kind="memory_limit"
        )


def materialized(value: Any) -> Any:
    """`value` as a sized collection: an iterator (`map`, `select`) is gathered into a list,
    checking the deadline and charging the ledger for each item."""
    if not isinstance(value, Iterator):
        return value
    items = []
    for item in value:
        items.append(item)
        if len(items) % 256 == 0:
            check_deadline()
            charge_bytes(256 * ITEM_BYTES, "Gathering a sequence")
            if len(items) > MAX_ITEMS:
                raise SandboxRefusal(f"Sequences over {MAX_ITEMS} items are not allowed.")
    charge_bytes(len(items) % 256 * ITEM_BYTES, "Gathering a sequence")
    return items


def count(value: Any) -> int:
    """How many items iterating `value` gives (an unsized value counts as its text)."""
    try:
        return len(value)
    except TypeError:
        return text_size(value, MAX_RENDER_BYTES)


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""What `str.splitlines` splits at."""


def line_count(s: str) -> int:
    """An upper bound of `len(s.splitlines()) + 1`."""
    return sum(s.count(c) for c in LINE_BREAKS) + 1


def str_repr_size(s: str) -> int:
    """An upper bound of `len(repr(s))`."""
    if s.isprintable():
        return len(s) + 2 + s.count("\\") + s.count("'")
    return (4 if s.isascii() else REPR_GROWTH) * len(s) + 2


def str_json_size(s: str) -> int:
    """An upper bound of the length of `s` in Jinja's `tojson` (escaped for HTML too)."""
    if s.isascii() and s.isprintable():
        special = s.count("<") + s.count(">") + s.count("&") + s.count("'")
        return len(s) + 2 + s.count('"') + s.count("\\") + 5 * special
    return (6 if s.isascii() else JSON_GROWTH) * len(s) + 2


def escaped_size(value: Any) -> int:
    """An upper bound of `len(markupsafe.escape(value))`."""
    if isinstance(value, Markup) or hasattr(value, "__html__"):
        return text_size(value)
    if isinstance(value, str):
        return (
            len(value)
            + 4 * (value.count("&") + value.count("'") + value.count('"'))
            + 3 * (value.count("<") + value.count(">"))
        )
    return ESCAPE_GROWTH * text_size(value, MAX_OUTPUT_CHARS // ESCAPE_GROWTH)


def case_size(value: Any) -> int:
    """An upper bound of the length of `value` in upper, lower or title case."""
    if isinstance(value, str) and value.isascii():
        return len(value)
    return CASE_GROWTH * text_size(value, MAX_OUTPUT_CHARS // CASE_GROWTH)


@dataclass
class Shape:
    """What the formatters of nested data depend on, bounded from above: the lengths of its
    `repr` and JSON, how many values it holds, how deeply they nest, how far `pprint` indents
    the deepest, and how many characters its strings hold."""

    repr_chars: int = 0
    json_chars: int = 0
    nodes: int = 0
    depth: int = 0
    indent: int = 0
    string_chars: int = 0


class _TooLarge(Exception):
    pass


def shape(value: Any, limit: int = MAX_OUTPUT_CHARS, json: bool = False) -> Shape:
    """The `Shape` of `value` (`json_chars` only when `json`); once its repr or JSON is known
    to be over `limit`, every field is `limit + 1` (the caller refuses it anyway)."""
    acc = Shape()
    try:
        _walk(value, acc, 0, 0, limit, json)
    except _TooLarge:
        over = limit + 1
        return Shape(over, over, over, over, over, over)
    return acc


_SEQUENCES: tuple[type[Iterable[Any]], ...] = (
    list,
    tuple,
    set,
    frozenset,
    type({}.keys()),
    type({}.values()),
)


def _walk(value: Any, acc: Shape, depth: int, indent: int, limit: int, json: bool) -> None:
    acc.nodes += 1
    acc.depth = max(acc.depth, depth)
    acc.indent = max(acc.indent, indent)
    if isinstance(value, str):
        acc.repr_chars += str_repr_size(value)
        acc.json_chars += str_json_size(value) if json else 0
        acc.string_chars += len(value)
    elif isinstance(value, Mapping | Namespace):
        items = _namespace_attrs(value) if isinstance(value, Namespace) else value
        acc.repr_chars += 13 + 2  # "<Namespace {" / "dict_items([" and the closing brackets
        acc.json_chars += 2
        for key, item in items.items():
            before = acc.repr_chars
            _walk(key, acc, depth + 1, indent + 1, limit, json)
            key_size = acc.repr_chars - before
            acc.repr_chars += 4
            acc.json_chars += 4 + (0 if isinstance(key, str) else 2)
            _walk(item, acc, depth + 1, indent + key_size + 3, limit, json)
            _check_limit(acc, limit)
    elif isinstance(value, _SEQUENCES):
        acc.repr_chars += 13 + 2
        acc.json_chars += 2
        if value:
            acc.depth = max(acc.depth, depth + 1)
            acc.indent = max(acc.indent, indent + 1)
        for item in value:
            if isinstance(item, str) and not json:  # the common case, without a call
                acc.nodes += 1
                acc.repr_chars += str_repr_size(item) + 2
                acc.string_chars += len(item)
            else:
                acc.repr_chars += 2
                acc.json_chars += 2
                _walk(item, acc, depth + 1, indent + 1, limit, json)
            if acc.repr_chars > limit or acc.json_chars > limit:
                raise _TooLarge
    elif isinstance(value, type({}.items())):
        _walk(list(value.mapping.items()), acc, depth, indent, limit, json)
    else:
        size = _scalar_size(value)
        acc.repr_chars += size
        acc.json_chars += size


def _check_limit(acc: Shape, limit: int) -> None:
    if acc.repr_chars > limit or acc.json_chars > limit:
        raise _TooLarge


def _namespace_attrs(value: Namespace) -> dict[str, Any]:
    attrs: dict[str, Any] = object.__getattribute__(value, "_Namespace__attrs")
    return attrs


def _scalar_size(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 31 // 100 + 2
    if isinstance(value, float):
        return 24
    return OTHER_CHARS


def text_size(value: Any, limit: int = MAX_OUTPUT_CHARS) -> int:
    """An upper bound of `len(str(value))` (a collection's `str` is its `repr`), counted up
    to `limit` (over it: `limit + 1`)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int | float | bool) or value is None:
        return _scalar_size(value)
    return shape(value, limit).repr_chars


def total_text(values: Iterable[Any]) -> int:
    """The summed `text_size` of `values`, stopped once over the value limit."""
    total = 0
    for value in values:
        total += text_size(value)
        if total > MAX_OUTPUT_CHARS:
            break
    return total
