"""The library's import graph, read from its source (every import, function-local ones included): no import
circle, and a contract floor (the part bases, the registry, the artefact kinds and data types, errors) that
imports nothing above it. A circle or an upward import fails here with the modules that make it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "retrdistill"
FACADE = "retrdistill"  # the package's __init__: __version__ and the public names, re-exported lazily from above
FLOOR = {
    "retrdistill.errors", "retrdistill.artefacts", "retrdistill.validate", "retrdistill.kinds", "retrdistill.hits",
    "retrdistill.parts", "retrdistill.registry", "retrdistill.data.beir", "retrdistill.data.jsonl",
    "retrdistill.data.row_lookup", "retrdistill.progress", "retrdistill.memory",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                target = owner(name) if name.startswith("retrdistill") else None
                if target and target != module:
                    graph[module].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_imports_of_every_form():
    graph = import_graph()
    assert "retrdistill.parts" in graph["retrdistill.registry"]  # function-local: from retrdistill.parts import ...
    assert "retrdistill.registry" in graph["retrdistill.stages.index"]  # from retrdistill import registry
    assert "retrdistill.kinds" in graph["retrdistill.pseudo_queries"]  # module level
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    graph = import_graph()
    graph[FACADE] = set()  # its lazy re-exports are the public top, not a dependency of the modules below
    found = circles(graph)
    detail = [" -> ".join(group) + ": " + "; ".join(f"{a} imports {b}" for a in group for b in sorted(graph[a])
                                                    if b in group) for group in found]
    assert not found, "import circles:\n" + "\n".join(detail)


def test_the_contract_floor_imports_nothing_above_it():
    graph = import_graph()
    assert FLOOR <= set(graph), sorted(FLOOR - set(graph))
    upward = {m: sorted(graph[m] - FLOOR - {FACADE}) for m in sorted(FLOOR) if graph[m] - FLOOR - {FACADE}}
    assert not upward, f"floor modules importing from above the floor: {upward}"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the library's packages (``retrdistill.X`` for every module under ``X/``) and its
    top-level modules."""
    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else module

    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == FACADE:
            continue
        here = package(module)
        out.setdefault(here, set()).update(package(t) for t in targets if package(t) != here and t != FACADE)
    return out


def test_no_circle_between_packages():
    """A package (``families/``, ``teachers/``, ``stages/``, ...) and the modules it reaches never reach back
    into it: each package sits on its own layer."""
    modules = import_graph()
    graph = package_graph(modules)
    found = circles(graph)
    detail = [" -> ".join(group) + ": " + "; ".join(
        f"{a} imports {b}" for a in sorted(modules) for b in sorted(modules[a])
        if a != FACADE and b != FACADE and any(a == g or a.startswith(g + ".") for g in group)
        and any(b == g or b.startswith(g + ".") for g in group)
        and not any(a.startswith(g + ".") or a == g for g in group if b == g or b.startswith(g + ".")))
        for group in found]
    assert not found, "circles between packages:\n" + "\n".join(detail)
