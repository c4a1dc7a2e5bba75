"""The package's import graph has no circle.

Every import statement counts: top level, under ``TYPE_CHECKING``, or inside a
function. A circle that only type checking or a late import closes still ties the
modules together: neither can be read, moved or tested without the other.
``import a.b`` is an edge to ``a.b`` alone, not to the package ``a`` that Python
also runs first, as import-linter and grimp count it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import hvit_sweeps

PACKAGE = "hvit_sweeps"
ROOT = Path(hvit_sweeps.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules that ``name`` imports, wherever the statement is."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule; `from mod import name` the module.
            yield from (f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imported(name, path, modules) if target in modules and target != name}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_package_import_graph_has_no_circle() -> None:
    assert circles(import_graph()) == []


# The check finds what it is for: a circle closed only under TYPE_CHECKING, and one through a package.
def test_circles_are_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "hvit_sweeps.data.settings" in graph["hvit_sweeps.config"]  # `from hvit_sweeps.data.settings import ...`
    assert "hvit_sweeps.data.describe" in graph["hvit_sweeps.config"]  # a function-level import counts
    assert "hvit_sweeps.data.info" in graph["hvit_sweeps.config"]  # a TYPE_CHECKING import counts
