"""Timeouts on every PostgreSQL connection, so that a frozen server or a blocked lock fails a task instead of hanging it.

Each is set from an environment variable when the engine is made (no code change to tune them):

- ``BATCHWATCH_PG_STATEMENT_TIMEOUT`` (default ``1h``): server-side ``statement_timeout``, the longest one
  statement may run. A nightly COPY over 20M rows takes minutes; an hour is far above it.
- ``BATCHWATCH_PG_LOCK_TIMEOUT`` (default ``5min``): server-side ``lock_timeout``, the longest a statement
  waits for a lock (the partition swap behind a long reader fails clearly instead of waiting forever).
- ``BATCHWATCH_PG_IDLE_IN_TRANSACTION_TIMEOUT`` (default ``30min``): server-side
  ``idle_in_transaction_session_timeout``, so a frozen worker does not hold its locks for ever.
- ``BATCHWATCH_PG_CLIENT_CHECK_INTERVAL`` (default ``10s``): server-side ``client_connection_check_interval``
  (PostgreSQL 14+), how often a session that runs or waits checks that its client is still there. A task
  killed with ``kill -9`` while its session waits on a lock would otherwise keep that lock, and its
  uncommitted stage, until the wait ends; with it the server rolls the session back within this interval.
- ``BATCHWATCH_PG_CONNECT_TIMEOUT`` (default ``30``, seconds): libpq ``connect_timeout``.
- ``BATCHWATCH_PG_KEEPALIVES_IDLE`` / ``_INTERVAL`` / ``_COUNT`` (defaults ``60`` / ``10`` / ``6``, seconds and
  probes): libpq TCP keepalives, so a server host that vanished is noticed in about two minutes.

Server-side values take PostgreSQL's units (``500ms``, ``30s``, ``5min``, ``1h``); ``0`` turns one off.
Settings already in the warehouse URL (its ``options`` or query) win over these.

A timeout surfaces as a `DatabaseTimeout` naming the timeout, its value and the variable to raise.
A lock, idle or connect timeout is transient (the blocking reader finishes, the server comes back):
the task's retries handle it. A statement timeout is permanent: the same statement over the same
rows runs as long again, so retrying only spends the retries' hours; someone has to raise the limit
or find what made it slow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.engine import URL

from batchwatch.errors import BatchwatchError, InvalidArgument, PermanentError


@dataclass(frozen=True)
class ServerSetting:
    name: str  # the PostgreSQL parameter
    variable: str
    default: str


SERVER_SETTINGS = (
    ServerSetting("statement_timeout", "BATCHWATCH_PG_STATEMENT_TIMEOUT", "1h"),
    ServerSetting("lock_timeout", "BATCHWATCH_PG_LOCK_TIMEOUT", "5min"),
    ServerSetting("idle_in_transaction_session_timeout", "BATCHWATCH_PG_IDLE_IN_TRANSACTION_TIMEOUT", "30min"),
    ServerSetting("client_connection_check_interval", "BATCHWATCH_PG_CLIENT_CHECK_INTERVAL", "10s"),
)
CLIENT_SETTINGS = {  # libpq keyword: (variable, default)
    "connect_timeout": ("BATCHWATCH_PG_CONNECT_TIMEOUT", "30"),
    "keepalives_idle": ("BATCHWATCH_PG_KEEPALIVES_IDLE", "60"),
    "keepalives_interval": ("BATCHWATCH_PG_KEEPALIVES_INTERVAL", "10"),
    "keepalives_count": ("BATCHWATCH_PG_KEEPALIVES_COUNT", "6"),
}


def _value(variable: str, default: str) -> str:
    value = os.environ.get(variable, "").strip() or default
    if any(character.isspace() for character in value) or "\\" in value:
        raise InvalidArgument(f"{variable}={value!r}: write a timeout without spaces, e.g. 5min or 500ms")
    return value


def server_timeouts() -> dict[str, str]:
    """The server-side timeouts as they apply now: PostgreSQL parameter -> value."""
    return {setting.name: _value(setting.variable, setting.default) for setting in SERVER_SETTINGS}


def with_timeouts(url: URL) -> URL:
    """`url` with TCP keepalives, a connect timeout and the server-side timeouts, unless the URL already sets them.

    The server-side ones go in libpq's `options` (`-c name=value`), which psycopg 3 and psycopg2 both
    pass at connect, so every session starts with them and no statement runs before they apply.
    """
    query = dict(url.query)
    options = query.get("options", "")
    assert isinstance(options, str), "one options string in the URL"
    ours = [f"-c {name}={value}" for name, value in server_timeouts().items() if name not in options]
    additions = {"keepalives": "1"} | {keyword: _value(*default) for keyword, default in CLIENT_SETTINGS.items()}
    query |= {keyword: value for keyword, value in additions.items() if keyword not in query}
    query["options"] = " ".join([*ours, options]).strip()
    return url.set(query=query)


class DatabaseTimeout(BatchwatchError):
    """A timeout fired on a warehouse connection; the message names it, its value and the variable that sets it."""


class LockTimeout(DatabaseTimeout):
    """A statement waited longer than lock_timeout for a lock another session holds."""


class IdleInTransactionTimeout(DatabaseTimeout):
    """The server ended a session that sat idle inside a transaction for too long."""


class ConnectTimeout(DatabaseTimeout):
    """The server did not accept a connection within connect_timeout."""


class StatementTimeout(DatabaseTimeout, PermanentError):
    """A statement ran longer than statement_timeout: it would again, so it is not retried."""


def _setting(name: str) -> ServerSetting:
    return next(setting for setting in SERVER_SETTINGS if setting.name == name)


def _server_timeout(kind: type[DatabaseTimeout], name: str, what: str, advice: str) -> DatabaseTimeout:
    setting = _setting(name)
    value = _value(setting.variable, setting.default)
    return kind(f"{name} ({value}) fired: {what}. {advice}; to allow longer, raise {setting.variable} (now {value})")


def driver_error(error: BaseException) -> tuple[BaseException, str | None]:
    """(the driver's exception, its SQLSTATE or None) from psycopg 3 or psycopg2, bare or wrapped by SQLAlchemy."""
    cause = getattr(error, "orig", None) or error
    return cause, getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)


