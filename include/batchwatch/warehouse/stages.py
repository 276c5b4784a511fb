"""Shard stages: each shard of a sharded nightly run commits its rows to stage tables of its own; one publish makes them the day.

A shard's stage tables and its row in `scoring_stages` are committed together, so a retried shard replaces only its
own stage and the others stay. The publish assembles every shard's stage into the day's partition in one transaction,
under the same lock and swap as an unsharded run: until it commits readers see the day as it was, and a failed
publish leaves the day (and the stages, for a retry) as they were.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any

from batchwatch.errors import PermanentError
from batchwatch.hashing import BUCKETS
from batchwatch.serialization import to_json
from batchwatch.warehouse.engine import driver_transaction, is_postgres, lock_key, sqlite_value, wait_for_unit
from batchwatch.warehouse.read import bucket_sql
from batchwatch.warehouse.write import (
    PREDICTION_COLUMNS,
    REJECT_COLUMNS,
    IntervalWriter,
    add_unique_key,
    create_stage,
    finished,
    partition_name,
    swap_in,
    write_daily_scoring,
)

# A run that staged shards and never published them within this long was abandoned: the next publish drops its stages.
ABANDONED_AFTER = timedelta(days=1)
# PostgreSQL: the empty hash-partitioned table of migration 0011 through which a shard asks for its keys.
SHARD_HASH_TABLE = "scoring_shard_hash"


def shard_sql(engine: Any, key_sql: str, shard: int, shards: int, salt: str) -> str:
    """SQL keeping the rows of shard `shard` of `shards` by their key (any type; as text, the form entity_id takes).

    PostgreSQL: the key's remainder under PostgreSQL's own hash partitioning, so that the shard is, row for row, the
    hash partition the publish attaches it as. SQLite: a range of the key's buckets under `salt`. A NULL key is in one shard.
    """
    if is_postgres(engine):
        return f"satisfies_hash_partition('{SHARD_HASH_TABLE}'::regclass, {shards}, {shard}, CAST({key_sql} AS TEXT))"
    bucket = bucket_sql(engine, f"COALESCE(CAST({key_sql} AS TEXT), '')", salt)
    return f"{bucket} >= {shard * BUCKETS // shards} AND {bucket} < {(shard + 1) * BUCKETS // shards}"


class ShardsMissing(PermanentError, RuntimeError):
    """The publish found fewer shard stages than the run has shards: they have to be scored again first."""


def stage_names(model_name: str, ds: date, run_id: str, shard: int) -> tuple[str, str]:
    """(predictions stage, rejects stage) of one shard of one run: the same names on every try of that shard."""
    digest = hashlib.sha256(f"{model_name}|{ds.isoformat()}|{run_id}|{shard}".encode()).hexdigest()[:20]
    return f"stage_{digest}_p", f"stage_{digest}_r"


class ShardWriter(IntervalWriter):
    """Writes one shard's predictions and rejects into its stage tables; `finish` keys the predictions stage, swaps nothing."""

    def __init__(self, connection: Any, postgres: bool, model_name: str, ds: date, run_id: str, written_at: datetime, shard: int) -> None:
        self.shard = shard
        self.summary: dict[str, Any] | None = None
        super().__init__(connection, postgres, model_name, ds, run_id, written_at)

    def _open_stage(self) -> tuple[str, str]:
        predictions, rejects = stage_names(self.model_name, self.ds, self.run_id, self.shard)
        _drop(self._connection, (predictions, rejects))
        if self._postgres:
            create_stage(self._connection, predictions, bounds=(self.model_name, self.ds))
            create_stage(self._connection, rejects, shaped_as="rejected_rows")
        else:
            self._connection.execute(f"CREATE TABLE {predictions} AS SELECT * FROM predictions WHERE 0")
            # The unique key checks each row as it comes, as `predictions` does for an unsharded run.
            self._connection.execute(f"CREATE UNIQUE INDEX {predictions}_key ON {predictions} (model_name, entity_id, ds, model_version)")
            self._connection.execute(f"CREATE TABLE {rejects} AS SELECT * FROM rejected_rows WHERE 0")
        return predictions, rejects

    def finish(self) -> None:
        """Close the COPY and write the rejects; on PostgreSQL build the unique key here, in parallel with the other shards."""
        self._close_copy()
        self._write_rejects()
        if self._postgres:
            add_unique_key(self._connection, self.stage)
        if self.summary is None:
            raise RuntimeError("a shard's summary must be set before its stage is committed")
        _execute(
            self._connection,
            self._postgres,
            "INSERT INTO scoring_stages (model_name, ds, run_id, shard, shards, predictions_stage, rejects_stage, summary, staged_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.model_name, self.ds, self.run_id, self.shard, self.summary["shards"], self.stage, self.rejects_table,
                to_json(self.summary), self.written_at,
            ),
        )  # fmt: skip


