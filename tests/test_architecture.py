"""The layering of the package: no import cycle, and each layer imports only what is below it.

Imports are read from the source (module level and inside functions; ``if TYPE_CHECKING:`` blocks
are left out, they never run). A package's ``__init__`` is its own node: importing
``cvtransfer.losses.dan`` is not counted as importing ``cvtransfer.losses``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "cvtransfer"


def module_name(path: Path) -> str:
    parts = ["cvtransfer", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imports_of(name: str) -> set[str]:
    """The cvtransfer modules that ``name`` imports when it runs."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in MODULES:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    return found


def test_the_reader_sees_imports() -> None:
    assert "cvtransfer.engine.commands" in GRAPH["cvtransfer.api"]
    assert "cvtransfer.losses.base" in GRAPH["cvtransfer.losses.dann"]


def test_no_import_cycle() -> None:
    assert cycles() == []


# Layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = [
    ("foundation", ("cvtransfer.errors", "cvtransfer.options", "cvtransfer.registry", "cvtransfer.io")),
    ("data and models", ("cvtransfer.data", "cvtransfer.models", "cvtransfer.evaluation")),
    ("plug-ins", ("cvtransfer.tasks", "cvtransfer.strategies", "cvtransfer.losses", "cvtransfer.scores", "cvtransfer.few_shot",
                  "cvtransfer.plugins")),
    ("config", ("cvtransfer.config",)),
    ("engine and run folder", ("cvtransfer.engine", "cvtransfer.run", "cvtransfer.report", "cvtransfer.comparison")),
    ("workflows", ("cvtransfer.workflows",)),
    ("api", ("cvtransfer.api",)),
    ("cli", ("cvtransfer.cli", "cvtransfer.__main__", "cvtransfer")),
]


def layer_of(name: str) -> int:
    best = max(((len(prefix), level) for level, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if name == prefix or name.startswith(prefix + ".")), default=None)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[1]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name: str) -> None:
    upward = sorted(other for other in GRAPH[name] if layer_of(other) > layer_of(name))
    assert upward == [], f"{name} ({LAYERS[layer_of(name)][0]}) imports from above: {upward}"
