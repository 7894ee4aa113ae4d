"""The cohort package imports one way: no cycle between its modules, and no import hidden in a function to dodge one."""

from __future__ import annotations

import ast
from pathlib import Path

import fedsynth.cohort

PACKAGE = Path(fedsynth.cohort.__file__).parent


def _cohort_imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported cohort module, imported at module level?)]."""
    graph: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedsynth.cohort."):
                found.append((node.module.rsplit(".", 1)[1], id(node) in top))
        graph[path.stem] = found
    return graph


def test_no_cohort_module_imports_another_inside_a_function():
    hidden = {m: [t for t, at_top in deps if not at_top] for m, deps in _cohort_imports().items()}
    assert {m: d for m, d in hidden.items() if d} == {}


def test_cohort_modules_form_no_import_cycle():
    # Setup
    graph = {m: {t for t, _ in deps} for m, deps in _cohort_imports().items()}
    # Run: depth-first search for a back edge
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(trail + [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    # Assert
    assert cycle == []
    assert "validation" not in graph["schema"] and "derived" not in graph["schema"]
