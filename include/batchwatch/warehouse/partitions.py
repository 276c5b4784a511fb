"""Detaching a day's partition of `predictions` without stalling the readers of the other days.

DETACH PARTITION takes an ACCESS EXCLUSIVE lock on `predictions`. PostgreSQL grants locks in
order: while the detach waits for a long reader (whose ACCESS SHARE on the parent lasts until its
transaction ends), every later query of `predictions`, whatever day it reads, queues behind the
detach. Issue 14 measured it: a 40 s reader made the swap wait 23 s, and readers of other days with it.

So the detach asks for the lock for a short attempt, steps out of the queue when the lock is not
free (readers queued behind it go on), and asks again after a jittered pause, until the session's
lock_timeout (BATCHWATCH_PG_LOCK_TIMEOUT) is spent. A reader of another day waits at most one
attempt. The cost: a detach can starve behind readers that keep overlapping, and then fails at
lock_timeout as before, a transient error the task's retry handles.

Not DETACH … CONCURRENTLY: PostgreSQL refuses it inside a transaction block ("ALTER TABLE ... DETACH
CONCURRENTLY cannot run inside a transaction block"), and it commits the detach on its own, so the
day would have no rows until its replacement is attached in a later transaction. The swap stays one
transaction: readers see the old rows until it commits.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

from batchwatch.warehouse.timeouts import timeout_error

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

ATTEMPT_TIMEOUT = 0.15  # seconds: the longest one attempt holds up the queries behind it
FIRST_PAUSE = 0.1  # seconds between attempts, doubled after each (jittered) up to LONGEST_PAUSE
LONGEST_PAUSE = 1.0


def detach_partition(
    connection: psycopg.Connection[Any], partition: str, *, attempt_timeout: float = ATTEMPT_TIMEOUT, budget: float | None = None
) -> None:
    """Detach `partition` from `predictions` inside the caller's transaction, taking the parent's lock politely.

    Each attempt runs in a savepoint with lock_timeout `attempt_timeout`; a failed one is rolled back
    to it, so the transaction goes on as it was. `budget` (seconds, all attempts together) defaults to
    the session's lock_timeout, none if that is 0. Past it: the LockTimeout that lock_timeout raises
    everywhere else, the transaction still usable (the caller rolls back). The session's lock_timeout
    holds again after the call.
    """
    from psycopg import errors, sql

    session_value, session_ms = connection.execute(
        "SELECT current_setting('lock_timeout'), setting::bigint FROM pg_settings WHERE name = 'lock_timeout'"
    ).fetchone()
    if budget is None:
        budget = session_ms / 1000 if session_ms else math.inf
    deadline = time.monotonic() + budget
    statement = sql.SQL("ALTER TABLE predictions DETACH PARTITION {}").format(sql.Identifier(partition))
    pause = FIRST_PAUSE
    while True:
        attempt = min(attempt_timeout, deadline - time.monotonic())
        connection.execute("SAVEPOINT detach_partition")
        try:
            connection.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, round(attempt * 1000))}ms",))
            connection.execute(statement)
        except errors.LockNotAvailable as error:
            connection.execute("ROLLBACK TO SAVEPOINT detach_partition")  # also puts the session's lock_timeout back
            connection.execute("RELEASE SAVEPOINT detach_partition")
            left = deadline - time.monotonic()
            if left <= 0:
                raise timeout_error(error) from error
            nap = min(random.uniform(pause / 2, pause), left)
            log.info(
                "Detaching %s waits for the lock on predictions, held by sessions %s; trying again in %.2f s (%s s of lock_timeout %s left)",
                partition, _holders(connection), nap, "unlimited" if math.isinf(left) else f"{left:.1f}", session_value,
            )  # fmt: skip
            time.sleep(nap)
            pause = min(2 * pause, LONGEST_PAUSE)
            continue
        connection.execute("RELEASE SAVEPOINT detach_partition")
        # SET LOCAL in a released savepoint lasts to the end of the transaction: put the session's value back.
        connection.execute("SELECT set_config('lock_timeout', %s, true)", (session_value,))
        return


def _holders(connection: psycopg.Connection[Any]) -> list[int]:
    """Pids of the other sessions holding a lock on `predictions` (any mode conflicts with the detach's)."""
    return connection.execute(
        "SELECT coalesce(array_agg(DISTINCT pid ORDER BY pid), '{}') FROM pg_locks"
        " WHERE locktype = 'relation' AND granted AND pid <> pg_backend_pid()"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND relation = 'predictions'::regclass"
    ).fetchone()[0]
