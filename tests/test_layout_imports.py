"""The package layout holds: `tuner/` is in layers, each importing only from the layers below
it, with no import cycle between modules, and only `tuner.cli.serve` imports the API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first: a package may import itself and the packages before it.
LAYERS = [
    "domain",
    "public",
    "outputs",
    "artifacts",
    "persistence",
    "study",
    "trial",
    "engine",
    "client",
    "cli",
]
#: The one module that composes the server.
MAY_IMPORT_API = {"tuner.cli.serve"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The tuner and api modules a file imports (function-level ones too, unless asked)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in {"tuner", "api"}}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / "tuner").rglob("*.py"))}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "tuner" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def test_every_module_is_in_a_layer():
    loose = [m for m in _modules() if m != "tuner" and _layer(m) is None]
    assert loose == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_go_down_the_layers(module: str):
    path = _modules()[module]
    mine = _layer(module)
    upward = []
    for target in _imports(path, top_level_only=False):
        if target.startswith("api"):
            if module not in MAY_IMPORT_API:
                upward.append(target)
            continue
        theirs = _layer(target)
        if mine is not None and theirs is not None and theirs > mine:
            upward.append(target)
    assert upward == [], f"{module} imports from a higher layer"


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {
        name: {t for t in _imports(path, top_level_only=True) if t in modules and t != name}
        for name, path in modules.items()
    }
    # Importing a package runs its __init__: an edge to a module implies one to its packages
    # (not to the importer's own packages: they are being imported already).
    for name, targets in graph.items():
        for target in list(targets):
            parts = target.split(".")
            parents = {".".join(parts[:i]) for i in range(2, len(parts))}
            targets.update(
                p for p in parents if p in modules and not (name == p or name.startswith(p + "."))
            )
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*trail, nxt]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if state.get(name) is None and visit(name, [name]):
            break
    assert cycle == []