@contextmanager
def stage_shard(engine: Any, model_name: str, ds: date, run_id: str, shard: int, written_at: datetime) -> Iterator[ShardWriter]:
    """One transaction that replaces this shard's stage of this run: another try of the same shard waits for it."""
    postgres = is_postgres(engine)
    with driver_transaction(engine) as connection:
        if postgres:
            wait_for_unit(connection.execute, lock_key("predict shard", model_name, ds, run_id, shard))
        else:
            connection.execute("BEGIN IMMEDIATE")
        _execute(
            connection, postgres, "DELETE FROM scoring_stages WHERE model_name = ? AND ds = ? AND run_id = ? AND shard = ?",
            (model_name, ds, run_id, shard),
        )
        with finished(ShardWriter(connection, postgres, model_name, ds, run_id, written_at, shard)) as writer:
            yield writer


def publish_stages(
    engine: Any, model_name: str, ds: date, run_id: str, shards: int, check: Callable[[list[dict[str, Any]]], None]
) -> list[dict[str, Any]]:
    """Make the run's shard stages the (model_name, ds) interval in one transaction; returns the shards' summaries.

    `check` sees every summary before anything is replaced and may raise to leave the day as it was.
    """
    postgres = is_postgres(engine)
    with driver_transaction(engine) as connection:
        if postgres:
            wait_for_unit(connection.execute, lock_key("predict", model_name, ds))
        else:
            connection.execute("BEGIN IMMEDIATE")
        staged = _execute(
            connection, postgres,
            "SELECT shard, predictions_stage, rejects_stage, summary, published_at FROM scoring_stages "
            "WHERE model_name = ? AND ds = ? AND run_id = ? AND shards = ? ORDER BY shard",
            (model_name, ds, run_id, shards),
        ).fetchall()  # fmt: skip
        summaries = [row[3] if isinstance(row[3], dict) else json.loads(row[3]) for row in staged]
        if len(staged) == shards and all(row[4] is not None for row in staged):
            # This run published already, and its task was lost after the commit (a worker gone): the retry has nothing to do.
            return summaries
        missing = sorted(set(range(shards)) - {row[0] for row in staged if row[4] is None and _exists(connection, postgres, row[1])})
        if missing:
            raise ShardsMissing(
                f"{model_name} {ds}: run {run_id} has no stage for shard(s) {missing} of {shards}; nothing was published. "
                "Clear those score_shard tasks (or the whole run) so they score again, then publish"
            )
        check(summaries)
        predictions_stages, rejects_stages = [row[1] for row in staged], [row[2] for row in staged]
        tables = ("rejected_rows", "daily_scoring") if postgres else ("predictions", "rejected_rows", "daily_scoring")
        for table in tables:
            _execute(connection, postgres, f"DELETE FROM {table} WHERE model_name = ? AND ds = ?", (model_name, ds))
        _assemble(connection, postgres, model_name, ds, predictions_stages)
        columns = ", ".join(REJECT_COLUMNS)
        connection.execute(
            f"INSERT INTO rejected_rows ({columns}) " + " UNION ALL ".join(f"SELECT {columns} FROM {stage}" for stage in rejects_stages)
        )
        write_daily_scoring(connection, postgres, model_name, ds, shards=shards)
        consumed = rejects_stages + ([] if postgres else predictions_stages)
        _drop(connection, consumed)
        # Kept a day, marked: a retry of this publish (its task lost after the commit) finds them and returns at once.
        _execute(
            connection, postgres, "UPDATE scoring_stages SET published_at = ? WHERE model_name = ? AND ds = ? AND run_id = ?",
            (datetime.now(timezone.utc), model_name, ds, run_id),
        )
        _drop_abandoned(connection, postgres)
    return summaries


