"""Property tests of the render budget, over every allowed filter, `str` method and operator
with adversarial inputs: long strings of characters that grow when escaped, cased, quoted or
JSON-encoded; long, shared and deeply nested lists; huge widths, indents and counts.

Each render either succeeds with output within the limit or raises RenderError, and the
memory it allocates (tracemalloc's peak, the inputs excluded) stays within what the render's
ledger was charged, itself capped by the ledger's budget: the estimators bound what really
gets built, before it is built.
"""

from __future__ import annotations

import operator
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from mlops.prompts import rendering
from mlops.prompts.rendering import MAX_OUTPUT_CHARS, PromptEnvironment, RenderError
from mlops.prompts.sandbox_allowlist import FILTERS, MARKUP_METHODS, STR_METHODS
from mlops.prompts.sandbox_sizes import BudgetUse, render_budget

BUDGET = 8 * 2**20
"""The ledger of these renders (smaller than the real one, so tracing them stays quick)."""
SLACK = 256 * 1024
"""What a render allocates that is not a template value: its context, frames, an error."""

GROWING = "a <>&'\"\\\n\t-ßİﬃ😀\x00\u2028"
units = st.text(alphabet=GROWING, min_size=1, max_size=3)
long_texts = st.builds(operator.mul, units, st.integers(0, 300_000))
texts = st.one_of(units, long_texts)
leaves = st.one_of(
    long_texts, st.integers(-(10**30), 10**30), st.floats(allow_nan=False), st.booleans()
)
nested = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda item, n: [item] * n, children, st.integers(0, 3000)),
        st.dictionaries(st.sampled_from(["a", "<&>", "b" * 50]), children, max_size=3),
    ),
    max_leaves=4,
)
char_lists = st.builds(list, st.builds(operator.mul, units, st.integers(0, 10_000)))
values = st.one_of(texts, nested, char_lists)
widths = st.one_of(
    st.integers(-3, 120), st.integers(0, 10**9), st.sampled_from([9_999, 10_000, 10_001])
)
anything = st.one_of(widths, texts, st.booleans(), st.none())
SIZED_FILTERS = sorted(name for name, rule in FILTERS.items() if rule.size is not None)
TEST_NAMES = ["odd", "string", "upper", "defined", "none"]

FILTER_ARGS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "batch": st.tuples(widths, st.one_of(st.none(), texts)),
    "center": st.tuples(widths),
    "indent": st.tuples(st.one_of(widths, texts), st.booleans(), st.booleans()),
    "join": st.tuples(texts),
    "replace": st.tuples(units, texts),
    "wordwrap": st.tuples(widths, st.booleans(), texts),
    "truncate": st.tuples(widths, st.booleans(), texts),
    "slice": st.tuples(widths, st.one_of(st.none(), texts)),
    "tojson": st.tuples(st.one_of(st.none(), widths, units)),
    "round": st.tuples(st.integers(-(10**9), 10**9)),
    "map": st.one_of(
        st.tuples(st.sampled_from(SIZED_FILTERS)), st.tuples(st.just("center"), widths)
    ),
    "select": st.tuples(st.sampled_from(TEST_NAMES)),
    "reject": st.tuples(st.sampled_from(TEST_NAMES)),
    "selectattr": st.tuples(st.just("a"), st.sampled_from(TEST_NAMES)),
    "rejectattr": st.tuples(st.just("a"), st.sampled_from(TEST_NAMES)),
    "groupby": st.tuples(st.just("a")),
    "default": st.tuples(texts),
    "sum": st.tuples(st.none(), st.one_of(st.just(0), st.just([]), st.builds(list, long_texts))),
    "urlize": st.tuples(st.one_of(st.none(), widths), st.booleans(), st.one_of(st.none(), texts)),
    "attr": st.tuples(st.sampled_from(["upper", "a", "keys"])),
    "format": st.lists(values, max_size=3).map(tuple),
}
FORMATS = st.builds(
    operator.mul,
    st.sampled_from(["%s", "%r", "%-9999s", "%(a)s", "%.3f", "x"]),
    st.integers(0, 3000),
)


@contextmanager
def _recorded_ledger() -> Iterator[list[BudgetUse]]:
    """Renders get a ledger of BUDGET bytes; what each charged is recorded."""
    uses: list[BudgetUse] = []

    @contextmanager
    def small_budget(timeout_s: float, max_bytes: int | None = None) -> Iterator[BudgetUse]:
        with render_budget(timeout_s, BUDGET) as use:
            uses.append(use)
            yield use

    with mock.patch.object(rendering, "render_budget", small_budget):
        yield uses


def _check_render(source: str, variables: dict[str, Any]) -> None:
    """The property: the render succeeds within the output limit or raises RenderError, and
    its peak allocation is within what its ledger charged (at most BUDGET) plus SLACK."""
    env = PromptEnvironment(lambda sha, name: source)
    env.get_template("sha:main")  # compiled before tracing
    with _recorded_ledger() as uses:
        tracemalloc.start()
        try:
            output = rendering.render_template(env, "sha", "main", variables, 1.0)
        except RenderError:
            output = ""
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert len(output) <= MAX_OUTPUT_CHARS
    charged = min(uses[0].charged, BUDGET)
    assert peak <= charged + SLACK, f"peak {peak} B, ledger charged {charged} B: {source}"


PROPERTY = settings(  # a fixed seed and few examples keep CI reproducible and near a minute
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted([*FILTERS, "format"]))
@PROPERTY
@given(data=st.data())
def test_every_filter_stays_within_the_budget(name: str, data: st.DataObject) -> None:
    value = data.draw(FORMATS if name == "format" else values, label="value")
    args = data.draw(FILTER_ARGS.get(name, st.lists(anything, max_size=2).map(tuple)), label="args")
    _check_render(f"{{{{ v|{name}(*a) }}}}", {"v": value, "a": list(args)})
    _check_render(f"{{{{ (v|{name}(*a))|list|length }}}}", {"v": value, "a": list(args)})


@pytest.mark.parametrize("name", sorted(set(STR_METHODS) | set(MARKUP_METHODS)))
@PROPERTY
@given(data=st.data())
def test_every_str_and_markup_method_stays_within_the_budget(
    name: str, data: st.DataObject
) -> None:
    value = data.draw(texts, label="value")
    if data.draw(st.booleans(), label="markup") or name not in STR_METHODS:
        value = Markup(value)
    args = data.draw(
        st.one_of(st.lists(anything, max_size=2), st.tuples(st.lists(texts, max_size=500))),
        label="args",
    )
    _check_render(f"{{{{ v.{name}(*a) }}}}", {"v": value, "a": list(args)})


OPERATIONS = [
    "{{ v ~ w ~ v }}",
    "{{ v + w }}",
    "{{ v * n }}",
    "{{ n * w }}",
    "{{ v % w }}",
    "{{ v[n:] ~ w[:n] }}",
    "{{ '{}{!r}{:>20}'.format(v, w, n) }}",
    "{{ (v|safe) + w }}",
    "{{ ('%s%r'|safe) % (v, w) }}",
    "{{ v }}{{ w }}",
    "{% for x in v %}{{ w }}{% endfor %}",
    "{% for x in v|select %}{{ loop.length }}{% endfor %}",
]


@pytest.mark.parametrize("source", OPERATIONS)
@PROPERTY
@given(v=values, w=values, n=widths)
def test_operators_formatting_and_loops_stay_within_the_budget(
    source: str, v: Any, w: Any, n: int
) -> None:
    _check_render(source, {"v": v, "w": w, "n": n})
