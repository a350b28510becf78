"""The sandbox: SSTI payloads never execute, budgets stop runaway templates, variables are
checked against the declaration, syntax errors carry line and column."""

from __future__ import annotations

import pytest
from tests.support.render_payloads import (
    MEMORY_PAYLOADS,
    REFUSALS,
    RENDER_MEMORY_BOUND,
    peak_allocation,
)

from mlops.errors import NotFoundError
from mlops.prompts.models import PromptMetadata, VariableSpec
from mlops.prompts.rendering import (
    MAX_OUTPUT_CHARS,
    PromptEnvironment,
    RenderError,
    bind_variables,
    check_template,
    render_template,
)

SOURCES: dict[str, str] = {}


def _read(sha: str, name: str) -> str:
    if name not in SOURCES:
        raise NotFoundError(f"{name} does not exist in commit {sha}")
    return SOURCES[name]


def _render(source: str, variables: dict[str, object] | None = None, timeout: float = 2.0) -> str:
    SOURCES["main"] = source
    env = PromptEnvironment(_read)
    return render_template(env, "sha", "main", {"x": "text", **(variables or {})}, timeout)


PAYLOADS = [
    "{{ x.__class__ }}",
    "{{ x.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ x|attr('__class__') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__.__globals__['os'].popen('id').read() }}",
    "{{ range.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(x) }}",
    "{{ '{0:>99999999}'.format(x) }}",
    "{{ x.format_map }}",
    "{{ '%s' % x.__class__ }}",
    "{{ '%099999999d' % 1 }}",
    "{{ '%*d' % (99999999, 1) }}",
    "{{ '%s'|format(x.__class__) }}",
    "{{ dict.__init__ }}",
    "{% set l = [] %}{{ l.append(1) }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ (1).__class__.__subclasses__() }}",
    "{{ loop.__class__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% import 'os' as os %}{{ os.system('id') }}",
    "{% include '/etc/passwd' %}",
    "{% include '../../etc/passwd' %}",
]
_LEAKS = ("<class", "__globals__", "subprocess", "popen", "builtins", "<module", "root:", "uid=")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_payloads_are_refused_or_inert(payload: str) -> None:
    try:
        output = _render(payload)
    except RenderError as exc:
        assert exc.kind in {"security", "undefined", "not_found", "runtime_error"}, exc.message
        return
    assert not any(marker in output for marker in _LEAKS), output


def test_undeclared_payload_names_are_refused_at_check_time() -> None:
    env = PromptEnvironment(lambda sha, name: "")
    metadata = PromptMetadata(variables={"x": VariableSpec()})
    for payload in ("{{ config }}", "{{ cycler }}", "{{ lipsum }}", "{{ joiner }}", "{{ os }}"):
        with pytest.raises(RenderError) as info:
            check_template(env, payload, metadata)
        assert info.value.kind == "undeclared_variable"
    check_template(env, "{{ x }} {{ range(3)|list }} {{ namespace(a=1).a }}", metadata)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "security"),
        (
            "{% set xs = range(100000)|list %}{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}",
            "timeout",
        ),
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}",
            "output_limit",
        ),
        ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion"),
        ("{{ 'a' * 10**8 }}", "security"),
        ("{{ 2 ** 100000 }}", "security"),
        ("{{ 'a'|center(100000000) }}", "security"),
        ("{{ 'a'|indent(100000000) }}", "security"),
        ("{{ range(10)|batch(100000000)|list }}", "security"),
    ],
)
def test_runaway_templates_are_stopped(source: str, kind: str) -> None:
    with pytest.raises(RenderError) as info:
        _render(source, timeout=0.5)
    assert info.value.kind in {kind, "timeout"}, info.value.message


def test_output_limit_is_characters_of_the_render() -> None:
    assert MAX_OUTPUT_CHARS == 1_000_000
    assert len(_render("{% for i in range(1000) %}{{ 'a' * 900 }}{% endfor %}")) == 900_000


def test_loops_filters_and_loop_variables_still_work() -> None:
    source = (
        "{% for k, v in d|dictsort %}{{ loop.index }}/{{ loop.length }} {{ k }}={{ v }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}; {{ '%.1f'|format(1.25) }} {{ 3 * 2 }}"
    )
    assert _render(source, {"d": {"b": 2, "a": 1}}) == "1/2 a=1, 2/2 b=2; 1.2 6"


def test_includes_load_templates_of_the_same_store_at_the_same_commit() -> None:
    seen: list[tuple[str, str]] = []

    def read(sha: str, name: str) -> str:
        seen.append((sha, name))
        return {"main": "[{% include 'part' %}]", "part": "part {{ x }}"}[name]

    env = PromptEnvironment(read)
    assert render_template(env, "abc123", "main", {"x": 1}, 1.0) == "[part 1]"
    assert seen == [("abc123", "main"), ("abc123", "part")]