def _assemble(connection: Any, postgres: bool, model_name: str, ds: date, stages: list[str]) -> None:
    """The shards' predictions into the day, moving no row on PostgreSQL.

    One shard's keyed stage is swapped in as it is. Several become the hash partitions of a day table partitioned by
    `entity_id` (each shard holds exactly its remainder: SHARD_HASH_TABLE), whose unique key adopts the shards' own,
    built in parallel by the shard tasks; that day table is swapped in. On SQLite the rows are copied.
    """
    if not postgres:
        columns = ", ".join(PREDICTION_COLUMNS)
        connection.execute(f"INSERT INTO predictions ({columns}) " + " UNION ALL ".join(f"SELECT {columns} FROM {stage}" for stage in stages))
        return
    if len(stages) == 1:
        swap_in(connection, model_name, ds, stages[0], keyed=True)
        return
    partition = partition_name(model_name, ds)
    day = f"{partition}_next"
    create_stage(connection, day, partitioned_by="HASH (entity_id)")
    for shard, stage in enumerate(stages):
        # Checks each row's remainder (a scan of the shard, no write), the guard that the shard scored only its entities.
        connection.execute(f"ALTER TABLE {day} ATTACH PARTITION {stage} FOR VALUES WITH (MODULUS {len(stages)}, REMAINDER {shard})")
    add_unique_key(connection, day)
    swap_in(connection, model_name, ds, day, keyed=True)
    for shard, stage in enumerate(stages):  # the day's shards, named for it: predictions_<model>_<yyyymmdd>_s<k>
        connection.execute(f"ALTER TABLE {stage} DROP CONSTRAINT stage_bounds")
        connection.execute(f"ALTER TABLE {stage} RENAME CONSTRAINT {stage}_key TO {partition}_s{shard}_key")
        connection.execute(f"ALTER TABLE {stage} RENAME TO {partition}_s{shard}")


def _exists(connection: Any, postgres: bool, table: str) -> bool:
    if postgres:
        return connection.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    return connection.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0] > 0


def _drop_abandoned(connection: Any, postgres: bool) -> None:
    """Stages staged over a day ago, of any model and day: the tables of runs that never published, and every row."""
    cutoff = datetime.now(timezone.utc) - ABANDONED_AFTER
    abandoned = _execute(
        connection, postgres, "SELECT predictions_stage, rejects_stage FROM scoring_stages WHERE staged_at < ?", (cutoff,)
    ).fetchall()
    if abandoned:
        _drop(connection, [name for row in abandoned for name in row])
        _execute(connection, postgres, "DELETE FROM scoring_stages WHERE staged_at < ?", (cutoff,))


def _drop(connection: Any, tables: list[str] | tuple[str, ...]) -> None:
    for table in tables:
        connection.execute(f"DROP TABLE IF EXISTS {table}")


def _execute(connection: Any, postgres: bool, statement: str, params: tuple) -> Any:
    """One statement with `?` placeholders on either driver (psycopg takes %s)."""
    if postgres:
        return connection.execute(statement.replace("?", "%s"), params)
    return connection.execute(statement, tuple(sqlite_value(value) for value in params))

