"""What templates may call, and how big each result can be.

An allowlist, not a blocklist: every filter, test and method reachable from a template is
listed here with a sizer that bounds its result from its inputs before it runs (`None`: it
cannot grow, it returns a number, a bool or a value it was given). A filter, test or method
that is not listed is refused, so one added by a Jinja2 upgrade is refused until it is sized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from mlops.prompts.sandbox_sizes import (
    CASE_GROWTH,
    ESCAPE_GROWTH,
    MAX_RENDER_BYTES,
    NOTHING,
    Estimate,
    SandboxRefusal,
    case_size,
    count,
    escaped_size,
    line_count,
    shape,
    text_size,
    total_text,
)

MAX_WIDTH = 10_000
"""The largest width, count or indent argument of a filter or method."""
MAX_PRECISION = 400
"""`round` builds `10 ** precision`: more digits than a float holds are refused."""

Sizer = Callable[..., Estimate]


@dataclass(frozen=True)
class Rule:
    """How a filter or method is sized: `size` gets the call's arguments (None: it cannot
    grow); `gather` first turns an iterator argument into a list so it can be measured."""

    size: Sizer | None = None
    gather: bool = False


CANNOT_GROW = Rule()


def _width(value: Any, what: str = "Filter arguments") -> int:
    if isinstance(value, int) and abs(value) > MAX_WIDTH:
        raise SandboxRefusal(f"{what} over {MAX_WIDTH} are not allowed.")
    return value if isinstance(value, int) else 0


def _widths(*values: Any) -> None:
    for value in values:
        _width(value)


def _copy(value: Any, *args: Any, **kwargs: Any) -> Estimate:
    """A new sequence holding the items of `value` (strings: its characters)."""
    if isinstance(value, str):
        return Estimate(len(value), len(value), text=False)
    return Estimate(items=count(value), text=False)


def _text(value: Any, *args: Any, **kwargs: Any) -> Estimate:
    return Estimate(text_size(value))


def _case_folded(value: Any, case_sensitive: Any, attribute: Any = None) -> int:
    """Characters of the lower-cased copies `sort`, `unique`, `min` compare by (of an item's
    attribute: bounded by the item's text)."""
    if case_sensitive:
        return 0
    if attribute is None:
        return sum(case_size(v) for v in value if isinstance(v, str))
    return sum(
        case_size(v) if isinstance(v, str) else text_size(v, MAX_RENDER_BYTES) for v in value
    )


def _sort(
    value: Any, reverse: Any = False, case_sensitive: Any = False, attribute: Any = None
) -> Estimate:
    """A new list, and (unless case-sensitive) a lower-cased key per item alive with it."""
    keys = 1 if case_sensitive else 2
    folded = _case_folded(value, case_sensitive, attribute)
    return Estimate(folded, keys * count(value), text=False)


def _unique(value: Any, case_sensitive: Any = False, attribute: Any = None) -> Estimate:
    return _sort(value, False, case_sensitive, attribute)


def _extreme(value: Any, case_sensitive: Any = False, attribute: Any = None) -> Estimate:
    """`min` / `max`: two lower-cased items are compared at a time."""
    if case_sensitive:
        return NOTHING
    if isinstance(value, str):
        return Estimate(2 * CASE_GROWTH, text=False)
    largest = max((_case_folded((v,), False, attribute) for v in value), default=0)
    return Estimate(2 * largest, text=False)


def _number(value: Any, *args: Any, **kwargs: Any) -> Estimate:
    """`int` / `float` of a string parse an ASCII copy of it, and `float`'s error quotes it
    whole (`int` tries `float` when it fails)."""
    return Estimate(len(value) if isinstance(value, str) else 0, text=False, copies=2)


def _dictsort(value: Any, case_sensitive: Any = False, *a: Any, **k: Any) -> Estimate:
    keys = value.keys() if hasattr(value, "keys") else ()
    return Estimate(_case_folded(keys, case_sensitive), 2 * count(value), text=False)


def _groupby(value: Any, *args: Any, **kwargs: Any) -> Estimate:
    return Estimate(text_size(value, MAX_RENDER_BYTES), 3 * count(value), text=False)


def _items(value: Any) -> Estimate:
    return Estimate(items=2 * count(value), text=False)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> Estimate:
    lines = max(_width(linecount), 1)
    n = count(value)
    return Estimate(lines * text_size(fill_with), 2 * n + lines, text=False)


def _slice(value: Any, slices: Any, fill_with: Any = None) -> Estimate:
    parts = max(_width(slices), 1)
    return Estimate(parts * text_size(fill_with), count(value) + 2 * parts, text=False)


def _join(value: Any, d: Any = "", attribute: Any = None) -> Estimate:
    n = count(value)  # `str.join` first gathers the items (turned to text) in a list
    return Estimate(total_text(value) + text_size(d) * max(n - 1, 0), items=n)


def replaced_size(s: Any, old: Any, new_size: int, limit: Any = None) -> int:
    """An upper bound of `str(s).replace(old, new, limit)`, `new` being `new_size` long."""
    if not isinstance(s, str):
        size = text_size(s)
        return size + (size + 1) * new_size
    old = str(old)
    hits = len(s) + 1 if not old else s.count(old)
    if isinstance(limit, int) and limit >= 0:
        hits = min(hits, limit)
    return len(s) + hits * max(new_size - len(old), 0)


def _replace(s: Any, old: Any, new: Any, count: Any = None) -> Estimate:
    return Estimate(replaced_size(s, old, text_size(new), count))


def _indent(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> Estimate:
    pad = _width(width) if isinstance(width, int) else text_size(width)
    size = text_size(s)
    lines = line_count(s) if isinstance(s, str) else size + 1
    return Estimate(size + lines * max(pad + 1, 1), items=lines, copies=3)


def _wordwrap(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> Estimate:
    """`textwrap.wrap` of each line: its chunks (about two per word) are new strings, and a
    line (joined by `wrapstring`) starts at each chunk at worst, or every `width` characters."""
    _widths(width)
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None)
    size = text_size(s)
    chunks = _word_count(s) + (line_count(s) if isinstance(s, str) else size)
    lines = size // max(width, 1) + chunks if isinstance(width, int) else size + chunks
    sep = max(text_size(wrapstring) if wrapstring is not None else 1, 1)
    return Estimate(size + lines * sep, items=chunks + lines, copies=2)


def _center(value: Any, width: Any = 80) -> Estimate:
    return Estimate(max(text_size(value), _width(width)))


def _truncate(
    s: Any, length: Any = 255, killwords: Any = False, end: Any = "...", leeway: Any = None
) -> Estimate:
    _widths(length, leeway)
    return Estimate(text_size(s) + text_size(end))


def _sum(iterable: Any, attribute: Any = None, start: Any = 0) -> Estimate:
    """Numbers add up in place; sequences are copied at each step (quadratic)."""
    values = [_attribute(i, attribute) for i in iterable] if attribute is not None else iterable
    if isinstance(start, int | float) and all(isinstance(v, int | float) for v in values):
        return NOTHING
    total = sum(count(v) for v in values) + count(start)
    return Estimate(items=total * max(len(values), 1), text=False)


def _attribute(item: Any, attribute: Any) -> Any:
    """`item.a.b` as Jinja's `attribute=` resolves it in JSON data (None when it cannot)."""
    for part in str(attribute).split("."):
        key: Any = int(part) if part.isdigit() else part
        try:
            item = item[key]
        except (KeyError, IndexError, TypeError):
            return None
    return item


def _round(value: Any, precision: Any = 0, method: Any = "common") -> Estimate:
    if isinstance(precision, int) and abs(precision) > MAX_PRECISION:
        raise SandboxRefusal(f"round() precision over {MAX_PRECISION} is not allowed.")
    return NOTHING


def _escape(value: Any) -> Estimate:
    return Estimate(escaped_size(value))


def _forceescape(value: Any) -> Estimate:
    return Estimate(escaped_size(str(value)) if isinstance(value, str) else escaped_size(value))


def _case(value: Any, *args: Any, **kwargs: Any) -> Estimate:
    size = case_size(value)
    return Estimate(size, items=_word_count(value), copies=2)


def _word_count(value: Any) -> int:
    """An upper bound of the words (parts between separators) of `str(value)`."""
    if isinstance(value, str) and value.isascii():
        return 2 * sum(value.count(c) for c in " \t\n\r\x0b\x0c-({[<") + 1
    return text_size(value) + 1


def _wordcount(s: Any) -> Estimate:
    return Estimate(text_size(s), _word_count(s), text=False)


def _striptags(value: Any) -> Estimate:
    return Estimate(text_size(value), _word_count(value), copies=3)


def _urlencode(value: Any) -> Estimate:
    if isinstance(value, str) and value.isascii():
        return Estimate(3 * len(value))
    return Estimate(12 * text_size(value), 2 * count(value) if not isinstance(value, str) else 0)


def _urlize(
    value: Any,
    trim_url_limit: Any = None,
    nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> Estimate:
    """Each word may become `<a href="https://word" rel="..." target="...">word</a>`."""
    escaped = ESCAPE_GROWTH * text_size(value)
    words = escaped // 2 + 1
    per_link = 64 + text_size(rel) + text_size(target) + text_size(extra_schemes)
    return Estimate(2 * escaped + words * per_link, words, copies=2)


def _xmlattr(d: Any, autospace: Any = True) -> Estimate:
    return Estimate(ESCAPE_GROWTH * text_size(d) + 4 * count(d) + 1, 2 * count(d))


def _tojson(value: Any, indent: Any = None) -> Estimate:
    """JSON of nested data; with `indent`, every value is on its own line, indented by its
    depth (Jinja then replaces `<>&'`, so up to three copies are alive)."""
    found = shape(value, json=True)
    size = found.json_chars
    if indent is not None:
        step = _width(indent) if isinstance(indent, int) else text_size(indent)
        size += (found.nodes + 1) * (max(step, 0) * (found.depth + 1) + 2)
    return Estimate(size, copies=3)


def _pprint(value: Any) -> Estimate:
    """`pprint.pformat`: the repr, with each value (and each piece of a long string) on a
    line of its own, indented by up to the deepest indent."""
    found = shape(value)
    lines = found.nodes + found.string_chars
    return Estimate(found.repr_chars + lines * (found.indent + 6), copies=2)


def _filesizeformat(value: Any, binary: Any = False) -> Estimate:
    """A short text, from `float(value)` (which parses an ASCII copy of a string)."""
    return Estimate(32 + (len(value) if isinstance(value, str) else 0))


FILTERS: dict[str, Rule] = {
    "abs": CANNOT_GROW,
    "attr": CANNOT_GROW,
    "batch": Rule(_batch, gather=True),
    "capitalize": Rule(_case),
    "center": Rule(_center),
    "count": CANNOT_GROW,
    "d": CANNOT_GROW,
    "default": CANNOT_GROW,
    "dictsort": Rule(_dictsort),
    "e": Rule(_escape),
    "escape": Rule(_escape),
    "filesizeformat": Rule(_filesizeformat),
    "first": CANNOT_GROW,
    "float": Rule(_number),
    "forceescape": Rule(_forceescape),
    # "format" is sized by the environment, with the `%` operator (same rules)
    "groupby": Rule(_groupby, gather=True),
    "indent": Rule(_indent),
    "int": Rule(_number),
    "items": Rule(_items),
    "join": Rule(_join, gather=True),
    "last": CANNOT_GROW,
    "length": CANNOT_GROW,
    "list": Rule(_copy, gather=True),
    "lower": Rule(_case),
    "map": CANNOT_GROW,  # yields existing values, or the results of filters sized here
    "max": Rule(_extreme, gather=True),
    "min": Rule(_extreme, gather=True),
    "pprint": Rule(_pprint),
    "random": CANNOT_GROW,
    "reject": CANNOT_GROW,
    "rejectattr": CANNOT_GROW,
    "replace": Rule(_replace),
    "reverse": Rule(
        lambda value: _text(value) if isinstance(value, str) else _copy(value), gather=True
    ),
    "round": Rule(_round),
    "safe": Rule(_text),
    "select": CANNOT_GROW,
    "selectattr": CANNOT_GROW,
    "slice": Rule(_slice, gather=True),
    "sort": Rule(_sort, gather=True),
    "string": Rule(_text),
    "striptags": Rule(_striptags),
    "sum": Rule(_sum, gather=True),
    "title": Rule(_case),
    "tojson": Rule(_tojson),
    "trim": Rule(_text),
    "truncate": Rule(_truncate),
    "unique": Rule(_unique, gather=True),
    "upper": Rule(_case),
    "urlencode": Rule(_urlencode),
    "urlize": Rule(_urlize),
    "wordcount": Rule(_wordcount),
    "wordwrap": Rule(_wordwrap),
    "xmlattr": Rule(_xmlattr),
}

TESTS = frozenset(
    {
        "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby",
        "eq", "equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan",
        "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne",
        "none", "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined",
        "upper",
    }
)  # fmt: skip
"""Every test returns a bool: none can grow."""


def _padded(s: str, width: Any = 0, *args: Any) -> Estimate:
    return Estimate(max(len(s), _width(width, "Widths")))


def _expandtabs(s: str, tabsize: Any = 8) -> Estimate:
    return Estimate(len(s) + s.count("\t") * max(_width(tabsize, "Tab sizes"), 0))


def _str_join(sep: str, items: Any) -> Estimate:
    n = count(items)  # gathered in a list first
    if isinstance(sep, Markup):
        return Estimate(sum(escaped_size(i) for i in items) + len(sep) * max(n - 1, 0), n)
    return Estimate(total_text(items) + len(sep) * max(n - 1, 0), n)


def _str_replace(s: str, old: Any, new: Any, limit: Any = -1) -> Estimate:
    new_size = escaped_size(new) if isinstance(s, Markup) else text_size(new)
    return Estimate(replaced_size(s, old, new_size, limit))


def _translate(s: str, table: Any) -> Estimate:
    """Each character becomes its entry in `table` (a mapping or a sequence indexed by code)."""
    entries = table.values() if isinstance(table, dict) else table
    if not isinstance(entries, Iterable) or isinstance(entries, str):
        entries = ()
    return Estimate(len(s) * max([1, *(text_size(v) for v in entries)]))


def _split(s: str, sep: Any = None, maxsplit: Any = -1) -> Estimate:
    parts = s.count(sep) + 1 if isinstance(sep, str) and sep else len(s) // 2 + 2
    if isinstance(maxsplit, int) and maxsplit >= 0:
        parts = min(parts, maxsplit + 1)
    return Estimate(len(s), parts, text=False)


def _splitlines(s: str, keepends: Any = False) -> Estimate:
    return Estimate(len(s), line_count(s), text=False)


def _same_size(s: str, *args: Any, **kwargs: Any) -> Estimate:
    return Estimate(len(s))


def _parts(s: str, *args: Any) -> Estimate:
    return Estimate(len(s), 3, text=False)


def _str_case(s: str) -> Estimate:
    return Estimate(case_size(s))


def _container_copy(value: Any) -> Estimate:
    return Estimate(items=count(value), text=False)


_STR_QUERIES = [
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "rfind",
    "rindex",
    "startswith",
]

STR_METHODS: dict[str, Rule] = {
    **{name: CANNOT_GROW for name in _STR_QUERIES},
    **{
        name: Rule(_same_size)
        for name in ["lstrip", "rstrip", "strip", "removeprefix", "removesuffix"]
    },
    **{
        name: Rule(_str_case)
        for name in ["capitalize", "casefold", "lower", "swapcase", "title", "upper"]
    },
    **{name: Rule(_padded) for name in ["center", "ljust", "rjust", "zfill"]},
    "partition": Rule(_parts),
    "rpartition": Rule(_parts),
    "split": Rule(_split),
    "rsplit": Rule(_split),
    "splitlines": Rule(_splitlines),
    "expandtabs": Rule(_expandtabs),
    "join": Rule(_str_join, gather=True),
    "replace": Rule(_str_replace),
    "translate": Rule(_translate),
}
"""`str` methods; `format` and `format_map` are sized by the environment's formatter, and
`encode` / `maketrans` (bytes and tables nothing in a prompt needs) are refused."""

MARKUP_METHODS: dict[str, Rule] = {
    **STR_METHODS,
    "striptags": Rule(lambda s: Estimate(len(s), len(s) // 2 + 2, copies=3)),
    "unescape": Rule(_same_size),
}
"""`Markup` methods escape their string arguments: `join` and `replace` are sized with
escaped arguments, and the pad character of `ljust`/`center` must stay one character."""

MARKUP_CLASS_METHODS: dict[str, Rule] = {"escape": Rule(lambda cls, value: _escape(value))}

DICT_METHODS: dict[str, Rule] = {
    **{name: CANNOT_GROW for name in ("get", "keys", "values", "items")},
    "copy": Rule(_container_copy),
}
SEQUENCE_METHODS: dict[str, Rule] = {"count": CANNOT_GROW, "index": CANNOT_GROW}
LIST_METHODS: dict[str, Rule] = {**SEQUENCE_METHODS, "copy": Rule(_container_copy)}
NUMBER_METHODS: dict[str, Rule] = {
    name: CANNOT_GROW for name in ("bit_length", "conjugate", "is_integer")
}

METHODS: tuple[tuple[type | tuple[type, ...], dict[str, Rule]], ...] = (
    (Markup, MARKUP_METHODS),
    (str, STR_METHODS),
    (dict, DICT_METHODS),
    (list, LIST_METHODS),
    ((tuple, range), SEQUENCE_METHODS),
    ((int, float), NUMBER_METHODS),
)
"""Methods by the type of the value they are bound to (the first match wins)."""


def method_rule(owner: Any, name: str) -> Rule | None:
    """How the method `name` of `owner` is sized, or None when templates may not call it."""
    if owner is Markup:
        return MARKUP_CLASS_METHODS.get(name)
    for types, table in METHODS:
        if isinstance(owner, types):
            return table.get(name)
    return None
