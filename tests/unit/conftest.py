"""Fixtures shared by the unit tests: the demo fraud spec and a migrated SQLite warehouse."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine

from batchwatch.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
FRAUD_YAML = ROOT / "include" / "models" / "fraud.yaml"
_FRAUD_DATA: dict[str, Any] = yaml.safe_load(FRAUD_YAML.read_text())


@pytest.fixture(scope="session")
def fraud_spec() -> ModelSpec:
    return load_spec(FRAUD_YAML)


@pytest.fixture
def fraud_data() -> dict[str, Any]:
    """The fraud spec as plain YAML data, a fresh copy each test may mutate."""
    return copy.deepcopy(_FRAUD_DATA)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """An empty, migrated SQLite warehouse in the test's tmp_path."""
    from batchwatch.warehouse import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    migrate(engine)
    yield engine
    engine.dispose()
