"""The sandbox's allowlist: every filter, test and method a template can reach is classified
(sized, or cannot grow), anything else is refused with a RenderError naming it, and the
issue's chains of growing filters are refused fast."""

from __future__ import annotations

import pytest
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
from markupsafe import Markup
from tests.support.render_payloads import (
    CHAIN_INPUT,
    ISSUE_CHAINS,
    RENDER_MEMORY_BOUND,
    peak_allocation,
)

from mlops.prompts.models import PromptMetadata, VariableSpec
from mlops.prompts.rendering import PromptEnvironment, RenderError, check_template, render_template
from mlops.prompts.sandbox_allowlist import FILTERS, TESTS, method_rule


def _render(source: str, variables: dict[str, object] | None = None, timeout: float = 2.0) -> str:
    env = PromptEnvironment(lambda sha, name: source)
    return render_template(env, "sha", "main", variables or {}, timeout)


def test_every_jinja_filter_and_test_is_classified_and_nothing_else_is_reachable() -> None:
    env = PromptEnvironment(lambda sha, name: "")
    classified_filters = set(FILTERS) | {"format"}
    assert set(DEFAULT_FILTERS) <= classified_filters, "classify the new filter(s) in FILTERS"
    assert set(DEFAULT_TESTS) <= TESTS, "classify the new test(s) in TESTS"
    assert set(env.filters) <= classified_filters and set(env.tests) <= TESTS
    assert set(env.globals) == {
        "range",
        "dict",
        "namespace",
        "_loop_budget",
        "_checked_join",
        "_checked_slice",
    }


SAMPLES: list[object] = ["text", Markup("<b>"), {"a": 1}, [1, 2], (1, 2), range(3), 7, 1.5, True]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_every_method_of_template_values_is_sized_or_refused(sample: object) -> None:
    """A method of a value templates see (str, Markup, dict, list, tuple, range, numbers) is
    either on the allowlist or refused when called (the sandbox hides mutating ones)."""
    names = [n for n in dir(sample) if not n.startswith("_") and callable(getattr(sample, n))]
    assert names
    for name in names:
        owner = getattr(sample, name).__self__  # Markup.escape is bound to the class
        if method_rule(owner, name) is not None or name in ("format", "format_map"):
            continue
        with pytest.raises(RenderError) as info:
            _render(f"{{{{ v.{name}() }}}}", {"v": sample})
        assert info.value.kind in {"unsupported_method", "security"}, (name, info.value.message)


@pytest.mark.parametrize(
    ("source", "kind", "named"),
    [
        ("{{ x|frobnicate }}", "unsupported_filter", "frobnicate"),
        ("{% filter frobnicate %}a{% endfilter %}", "unsupported_filter", "frobnicate"),
        ("{{ x is palindrome }}", "unsupported_test", "palindrome"),
        ("{{ [x]|map('frobnicate')|list }}", "unsupported_filter", "frobnicate"),
        ("{{ [x]|select('palindrome')|list }}", "unsupported_test", "palindrome"),
        ("{{ [x]|selectattr('a', 'palindrome')|list }}", "unsupported_test", "palindrome"),
    ],
)
def test_filters_and_tests_off_the_allowlist_are_refused_when_the_template_is_checked(
    source: str, kind: str, named: str
) -> None:
    env = PromptEnvironment(lambda sha, name: "")
    metadata = PromptMetadata(variables={"x": VariableSpec()})
    with pytest.raises(RenderError) as info:
        check_template(env, source, metadata)
    assert info.value.kind == kind and named in info.value.message
    assert info.value.http_status == 422


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{% set f = 'frobnicate' %}{{ [x]|map(f)|list }}", "unsupported_filter"),
        ("{% set t = 'palindrome' %}{{ [x]|select(t)|list }}", "unsupported_test"),
        ("{{ x.encode() }}", "unsupported_method"),
        ("{{ x.maketrans('a', 'b') }}", "unsupported_method"),
        ("{{ (10).to_bytes(10**9, 'big') }}", "unsupported_method"),
        ("{{ {}.fromkeys(range(100000)) }}", "unsupported_method"),
        ("{{ (x|attr('encode'))() }}", "unsupported_method"),
    ],
)
def test_names_known_only_at_render_time_are_refused_when_called(source: str, kind: str) -> None:
    with pytest.raises(RenderError) as info:
        _render(source, {"x": "text"})
    assert info.value.kind == kind, info.value.message


@pytest.mark.parametrize("source", ISSUE_CHAINS)
def test_chains_of_growing_filters_are_refused_before_they_build(source: str) -> None:
    """The issue's payloads: each step is sized before it runs, so the chain stops at the
    first step that would build too much, before building it (refused by sizing, not by
    the deadline, within the memory bound). How fast: tests/benchmarks/bench_prompts.py."""
    error, peak = peak_allocation(lambda: _render(source, {"x": CHAIN_INPUT}, timeout=60.0))
    assert isinstance(error, RenderError), error
    assert error.kind in {"security", "memory_limit", "output_limit"}, error.message
    assert peak < RENDER_MEMORY_BOUND


@pytest.mark.parametrize(
    "source",
    [
        "{{ 5|round(-1000000000) }}",
        "{{ 5.5|round(1000000000, 'ceil') }}",
        "{{ ('%(a)s' * 1000) % {'a': 'x' * 10000} }}",
        "{{ x|urlize(target='t' * 100000) }}",
        "{{ (x|list)|map('center', 1000)|list }}",
        "{% for i in range(100) %}{% set y = (x|list)|map('upper')|list %}{% endfor %}",
        "{% for i in range(100000) %}{% set y = x[1:] %}{% endfor %}",
    ],
)
def test_growth_hidden_in_arguments_and_repetition_is_refused(source: str) -> None:
    """Growth from arguments (precision, a format field repeating one large value) and many
    medium values adding up (the render's memory ledger) are refused too."""
    error, peak = peak_allocation(lambda: _render(source, {"x": "word " * 100_000}))
    assert isinstance(error, RenderError), error
    assert error.kind in {"security", "memory_limit", "timeout"}, error.message
    assert peak < RENDER_MEMORY_BOUND


def test_ordinary_templates_using_many_filters_and_methods_still_render() -> None:
    source = (
        "{{ x|upper }} {{ x.title() }} {{ x.split()|join('-') }} {{ x|e }} {{ d|tojson }} "
        "{{ d|dictsort|first|join('=') }} {{ items|sort|reverse|join }} {{ items|max }} "
        "{{ d.get('b', 0) }} {{ items|sum }} {{ '%05.1f'|format(2.25) }} {{ x|wordcount }} "
        "{{ x[:3] ~ '|' ~ x[-3:] }} {{ 3.14159|round(2) }} {{ d|pprint }} {{ items|batch(2)|list }}"
        "{% for i in items|select('odd') %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{% endfor %} "
        "{{ ' '.join(items|map('string')) }} {{ x|replace('a', 'A')|center(20)|trim }}"
    )
    variables = {"x": "a b & c", "d": {"a": "<x>", "b": 2}, "items": [3, 1, 2]}
    assert _render(source, variables) == (
        'A B & C A B & C a-b-&-c a b &amp; c {"a": "\\u003cx\\u003e", "b": 2} a=<x> 321 3 '
        "2 6 002.2 3 a b|& c 3.14 {'a': '<x>', 'b': 2} [[3, 1], [2]]1a2b 3 1 2 A b & c"
    )
