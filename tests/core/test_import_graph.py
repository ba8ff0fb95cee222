"""The package's import graph, read with ``ast`` (lazy imports inside functions count too): no
import circle anywhere, and nothing under ``curation/core`` imports a stage or anything else above
it. Core knows stages only through the ``curation.stages`` entry points."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# source folder -> the module name it is imported as (pyproject's package-dir)
PACKAGES = {"curation": "curation", "classifiers": "curation.classifiers", "tokenize": "curation.tokenize"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in known:  # `from a.b import c` where c is a name in a.b
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "curation.core.runner" in graph and "curation.tokenize.stage" in graph
    assert "curation.core.stage" in graph["curation.tokenize.stage"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_core_imports_nothing_above_it():
    above = {
        (module, target)
        for module, targets in import_graph().items() if module.startswith("curation.core")
        for target in targets if target != "curation" and not target.startswith("curation.core")
    }
    assert above == set()


def test_every_stage_is_an_entry_point():
    """What core finds by kind is exactly what the stage modules register."""
    import tomllib

    from curation.core.stage import _REGISTRY, stage_class

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["curation.stages"]
    for kind, target in declared.items():
        module, _, name = target.partition(":")
        cls = stage_class(kind)
        assert (cls.__module__, cls.__name__, cls.kind) == (module, name, kind)
    assert set(_REGISTRY) == set(declared)
