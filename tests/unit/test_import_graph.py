"""The import graph of the platform (`src/mlops` and `flows`) has no cycles: each layer
imports only the layers below it (front ends -> use cases -> flows -> domain -> libraries).

Every import counts, also those inside functions and under TYPE_CHECKING: an import put
inside a function to dodge a cycle still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KNOWN_CYCLES: set[frozenset[str]] = set()
"""Cycles still to be broken. Breaking one must remove it here; a new one fails the test."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[1:] if parts[0] == "src" else parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*(ROOT / "src" / "mlops").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]
    return {_module_name(path): path for path in files}


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import statement may load (a module, or a name in one)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parent, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the platform modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, package):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, in any number of
    steps (a cycle of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_tarjan_finds_a_cycle_through_three_modules_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]


def test_the_graph_sees_imports_inside_functions_and_relative_ones() -> None:
    graph = import_graph()
    assert "mlops.features.offline" in graph["mlops.features.ingest"]  # top-level import
    assert "mlops.services" in graph["mlops.cli"]  # imported inside the `up` command


def test_the_platform_has_no_import_cycles_beyond_the_known_ones() -> None:
    cycles = {frozenset(group) for group in strongly_connected(import_graph())}
    assert cycles - KNOWN_CYCLES == set(), "new import cycles"
    assert KNOWN_CYCLES - cycles == set(), "broken cycles: remove them from KNOWN_CYCLES"


def test_the_api_and_the_console_do_not_import_each_other() -> None:
    """`mlops.app` composes them; each front end imports only the layers below it."""
    graph = import_graph()
    crossings = [
        (module, target)
        for module, targets in graph.items()
        for target in targets
        for a, b in (("mlops.api", "mlops.web"), ("mlops.web", "mlops.api"))
        if (module == a or module.startswith(f"{a}.")) and target.startswith(b)
    ]
    assert crossings == []
    assert {"mlops.api.app", "mlops.web.console"} <= graph["mlops.app"]


FRONT_ENDS = ("mlops.api", "mlops.web", "mlops.cli")
RECORD_AND_LAUNCH = {
    "request_deployment",
    "request_rollback",
    "request_evaluation",
    "start_deployment",
    "start_evaluation",
}
"""The steps of the deploy, rollback and evaluate use cases (`mlops.usecases`)."""


def _names_used(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.rpartition(".")[2])
    return names


def test_front_ends_start_work_only_through_the_use_cases() -> None:
    """The API, the console and the CLI record and launch deployments and evaluations by
    one call to `mlops.usecases`, never by composing its steps themselves."""
    composing = {
        module: sorted(_names_used(path) & RECORD_AND_LAUNCH)
        for module, path in _modules().items()
        if module.startswith(FRONT_ENDS)
    }
    assert {module: names for module, names in composing.items() if names} == {}
    users = {m for m, targets in import_graph().items() if "mlops.usecases.deployments" in targets}
    assert {"mlops.api.routes.models", "mlops.web.models.registry", "mlops.cli.models"} <= users
