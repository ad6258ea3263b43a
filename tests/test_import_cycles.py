"""No import cycles inside meshbed (issue 13), checked on the source with ``ast``.

The rule: module A depends on module B when A's source imports B anywhere:
at module level, under ``if TYPE_CHECKING:``, inside ``try``/``if`` blocks and
inside functions and classes. A function-level import only defers a cycle to
the first call; it does not remove the dependency, so it counts. Importing
``meshbed.a.b`` also depends on the package ``meshbed.a`` (its ``__init__``
runs first), except on A's own ancestor packages (always initialised before
A). ``from P import x`` depends on ``P.x`` when that is a module, else on
``P``. Imports of anything outside ``meshbed`` are ignored.

The test fails naming one cycle per strongly connected component, each edge
with the file and line of the import that makes it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "meshbed"

Edge = tuple[str, str, int]  # (target module, file, line)


def modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py file under src/package."""
    out = {}
    for p in sorted((src / package).rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (p, is_pkg)
    return out


def _absolute(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(src: Path, package: str) -> dict[str, dict[str, Edge]]:
    """module -> {imported module: (target, file, line)} by the rule in this file's docstring."""
    mods = modules(src, package)
    graph: dict[str, dict[str, Edge]] = {}
    for mod, (path, is_pkg) in mods.items():
        direct: list[tuple[str, int]] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # every import, at any depth
            if isinstance(node, ast.Import):
                direct += [(a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(mod, is_pkg, node)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    direct.append((sub if sub in mods else target, node.lineno))
        edges: dict[str, Edge] = {}
        rel = path.relative_to(src).as_posix()
        for target, line in direct:
            if target != package and not target.startswith(package + "."):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the target and every package above it
                dep = ".".join(parts[:i])
                if dep in mods and dep != mod and not mod.startswith(dep + ".") and dep not in edges:
                    edges[dep] = (dep, rel, line)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """One cycle (as a closed path a -> ... -> a) per strongly connected component with a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan, recursive: the graph is a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, {}):
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    out = []
    for comp in comps:
        start = min(comp)
        # shortest path back to start inside the component (BFS)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        found = v
                        break
                    if w in comp and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found] if found is not None else []
        while path and path[-1] != start:
            path.append(prev[path[-1]])
        out.append(list(reversed(path)) + [start])
    return out


def describe(cycle: list[str], graph: dict[str, dict[str, Edge]]) -> str:
    hops = [f"{a} -> {b} ({graph[a][b][1]}:{graph[a][b][2]})" for a, b in zip(cycle, cycle[1:])]
    return "import cycle: " + "; ".join(hops)


def test_meshbed_has_no_import_cycle() -> None:
    graph = import_graph(SRC, PACKAGE)
    # not vacuous: the whole package was parsed and its imports were seen
    assert len(graph) > 50 and sum(len(e) for e in graph.values()) > 100, "the import graph looks empty"
    assert "meshbed.runtime.docker" in graph["meshbed.runtime"], "the package-__init__ edge was not seen"
    found = cycles(graph)
    assert not found, "\n".join(describe(c, graph) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.mark.parametrize("files, expected", [
    # function-level import closes the cycle
    ({"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "def f():\n    from .a import x\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
    # TYPE_CHECKING import closes the cycle
    ({"pkg/__init__.py": "", "pkg/a.py": "from .b import B\n",
      "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
    # through a package __init__ that imports one of its modules
    ({"pkg/__init__.py": "", "pkg/r/__init__.py": "from . import d\n", "pkg/r/base.py": "",
      "pkg/r/d.py": "from ..c import e\n", "pkg/c/__init__.py": "", "pkg/c/e.py": "from ..r.base import X\n"},
     ["pkg.c.e", "pkg.r", "pkg.r.d", "pkg.c.e"]),
])
def test_checker_finds_cycles(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    _write(tmp_path, files)
    graph = import_graph(tmp_path, "pkg")
    found = cycles(graph)
    assert found == [expected], found
    assert describe(found[0], graph).startswith(f"import cycle: {expected[0]} -> {expected[1]} (pkg/")


def test_checker_ignores_ancestors_and_outside_imports(tmp_path: Path) -> None:
    _write(tmp_path, {"pkg/__init__.py": "from . import a\n", "pkg/a.py": "import os\nfrom pkg import b\nimport pkg\n",
                      "pkg/b.py": "import json\n"})
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"].keys() == {"pkg.b"}
    assert cycles(graph) == []