def timeout_error(error: BaseException) -> DatabaseTimeout | None:
    """The DatabaseTimeout that `error` (psycopg 3 or psycopg2, bare or wrapped by SQLAlchemy) stands for; None if it is no timeout."""
    cause, state = driver_error(error)
    if isinstance(cause, BatchwatchError):
        return None  # named already
    text = str(cause)
    if state == "55P03" and "lock timeout" in text:
        return _server_timeout(
            LockTimeout, "lock_timeout", "a statement waited too long for a lock another session holds",
            "The task's retry tries again; if it recurs, look for the blocking session in pg_stat_activity",
        )  # fmt: skip
    if state == "57014" and "statement timeout" in text:
        return _server_timeout(
            StatementTimeout, "statement_timeout", "a statement ran too long and the server cancelled it",
            "A retry would run the same statement as long again: find what slowed it",
        )  # fmt: skip
    if state == "25P03" or "idle-in-transaction timeout" in text:
        return _server_timeout(
            IdleInTransactionTimeout, "idle_in_transaction_session_timeout",
            "the server closed a session that sat idle inside a transaction (a stalled worker)", "The task's retry starts over",
        )  # fmt: skip
    if state is None and "timeout expired" in text:
        variable, default = CLIENT_SETTINGS["connect_timeout"]
        value = _value(variable, default)
        return ConnectTimeout(
            f"connect_timeout ({value} s) fired: the warehouse did not accept a connection in time ({text.strip()}). "
            f"The task's retry tries again; to wait longer, raise {variable} (now {value})"
        )
    return None


@contextmanager
def named_timeouts() -> Iterator[None]:
    """Raise a DatabaseTimeout naming the timeout for a driver error that is one; other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        timeout = timeout_error(error)
        if timeout is None:
            raise
        raise timeout from error
