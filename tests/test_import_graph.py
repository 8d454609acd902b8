"""No import cycles inside mixsweep/, counting imports inside functions too (a lazy import still ties two
modules together, and turns into a real cycle the day it moves to the top).

Run it as a script to print the graph's size and every cycle with the lines that make it:
    python tests/test_import_graph.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mixsweep"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, for `import` and `from ... import` anywhere in the file.

    An import of a.b.c also runs a/__init__.py and a/b/__init__.py, so those packages are edges too
    (except the importer's own packages, which are already being imported when it runs).
    """

    def owner(name: str) -> str | None:  # the longest prefix that is one of our modules
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for mod, path in mods.items():
        edges = graph.setdefault(mod, {})
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        own = {".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: package.count(".") + 2 - node.level]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name)
                if target is None:
                    continue
                parents = [".".join(target.split(".")[:i]) for i in range(1, target.count(".") + 1)]
                for t in [target, *parents]:
                    if t != mod and t not in own and t in mods:
                        edges.setdefault(t, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(graph: dict[str, dict[str, int]], comp: list[str]) -> str:
    return "; ".join(f"{a} -> {b} (line {line})" for a in comp for b, line in graph[a].items() if b in comp)


def test_no_import_cycles():
    graph = import_graph(modules())
    assert "mixsweep.data.pets" in graph["mixsweep.train.metrics"]  # the walker sees imports at all
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, c) for c in found)


def test_imports_inside_functions_and_relative_ones_count(tmp_path):
    pkg = tmp_path / "mixsweep"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import x\n")
    (pkg / "a.py").write_text("def f():\n    from mixsweep.sub import b\n")
    (pkg / "sub" / "b.py").write_text("x = 1\ndef g():\n    from .. import a\n")
    graph = import_graph(modules(pkg))
    assert graph["mixsweep.a"] == {"mixsweep.sub.b": 2, "mixsweep.sub": 2}
    assert graph["mixsweep.sub"] == {"mixsweep.sub.b": 1}
    assert cycles(graph) == [["mixsweep.a", "mixsweep.sub", "mixsweep.sub.b"]]


if __name__ == "__main__":
    g = import_graph(modules())
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges (top-level and inside functions)")
    cs = cycles(g)
    for c in cs:
        print("cycle:", describe(g, c))
    print("no cycles" if not cs else f"{len(cs)} cycle(s)")
    sys.exit(1 if cs else 0)
