"""The layout's rules, read from the source: no import cycle, nothing imported upward.

The graph has an edge for every ``import`` in ``midpay/``: at module level, inside
functions, and under ``if TYPE_CHECKING:`` (a type-only import is still a dependency
of the design). ``from a.b import c`` is an edge to the module ``a.b.c`` when there is
one, else to ``a.b``; the parent packages Python also imports are not edges, or every
package that re-exports its modules would be a cycle.

Violations that are being fixed elsewhere are listed in the ``KNOWN_*`` sets. Each
test compares what it finds with its set EXACTLY: a new violation fails, and so does a
listed one that has gone (trim the list then).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "midpay"

USE_CASES = (
    "midpay.payments", "midpay.intake", "midpay.reconcile", "midpay.refunds", "midpay.web", "midpay.cli",
    "midpay.output", "midpay.setup",
)
# What the two edges of midpay (persistence, and the Midtrans API) must not import: no use case,
# not each other; the database layer is handed its URL (no settings, no embedded server).
# config's leaf helpers (redaction) stay open to midtrans, which keeps the key out of what it raises.
FORBIDDEN = {
    "midpay.db": (*USE_CASES, "midpay.midtrans", "midpay.config", "midpay.embedded", "midpay.sandbox",
                  "midpay.testing"),
    "midpay.midtrans": (*USE_CASES, "midpay.db", "midpay.embedded", "midpay.sandbox", "midpay.testing"),
}
# Pure modules: the forward-only rule and the signature check depend on nothing but the errors.
PURE = ("midpay.states", "midpay.midtrans.notifications")
# Pure modules may use each other: the notification's parser names states as ``states`` does.
PURE_MAY_IMPORT = ("midpay.errors", *PURE)
# output/ renders data; at run time it may use only itself, the errors and the pure Midtrans
# facts (time zone, time format). The types it reads are imported for annotations only.
OUTPUT_MAY_RUN = ("midpay.output", "midpay.errors", "midpay.states", "midpay.midtrans.notifications")

KNOWN_CYCLES: set[tuple[str, ...]] = set()
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_IMPURE: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    type_only: bool


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement anywhere in ``tree`` (functions too), and whether it is for type checking only."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child):
            for inner in child.body:
                yield from _imports(ast.Module(body=[inner], type_ignores=[]), True)
            for inner in child.orelse:
                yield from _imports(ast.Module(body=[inner], type_ignores=[]), type_only)
        else:
            yield from _imports(child, type_only)


def _nearest_module(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


def _edges() -> list[Edge]:
    edges = set()
    for module, path in MODULES.items():
        for node, type_only in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _targets(module, node):
                found = _nearest_module(target) if target.split(".")[0] == "midpay" else None
                if found is not None and found != module:
                    edges.add(Edge(module, found, type_only))
    return sorted(edges, key=lambda e: (e.importer, e.imported, e.type_only))


EDGES = _edges()


def _within(name: str, packages: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _cycles(edges: list[Edge]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.add(tuple(sorted(component)))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _compare(found: set[tuple[str, ...]], known: set[tuple[str, ...]]) -> None:
    new, gone = sorted(found - known), sorted(known - found)
    assert not new, f"new violations: {new}"
    assert not gone, f"fixed, so take them off the KNOWN list: {gone}"


def test_the_graph_sees_the_package() -> None:
    importers = {e.importer for e in EDGES}
    assert {"midpay.cli", "midpay.db.core", "midpay.output.views", "midpay.sandbox.server"} <= importers
    assert Edge("midpay.output.views", "midpay.output.refunds", False) in EDGES  # `from midpay.output.refunds import`
    assert Edge("midpay.cli.common", "midpay.cli.boundary", False) in EDGES
    assert any(e.type_only for e in EDGES) and any(e.importer.startswith("midpay.sandbox.") for e in EDGES)


def test_no_import_cycle() -> None:
    _compare(_cycles(EDGES), KNOWN_CYCLES)


def test_db_and_midtrans_import_no_use_case_and_not_each_other() -> None:
    found = {
        (e.importer, e.imported)
        for e in EDGES
        for layer, forbidden in FORBIDDEN.items()
        if _within(e.importer, [layer]) and _within(e.imported, forbidden)
    }
    _compare(found, KNOWN_UPWARD)


def test_states_and_the_signature_check_import_only_the_errors() -> None:
    found = {(e.importer, e.imported) for e in EDGES if e.importer in PURE and e.imported not in PURE_MAY_IMPORT}
    _compare(found, KNOWN_IMPURE)


def test_nothing_imports_the_command_line() -> None:
    outside = {
        (e.importer, e.imported) for e in EDGES
        if _within(e.imported, ["midpay.cli"]) and not _within(e.importer, ["midpay.cli"])
    }
    assert outside == {("midpay.__main__", "midpay.cli")}  # `python -m midpay`, the entry point


def test_output_runs_no_use_case() -> None:
    found = {
        (e.importer, e.imported) for e in EDGES
        if _within(e.importer, ["midpay.output"]) and not e.type_only and not _within(e.imported, OUTPUT_MAY_RUN)
    }
    assert found == set()
