"""The core's sub-packages import one way: statistics and specs know no I/O, the warehouse knows no models,
and nothing in the product imports the demo or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "include" / "batchwatch"

# What each part of the core may import from the rest of it. A part is a sub-package or a top-level module.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "serialization": set(),
    "hashing": set(),
    "stats": {"serialization"},
    # Inline SVG and HTML helpers: strings in, strings out, shared by the plugin's pages and the core's reports.
    "reporting": set(),
    "spec": {"errors"},
    "data": {"spec", "errors"},
    "warehouse": {"spec", "serialization", "hashing", "errors"},
    "registry": {"warehouse", "spec", "serialization", "errors"},
    "scoring": {"registry", "warehouse", "data", "spec", "hashing", "errors"},
    "monitoring": {"reporting", "scoring", "registry", "warehouse", "data", "stats", "spec", "serialization", "hashing", "errors"},
    "modeling": {"monitoring", "scoring", "registry", "warehouse", "data", "stats", "spec", "serialization", "errors"},
    "promotion": {"monitoring", "modeling", "scoring", "registry", "warehouse", "data", "stats", "spec", "serialization", "hashing", "errors"},
    # Read-only surfaces over the warehouse, served by the plugin's web app.
    "serving": {"warehouse", "data", "errors"},
    "observability": {"monitoring", "warehouse"},
    # The read models of the web app and the CLI: SQL over the warehouse's tables, light imports.
    "queries": {"errors"},
    # The shims at the paths that stored artifacts and specs name.
    "training": {"modeling"},
    "fraud_demo": {"demo"},
    # The edges: the demo and the command line may use everything; nothing above imports them.
    "demo": {"modeling", "warehouse", "spec", "errors"},
    "cli": {"demo", "modeling", "promotion", "queries", "registry", "warehouse", "spec", "errors"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Database drivers and the standard library's SQLite belong to the warehouse alone.
DRIVERS = {"sqlite3", "psycopg", "psycopg2"}
# Parts that must stay free of I/O libraries altogether.
PURE = {"errors", "serialization", "hashing", "stats", "spec", "data", "reporting"}
IO_LIBRARIES = DRIVERS | {"sqlalchemy", "alembic", "joblib", "requests", "urllib.request"}
# Single modules that must stay free of I/O inside a part that does I/O: what an alert says is rendered
# from the alert alone, so every notifier (and a test with no warehouse) gets the same message.
PURE_MODULES = {"batchwatch.monitoring.messages", "batchwatch.monitoring.report"}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(CORE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "batchwatch")
    return found


SOURCES = sorted(path for path in CORE.rglob("*.py") if "migrations" not in path.parts)


def test_every_pure_module_exists() -> None:
    assert PURE_MODULES <= {_module_name(path) for path in SOURCES}


def test_every_part_of_the_core_has_a_rule() -> None:
    parts = {_part(_module_name(path)) for path in SOURCES}
    assert parts <= set(ALLOWED), f"give these parts a layering rule: {sorted(parts - set(ALLOWED))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(CORE)))
def test_imports_go_one_way(path: Path) -> None:
    part = _part(_module_name(path))
    imported = _imports(path)
    core = {_part(name) for name in imported if name.startswith("batchwatch.")} - {part}
    assert core <= ALLOWED[part], f"{part} may not import {sorted(core - ALLOWED[part])}"
    roots = {name.split(".")[0] for name in imported} | imported
    assert "airflow" not in roots, "the core never imports Airflow"
    if part != "warehouse":
        assert not roots & DRIVERS, f"database drivers belong to the warehouse: {sorted(roots & DRIVERS)}"
    if part in PURE or _module_name(path) in PURE_MODULES:
        assert not roots & IO_LIBRARIES, f"{part} must not do I/O: imports {sorted(roots & IO_LIBRARIES)}"
