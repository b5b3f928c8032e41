"""Package structure: no import cycles between stylize_fast's modules, and no module but
stylize_fast/config.py (and csrc/config.cpp) reads a STYLIZE_FAST_* environment variable."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stylize_fast"
# Compiled modules (setup.py's ext_modules): leaves of the graph, present or not in a checkout.
COMPILED = {"stylize_fast._C"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the stylize_fast modules it imports, anywhere in its body (function-level and
    TYPE_CHECKING imports included: a cycle through them is still a cycle of dependencies)."""
    modules = _modules()
    known = set(modules) | COMPILED
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` imports the submodule; `from mod import name` the module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)  # not COMPILED
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_relative_and_absolute_imports():
    graph = import_graph()
    assert "stylize_fast.config" in graph["stylize_fast.backends"]
    assert "stylize_fast.inference.dispatch" in graph["stylize_fast.inference.engine"]
    assert "stylize_fast.ops.instance_norm" in graph["stylize_fast.ops"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


ENV_READ = re.compile(r"(os\.environ|os\.getenv|getenv\()")


def test_only_config_reads_stylize_fast_variables():
    offenders = []
    for name, path in _modules().items():
        if name == "stylize_fast.config":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ENV_READ.search(line) and "STYLIZE_FAST_" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for path in sorted((ROOT / "csrc").rglob("*.[ch]*")):
        if path.name == "config.cpp":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "getenv" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
