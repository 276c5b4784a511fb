"""A sandbox: an empty warehouse beside the real one, migrated to head, for work that must not touch the real tables.

PostgreSQL: a fresh schema in the same database, reached through an engine whose every connection (the COPY-out
reader's too) has only that schema on its search_path, so every unqualified name resolves there and a real table is
reached only by naming its schema. SQLite: a temporary database file, which sees the real one only while `copying`
attaches it. Either is dropped on leaving, also on failure.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.errors import InvalidArgument
from batchwatch.spec import quote
from batchwatch.spec.model import IDENTIFIER
from batchwatch.warehouse.engine import is_postgres, make_engine, migrate
from batchwatch.warehouse.write import partition_name

SCHEMA_PREFIX = "batchwatch_sandbox_"
ORIGIN_ALIAS = "origin"  # how a SQLite sandbox names the attached real warehouse while copying


@dataclass(frozen=True)
class Sandbox:
    """A migrated, empty warehouse (`engine`) and how its statements name the real one's tables (`origin`)."""

    engine: Engine
    name: str  # the PostgreSQL schema, or the SQLite file
    origin: str  # the real warehouse's schema (PostgreSQL) or attachment (SQLite), already quoted
    _origin_path: str | None = None  # SQLite: the real database file

    def table(self, name: str) -> str:
        """A real table's name as the sandbox's statements reach it."""
        return f"{self.origin}.{quote(name)}"

    @contextmanager
    def copying(self) -> Iterator[Connection]:
        """One sandbox transaction that can read the real warehouse through `table()`; on SQLite only inside it."""
        if self._origin_path is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql(f"ATTACH DATABASE ? AS {self.origin}", (self._origin_path,))
            connection.commit()  # SQLite attaches outside a transaction
            try:
                with connection.begin():
                    yield connection
            finally:
                connection.exec_driver_sql(f"DETACH DATABASE {self.origin}")
                connection.commit()

    def clone_table(self, connection: Connection, name: str) -> None:
        """Give the sandbox the real table `name`'s definition (columns, keys, indexes), empty, in place of its own if it has one."""
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
        if self._origin_path is None:
            # Not its defaults: a serial column's would draw from the real table's sequence.
            connection.exec_driver_sql(f"CREATE TABLE {quote(name)} (LIKE {self.table(name)} INCLUDING ALL EXCLUDING DEFAULTS)")
            return
        statements = connection.execute(
            sa.text(f"SELECT sql FROM {self.origin}.sqlite_master WHERE tbl_name = :t AND sql IS NOT NULL ORDER BY type = 'index'"),
            {"t": name},
        ).scalars().all()
        if not statements:
            raise InvalidArgument(f"the warehouse has no table {name!r} to copy into the sandbox")
        for statement in statements:
            connection.exec_driver_sql(statement)

    def add_prediction_partitions(self, connection: Connection, model_name: str, days: Sequence[date]) -> None:
        """PostgreSQL keeps predictions in one partition per model and day, named as the nightly writer names them."""
        if self._origin_path is not None:
            return
        if not IDENTIFIER.match(model_name):
            raise InvalidArgument(f"{model_name!r} is not a model name")
        for ds in days:  # a partition bound takes no parameters: the name is an identifier and the days ISO dates
            connection.exec_driver_sql(
                f"CREATE TABLE {partition_name(model_name, ds)} PARTITION OF predictions"
                f" FOR VALUES FROM ('{model_name}', '{ds.isoformat()}') TO ('{model_name}', '{(ds + timedelta(days=1)).isoformat()}')"
            )


@contextmanager
def sandbox(engine: Engine) -> Iterator[Sandbox]:
    """A sandbox beside `engine`'s warehouse, migrated to head; dropped on leaving, whatever happened inside."""
    if is_postgres(engine):
        with _postgres_sandbox(engine) as made:
            yield made
    else:
        with _sqlite_sandbox(engine) as made:
            yield made


@contextmanager
def _postgres_sandbox(engine: Engine) -> Iterator[Sandbox]:
    schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        origin = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    options = " ".join(part for part in (engine.url.query.get("options"), f"-c search_path={schema}") if part)
    scratch = make_engine(engine.url.update_query_dict({"options": options}).render_as_string(hide_password=False))
    try:
        migrate(scratch)
        yield Sandbox(scratch, schema, quote(origin))
    finally:
        scratch.dispose()
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def _sqlite_sandbox(engine: Engine) -> Iterator[Sandbox]:
    real = engine.url.database
    if not real or real == ":memory:":
        raise InvalidArgument("a sandbox copies from a SQLite warehouse file; an in-memory database cannot be attached")
    folder = Path(tempfile.mkdtemp(prefix="batchwatch-sandbox-"))
    scratch = make_engine(f"sqlite:///{folder / 'sandbox.db'}")
    try:
        migrate(scratch)
        yield Sandbox(scratch, str(folder / "sandbox.db"), ORIGIN_ALIAS, str(Path(real).resolve()))
    finally:
        scratch.dispose()
        shutil.rmtree(folder, ignore_errors=True)
