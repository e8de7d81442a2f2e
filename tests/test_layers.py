"""The floors of docs/architecture.md: no module imports a floor above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "streammix"

#: Floor of each top-level part of the package (a module or a subpackage).
FLOORS = {
    "exceptions": 0, "_serial": 0, "core": 0,
    "io": 1,
    "engine": 2,
    "estimators": 3, "datasets": 3,
    "scoring": 4, "plotting": 4, "describe": 4,
    "cli": 5,
    "__init__": 6, "__main__": 6,
}
#: Deprecated aliases of moved modules: they import their new home, wherever it is.
ALIASES = {"_moved", "stream", "adaptive", "serve", "estimators/anomaly.py",
           "estimators/__init__.py"}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported_parts(path: Path):
    """The top-level parts of streammix that ``path`` imports (absolute or relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if target else [[alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == "streammix":
                names = [node.module.split(".")[1:]]
            else:
                continue
            for name in names:
                if name:
                    yield name[0], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "streammix" and len(parts) > 1:
                    yield parts[1], node.lineno


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_floor(path):
    relative = str(path.relative_to(PACKAGE))
    part = _part(path)
    if part in ALIASES or relative in ALIASES:
        return
    floor = FLOORS[part]
    for imported, line in _imported_parts(path):
        if imported == part or imported not in FLOORS:
            continue
        assert FLOORS[imported] <= floor, \
            f"{relative}:{line} imports {imported} (floor {FLOORS[imported]}) from floor {floor}"


def test_every_part_has_a_floor():
    parts = {_part(p) for p in MODULES}
    assert parts <= set(FLOORS) | ALIASES, parts - set(FLOORS) - ALIASES
