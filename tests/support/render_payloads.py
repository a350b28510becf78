"""Templates that would build huge values: the sandbox must refuse each one before it
builds it. Shared by the unit tests (refused, within the memory bound) and the prompts
benchmark (how fast)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

MEMORY_PAYLOADS = [
    "{{ '{0:>{1}}'.format('x', 500000000) }}",
    "{{ '{:>{w}}'.format('x', w=10**10) }}",
    "{{ '{a:>{w}}'.format_map({'a': 'x', 'w': 500000000}) }}",
    "{{ '{0:{1}.{2}f}'.format(1.5, 10, 500000000) }}",
    "{{ ('{:9999}' * 1000).format(*range(1000)) }}",
    "{{ (['a' * 1000] * 1000000)|join }}",
    "{{ range(100000)|join('x' * 1000000) }}",
    "{{ range(100000)|map('string')|join('x' * 100000) }}",
    "{{ ('a' * 10000)|replace('a', 'a' * 10000) }}",
    "{{ ('a\n' * 100000)|indent('x' * 10000) }}",
    "{{ ('a ' * 10000)|wordwrap(2, wrapstring='x' * 10000) }}",
    "{{ ('%9999s' * 1000)|format(*range(1000)) }}",
    "{{ ('%(a)9999s' * 1000) % {'a': 1} }}",
    "{% set a = 'x' * 100000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}"
    "{% set e = d ~ d %}{{ e|length }}",
    "{% set a = 'x' * 100000 %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}"
    "{% set e = d + d %}{{ e|length }}",
    "{% set a = ['x' * 1000] * 100000 %}{% set b = a + a %}{% set c = b + b %}"
    "{% set d = c + c %}{{ d|length }}",
    "{{ 'x'.ljust(500000000) }}",
    "{{ 'x'.zfill(500000000) }}",
    "{{ ('\t' * 1000).expandtabs(100000) }}",
    "{{ ('x' * 100000).join(range(1000)|map('string')) }}",
    "{{ ('a' * 10000).replace('a', 'a' * 10000) }}",
    "{{ ([['a' * 1000] * 1000] * 1000)|string }}",
    "{{ ([['a' * 1000] * 1000] * 1000)|sum(start=[])|length }}",
    "{{ ('x'|safe).ljust(500000000) }}",
    "{{ ('{0:>{1}}'|safe).format('x', 500000000) }}",
    "{{ (('{:9999}' * 1000)|safe).format(*range(1000)) }}",
    "{{ 'x'.encode() * 1000000000 }}",
    "{{ ('a' * 10000).translate({97: 'b' * 100000}) }}",
    "{{ ('x' * 100000).join(range(100000)|map('string')) }}",
    # a nested literal list, whose text would be huge: sized before it is printed or formatted
    "{% set a = 'x' * 900000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{% set d = [c, c, c, c, c, c, c, c, c, c] %}"
    "{{ d }}",
    "{% set a = 'x' * 900000 %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
    "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ '{0!r}'.format(c) }}",
    # many values each under the limit, materialized together
    "{{ (('x' * 900000)|list)|map('center', 5000)|list|length }}",
    "{{ (('x' * 900000)|list)|map('center', 5000)|join|length }}",
    "{% for y in (('x' * 900000)|list)|map('center', 5000) %}{{ loop.length }}{% endfor %}",
    "{{ ('x' * 100000)|list|join('y' * 100) }}",
    "{{ ('x' * 900000)|wordwrap(10000, true, 'y' * 9999) }}",
    "{% macro m() %}{{ 'x' * 900000 }}{% endmacro %}{{ m() * 1000 }}",
    "{% set ns = namespace(a='x' * 1000) %}{% for i in range(30) %}"
    "{% set ns.a = ns.a ~ ns.a %}{% endfor %}{{ ns.a|length }}",
    "{{ ('{:{}}' * 500).format(*(['x', 9999] * 500)) }}",
]


CHAIN_INPUT = "<&'\"x" * 40_000
"""200k characters, each of which escapes to up to 6: the `x` of `ISSUE_CHAINS`."""

ISSUE_CHAINS = [
    "{{ ((x|list)|e|e|upper) }}",
    "{{ x|list|e|list|e|list|e }}",
    "{{ x|list|string|list|string|list|string }}",
    "{{ (x|list|e|upper)|length }}",
    "{{ x|list|tojson(indent=10000) }}",
    "{{ [[[x]]]|tojson(indent=10000)|tojson(indent=10000) }}",
    "{{ (x|list|batch(3)|list)|tojson(indent=9999) }}",
    "{{ x|list|pprint|list|pprint }}",
    "{{ (x|list|xmlattr) }}",
    "{{ x|urlize|urlize }}",
    "{{ {'a': x|list}|dictsort|string|e }}",
    "{{ ((x|list) ~ (x|list)) ~ ((x|list) ~ (x|list)) }}",
    "{{ (x|list) * 3 }}",
    "{{ ((x|list|e) + (x|list|e)) }}",
    "{{ '%s%s%s' % (x|list, x|list, x|list) }}",
    "{{ '{}{}{}'.format(x|list, x|list|e, x|list|upper) }}",
    "{{ ((x|safe) + x|list|string)|e }}",
]


REFUSALS = {"security", "output_limit", "memory_limit", "unsupported_method"}
RENDER_MEMORY_BOUND = 64 * 2**20
"""The sandbox's memory ledger per render: a refused payload allocates less than this."""


def peak_allocation(render: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What `render()` raised and the peak of what it allocated (bytes, all threads)."""
    tracemalloc.start()
    try:
        render()
    except Exception as error:  # the caller checks which one
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return None, 0
