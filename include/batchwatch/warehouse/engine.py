"""Engines, migrations, locks and the dialect details every read and write shares (PostgreSQL and SQLite)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.errors import PermanentError
from batchwatch.hashing import bucket
from batchwatch.warehouse.timeouts import driver_error, named_timeouts, timeout_error, with_timeouts

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine for a warehouse URL. PostgreSQL goes through psycopg 3 (binary COPY in);
    `stream_frames` reads through psycopg2, whose COPY out loop runs in C.

    PostgreSQL connections get TCP keepalives and statement, lock and idle timeouts (see
    `batchwatch.warehouse.timeouts`, set by environment variables), and a timeout that fires is
    raised as a DatabaseTimeout naming it. `read_only` sessions refuse every write, whatever the
    login's grants (PostgreSQL's default_transaction_read_only, SQLite's query_only): the web app's.
    """
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = with_timeouts(parsed)
        if read_only:
            options = f"{parsed.query.get('options', '')} -c default_transaction_read_only=on".strip()
            parsed = parsed.update_query_dict({"options": options})
    engine = sa.create_engine(parsed)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if read_only:
            sa.event.listen(engine, "connect", _sqlite_query_only)
    else:
        sa.event.listen(engine, "handle_error", _name_timeout)
    return engine


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA query_only = ON")


def _name_timeout(context: Any) -> BaseException | None:
    """SQLAlchemy raises what this returns in place of a driver error: a timeout, named."""
    return timeout_error(context.original_exception)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("batchwatch_bucket", 2, bucket, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the warehouse schema to `revision` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def lock_key(*parts: object) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock from the parts naming a unit of work."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def wait_for_unit(execute: Callable[[str, dict[str, int] | None], Any], key: int) -> None:
    """Take the advisory lock `key` for the transaction through `execute` (a driver's or SQLAlchemy's), waiting as long as it takes.

    A second run of a unit of work waits for the first to finish, however long that runs (statement
    and execution timeouts bound it); lock_timeout is meant for a statement stuck behind a reader, so
    it is lifted for this one wait and put back to the session's value after.
    """
    execute("SET LOCAL lock_timeout = 0", None)
    execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": key})
    execute("RESET lock_timeout", None)


def lock_unit(connection: Connection, *parts: object) -> None:
    """Serialise the unit of work named by `parts` until the transaction ends.

    PostgreSQL: a transaction-level advisory lock, waited for without lock_timeout. SQLite has one
    lock for the whole database: a write statement, even one matching no row, takes it now rather
    than at the first real write, so the reads that follow are serialised too (alembic_version is in
    every migrated warehouse).
    """
    if is_postgres(connection.engine):
        wait_for_unit(connection.exec_driver_sql, lock_key(*parts))
    else:
        connection.execute(sa.text("DELETE FROM alembic_version WHERE 1 = 0"))


class QueryRefused(PermanentError):
    """The database refused a query's text: a syntax error, a table or column it does not have, no permission."""


# SQLite's messages for a query whose text is wrong (it has no SQLSTATE).
_SQLITE_REFUSALS = re.compile(r"near .*: syntax error|incomplete input|no such (table|column|function)|unrecognized token")


def refusal(error: BaseException) -> str | None:
    """The database's message if `error` says the query's text is wrong, which no retry changes; else None.

    PostgreSQL: SQLSTATE class 42 (syntax error or access rule violation: undefined table, column or
    function, wrong types, no permission), from psycopg 3 or psycopg2, bare or wrapped by SQLAlchemy.
    """
    cause, state = driver_error(error)
    if state is not None:
        if not state.startswith("42"):
            return None
        diagnostics = getattr(cause, "diag", None)
        return getattr(diagnostics, "message_primary", None) or str(cause).strip()
    if isinstance(cause, sqlite3.OperationalError) and _SQLITE_REFUSALS.match(str(cause)):
        return str(cause)
    return None


@contextmanager
def refused_queries(origin: str) -> Iterator[None]:
    """Raise QueryRefused, naming `origin` and the database's message, for a query whose text the database refuses."""
    try:
        yield
    except Exception as error:
        message = refusal(error)
        if message is None:
            raise
        raise QueryRefused(f"{origin}: the database refused the query: {message}. Correct the query; a retry would run it unchanged") from error


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[Any]:
    """The DB-API connection under one transaction: committed on success, rolled back on any error."""
    with named_timeouts():
        raw = engine.raw_connection()
    try:
        with named_timeouts():
            yield raw.driver_connection
            raw.driver_connection.commit()
    except BaseException:
        with suppress(Exception):  # a connection the server closed cannot roll back: the error above is the one to report
            raw.driver_connection.rollback()
        raise
    finally:
        raw.close()


def sqlite_value(value: Any) -> Any:
    """Store dates and times the way SQLAlchemy's SQLite types read them back."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_unique_violation(error: BaseException) -> bool:
    """A unique key refused a row, on PostgreSQL (SQLSTATE 23505) or SQLite."""
    return getattr(error, "sqlstate", None) == "23505" or (isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error))


# COPY's text format, which reads and writes share: NULL is \N, and a text's backslashes are escaped.
NULL = "\\N"


# COPY TO writes these escapes (never octal or hex ones); any other escaped character stands for itself.
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


_ESCAPE_SEQUENCE = re.compile(r"\\(.)", re.DOTALL)


def copy_unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub(lambda match: _COPY_ESCAPES.get(match.group(1), match.group(1)), text)