def test_include_of_a_missing_template_is_a_clear_error() -> None:
    with pytest.raises(RenderError) as info:
        _render("{% include 'nope' %}")
    assert info.value.kind == "not_found" and "nope" in info.value.message


def test_syntax_errors_report_line_and_column() -> None:
    env = PromptEnvironment(lambda sha, name: "")
    with pytest.raises(RenderError) as info:
        check_template(env, "Hello\n  {{ x + }}\n", PromptMetadata())
    assert info.value.kind == "syntax"
    assert info.value.details["line"] == 2 and info.value.details["column"] == 10
    assert "line 2, column 10" in info.value.message
    with pytest.raises(RenderError) as info:
        check_template(env, "a\nb\n{% for x in y %}", PromptMetadata())
    assert info.value.details["line"] == 3 and "endfor" in info.value.message


def test_strict_undefined_refuses_missing_attributes() -> None:
    with pytest.raises(RenderError) as info:
        _render("{{ d.missing }}", {"d": {}})
    assert info.value.kind == "undefined"


DECLARED = {
    "name": VariableSpec(type="string"),
    "count": VariableSpec(type="integer", required=False, default=3),
    "ratio": VariableSpec(type="number", required=False, default=0.5),
    "flag": VariableSpec(type="boolean", required=False, default=False),
    "items": VariableSpec(type="list", required=False, default=[]),
    "info": VariableSpec(type="object", required=False, default={}),
}


def test_bind_variables_applies_defaults_and_accepts_ints_as_numbers() -> None:
    bound = bind_variables(DECLARED, {"name": "a", "ratio": 2})
    assert bound == {"name": "a", "count": 3, "ratio": 2, "flag": False, "items": [], "info": {}}


@pytest.mark.parametrize(
    ("given", "kind", "named"),
    [
        ({}, "missing_variable", "name"),
        ({"name": "a", "extra": 1}, "unknown_variable", "extra"),
        ({"name": 1}, "wrong_type", "name"),
        ({"name": "a", "count": "3"}, "wrong_type", "count"),
        ({"name": "a", "count": True}, "wrong_type", "count"),
        ({"name": "a", "ratio": "0.5"}, "wrong_type", "ratio"),
        ({"name": "a", "flag": 1}, "wrong_type", "flag"),
        ({"name": "a", "items": "x"}, "wrong_type", "items"),
        ({"name": "a", "info": []}, "wrong_type", "info"),
    ],
)
def test_bad_variables_are_refused_naming_the_variable(
    given: dict[str, object], kind: str, named: str
) -> None:
    with pytest.raises(RenderError) as info:
        bind_variables(DECLARED, given)
    assert info.value.kind == kind and named in info.value.message
    assert info.value.http_status == 422


@pytest.mark.parametrize("payload", MEMORY_PAYLOADS)
def test_payloads_that_would_build_huge_values_are_refused_before_building_them(
    payload: str,
) -> None:
    """Refused by sizing, not by the deadline, and within the memory bound (each would
    build 10^8 characters or more). How fast: tests/benchmarks/bench_prompts.py."""
    error, peak = peak_allocation(lambda: _render(payload, timeout=60.0))
    assert isinstance(error, RenderError), error
    assert error.kind in REFUSALS, error.message
    assert peak < RENDER_MEMORY_BOUND


def test_formatting_and_text_filters_within_the_limits_still_work() -> None:
    source = (
        "{{ '{0:>{1}}|{a:<{w}}|'.format('x', 3, a='y', w=2) }}{{ '{:.2f}'.format(1.5) }} "
        "{{ ['a', 'b']|join(', ') }} {{ 'aXa'|replace('X', '-') }} {{ 'a b c'|wordwrap(3) }} "
        "{{ ('%-3s|' % 'x') ~ ('ab' + 'c') ~ ([1] + [2])|string }} {{ 'x'.ljust(3) }}| "
        "{{ [[1], [2]]|sum(start=[]) }} {{ range(3)|join('-') }}"
        "{{ ('<{}>'|safe).format('&') }}{{ '-'.join(range(3)|map('string')) }}"
        "{{ [{'t': 'ab'}]|map(attribute='t')|map('upper')|join }}"
    )
    expected = "  x|y |1.50 a, b a-a a b\nc x  |abc[1, 2] x  | [1, 2] 0-1-2<&amp;>0-1-2AB"
    assert _render(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{% set _loop_budget = range %}{% for i in [1] %}{% endfor %}",
        "{% set _checked_join = range %}{{ 'a' ~ 'b' }}",
        "{% macro _loop_budget(x) %}{% endmacro %}",
        "{% for _checked_join in [1] %}{% endfor %}",
        "{% with _loop_budget = 1 %}{% endwith %}",
        "{% macro m(_checked_join) %}{% endmacro %}",
    ],
)
def test_the_sandbox_budget_globals_cannot_be_rebound(source: str) -> None:
    with pytest.raises(RenderError, match="reserved by the sandbox") as info:
        _render(source)
    assert info.value.kind == "syntax"
