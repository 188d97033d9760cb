"""The lensdb package: no import cycle through it (every import, at
module level or inside a function, read with ast) and no module above 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

LENSDB = Path(__file__).resolve().parent.parent / "lensdb"
CHECKED = ("lensdb",)  # the whole package (issue 19: no cycles, no module above ~400 lines)
MAX_LINES = 400


def module_names() -> dict[str, Path]:
    names = {}
    for path in LENSDB.rglob("*.py"):
        parts = path.relative_to(LENSDB.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {known(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else known(node.module) for a in node.names}
        graph[name] = {dep for dep in found if dep and dep != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_goes_through_the_warehouse_catalog_or_runs():
    through = [c for c in cycles(import_graph(module_names())) if any(m.startswith(CHECKED) for m in c)]
    assert through == []


def test_no_warehouse_catalog_or_runs_module_is_above_400_lines():
    long = {name: n for name, path in module_names().items() if name.startswith(CHECKED) and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
