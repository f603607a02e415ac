"""The package's parts depend on each other one way: no import cycle between its
top-level subpackages and modules, and the worker never reaches into the store (it
sees it through ``worker/interfaces.py``; only the composition root wires it in)."""

from __future__ import annotations

import ast
from pathlib import Path

import traitstream

ROOT = Path(traitstream.__file__).parent
PACKAGE = "traitstream"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports and
    ``TYPE_CHECKING`` blocks included), relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            # ``from package import name``: a module when there is one by that name.
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return {m for m in found if m == PACKAGE or m.startswith(f"{PACKAGE}.")}


def _is_module(name: str) -> bool:
    if not name.startswith(f"{PACKAGE}."):
        return False
    path = ROOT.joinpath(*name.split(".")[1:])
    return (
        path.with_suffix(".py").exists()
        or (path / "__init__.py").exists()
        or bool(list(path.parent.glob(f"{path.name}.*.so")))
    )


def _unit(module: str) -> str | None:
    """The top-level subpackage or module ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def unit_graph() -> dict[str, dict[str, set[str]]]:
    """unit → unit it imports → the importing modules (for the error message)."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = _module_name(path)
        here = _unit(source)
        if here is None:
            continue
        edges = graph.setdefault(here, {})
        for target in _imports(path):
            there = _unit(target)
            if there is not None and there != here:
                edges.setdefault(there, set()).add(source)
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The strongly connected groups of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_walk_sees_the_package() -> None:
    graph = unit_graph()
    assert {"worker", "store", "edge", "avro", "dialects", "cli"} <= graph.keys()
    assert "worker" in graph["store"], "the store implements the worker's interfaces"
    roots = [u for u, edges in graph.items() if {"worker", "store"} <= edges.keys()]
    assert roots, "some composition root wires the store into the worker"


def test_no_import_cycle_between_top_level_parts() -> None:
    graph = unit_graph()
    found = cycles(graph)
    detail = [{a: {b: sorted(graph[a][b]) for b in group if b in graph[a]} for a in group} for group in found]
    assert not found, f"import cycles between parts of the package: {detail}"


def test_the_worker_does_not_import_the_store() -> None:
    importers = unit_graph()["worker"].get("store", set())
    assert not importers, f"worker modules import traitstream.store: {sorted(importers)}"


def test_cycles_are_found() -> None:
    """The checker itself: a cycle of three, and a chain without one."""
    ring = {"a": {"b": {"m"}}, "b": {"c": {"m"}}, "c": {"a": {"m"}}, "d": {"a": {"m"}}}
    assert cycles(ring) == [["a", "b", "c"]]
    assert cycles({"a": {"b": {"m"}}, "b": {"c": {"m"}}}) == []
