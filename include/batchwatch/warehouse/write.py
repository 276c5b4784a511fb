"""Writing: one interval's predictions, rejects and daily summary replaced in one transaction, so a failure leaves it as it was.

PostgreSQL takes binary COPY into an unindexed stage table swapped in as the day's partition;
SQLite takes plain DB-API batches.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from batchwatch.serialization import to_json
from batchwatch.spec import quote
from batchwatch.warehouse import schema
from batchwatch.warehouse.engine import NULL, copy_unescape, driver_transaction, is_postgres, lock_key, sqlite_value, wait_for_unit
from batchwatch.warehouse.partitions import detach_partition

PREDICTION_COLUMNS = tuple(column.name for column in schema.predictions.columns)

# The advisory lock every detach and attach of a `predictions` partition takes (the swap, retention): one at a time.
SWAP_LOCK = lock_key("swap predictions partition")


REJECT_COLUMNS = tuple(column.name for column in schema.rejected_rows.columns)


PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


BINARY_TRAILER = struct.pack(">h", -1)




def _field(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def encode_prediction_rows(
    model_name: str,
    version: int,
    role: str,
    entity_ids: np.ndarray,
    ds: date,
    scores: np.ndarray,
    labels: np.ndarray,
    run_id: str,
    scored_at: datetime,
    arm: str | None = None,
) -> bytes:
    """Rows of `predictions` in PostgreSQL's binary COPY format, built with numpy, not row by row.

    Every field but the entity id has a fixed width, so rows whose ids have the same length form
    one numpy structured array; a chunk is a handful of such arrays (row order does not matter).
    """
    head = struct.pack(">h", len(PREDICTION_COLUMNS)) + _field(model_name.encode()) + _field(struct.pack(">i", version)) + _field(role.encode())
    middle = _field(struct.pack(">i", (ds - PG_EPOCH.date()).days))
    tail = (
        _field(run_id.encode()) + _field(struct.pack(">q", (scored_at - PG_EPOCH) // timedelta(microseconds=1)))
        + (struct.pack(">i", -1) if arm is None else _field(arm.encode()))
    )
    lengths = np.char.str_len(entity_ids)
    blocks = []
    for length in np.unique(lengths):
        rows = lengths == length
        block = np.empty(
            int(rows.sum()),
            dtype=[
                ("head", f"V{len(head)}"), ("id_len", ">i4"), ("id", f"S{length}"), ("middle", f"V{len(middle)}"),
                ("score_len", ">i4"), ("score", ">f8"), ("label_len", ">i4"), ("label", ">i2"), ("tail", f"V{len(tail)}"),
            ],
        )  # fmt: skip
        block["head"], block["middle"], block["tail"] = np.void(head), np.void(middle), np.void(tail)
        block["id_len"], block["id"] = length, entity_ids[rows]
        block["score_len"], block["score"] = 8, scores[rows]
        block["label_len"], block["label"] = 2, labels[rows]
        blocks.append(block.tobytes())
    return b"".join(blocks)


def _table_definition(connection: Any, table: str) -> str:
    """Columns and checks of `table` (`predictions`), read from the catalog.

    Not `CREATE TABLE … (LIKE predictions)`: that holds a lock on `predictions` for the whole run,
    and two runs swapping partitions would deadlock. Reading the catalog takes no such lock.
    """
    columns, checks = connection.execute(
        """
        SELECT
            (SELECT string_agg(format('%%I %%s%%s', attname, format_type(atttypid, atttypmod),
                                      CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY attnum)
             FROM pg_attribute WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped),
            (SELECT string_agg(format('CONSTRAINT %%I %%s', conname, pg_get_constraintdef(oid)), ', ' ORDER BY conname)
             FROM pg_constraint WHERE conrelid = %(table)s::regclass AND contype = 'c')
        """,
        {"table": table},
    ).fetchone()
    return f"{columns}, {checks}" if checks else columns


def _predictions_owner(connection: Any) -> str:
    return connection.execute("SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class WHERE oid = 'predictions'::regclass").fetchone()[0]


# Score quantiles kept per day and role in daily_scoring (score_p05 ... score_p95).
SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SUMMARY_COLUMNS = ", ".join(f"score_p{round(q * 100):02d}" for q in SUMMARY_QUANTILES)


def daily_scoring_statements(postgres: bool, where: str) -> list[str]:
    """SQL that fills daily_scoring for the (model, ds) pairs `where` selects, from the stored rows.

    Shared by the nightly writer (one day, inside its transaction) and migration 0005's backfill.
    Quantiles are exact, interpolated linearly as numpy's default: percentile_cont on PostgreSQL,
    the two ranked neighbours of each position on SQLite. A day with rejects but no predictions
    keeps one 'champion' row with rows_scored 0, so the page still shows its rejects.
    """
    if postgres:
        quantiles = ", ".join(f"q[{i}]" for i in range(1, len(SUMMARY_QUANTILES) + 1))
        array = ", ".join(map(str, SUMMARY_QUANTILES))
        scored = (
            f"SELECT model_name, ds, role, model_version, n, positives, {quantiles} FROM ("
            "SELECT model_name, ds, role, MAX(model_version) AS model_version, COUNT(*) AS n, SUM(predicted_label) AS positives,"
            f" percentile_cont(ARRAY[{array}]::double precision[]) WITHIN GROUP (ORDER BY score) AS q"
            f" FROM predictions WHERE {where} GROUP BY model_name, ds, role) grouped"
        )
    else:
        quantiles = ", ".join(
            f"MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END)"
            f" + ((n - 1) * {q} - CAST((n - 1) * {q} AS INTEGER))"
            f" * (COALESCE(MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) + 1 THEN score END),"
            f" MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END))"
            f" - MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END))"
            for q in SUMMARY_QUANTILES
        )
        scored = (
            f"SELECT model_name, ds, role, MAX(model_version), MAX(n), SUM(predicted_label), {quantiles} FROM ("
            "SELECT model_name, ds, role, model_version, score, predicted_label,"
            " ROW_NUMBER() OVER (PARTITION BY model_name, ds, role ORDER BY score) - 1 AS i,"
            f" COUNT(*) OVER (PARTITION BY model_name, ds, role) AS n FROM predictions WHERE {where}) ranked"
            " GROUP BY model_name, ds, role"
        )
    return [
        f"INSERT INTO daily_scoring (model_name, ds, role, model_version, rows_scored, positives, {SUMMARY_COLUMNS}) {scored}",
        "UPDATE daily_scoring SET rows_rejected = (SELECT COUNT(*) FROM rejected_rows r"
        f" WHERE r.model_name = daily_scoring.model_name AND r.ds = daily_scoring.ds) WHERE {where}",
        "INSERT INTO daily_scoring (model_name, ds, role, rows_scored, positives, rows_rejected)"
        " SELECT model_name, ds, 'champion', 0, 0, COUNT(*) FROM rejected_rows r"
        f" WHERE {where} AND NOT EXISTS (SELECT 1 FROM daily_scoring d WHERE d.model_name = r.model_name AND d.ds = r.ds)"
        " GROUP BY model_name, ds",
    ]


def partition_name(model_name: str, ds: date) -> str:
    return f"predictions_{model_name}_{ds:%Y%m%d}"


class IntervalWriter:
    """Writes one (model, ds) interval's predictions and rejects inside the transaction that owns it.

    On PostgreSQL predictions stream through one binary COPY into an unindexed stage table, so
    the server stores chunk k while chunk k+1 is being scored; `finish` indexes the stage in one
    sort and swaps it in as the interval's partition. Rejects are spooled to a temp file and
    copied after it. Nothing is visible to readers until the caller commits.
    """

    def __init__(self, connection: Any, postgres: bool, model_name: str, ds: date, run_id: str, written_at: datetime) -> None:
        self._connection = connection
        self._postgres = postgres
        self.model_name, self.ds, self.run_id, self.written_at = model_name, ds, run_id, written_at
        self._copy_context: Any = None
        self._copy: Any = None
        # COPY's text format: a NULL key (\N) and the text \N (escaped as \\N) stay apart, as CSV cannot keep them.
        self._rejects = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="")
        self.stage, self.rejects_table = self._open_stage()

    def _open_stage(self) -> tuple[str, str]:
        """(table the predictions go to, table the rejects go to): an unindexed stage on PostgreSQL, the tables on SQLite."""
        if not self._postgres:
            return "predictions", "rejected_rows"
        stage = f"{partition_name(self.model_name, self.ds)}_next"
        create_stage(self._connection, stage, bounds=(self.model_name, self.ds))
        return stage, "rejected_rows"

    def write_predictions(
        self, version: int, role: str, entity_ids: Sequence[str], scores: np.ndarray, labels: np.ndarray, arm: str | None = None
    ) -> None:
        """Rows of one model, all in canary arm `arm` (None: no canary that day)."""
        if not self._postgres:
            self._connection.executemany(
                _sqlite_insert(self.stage, PREDICTION_COLUMNS),
                [
                    (self.model_name, version, role, entity, self.ds.isoformat(), score, label, self.run_id, sqlite_value(self.written_at), arm)
                    for entity, score, label in zip(entity_ids, scores.tolist(), labels.tolist(), strict=True)
                ],
            )
            return
        if self._copy is None:
            from psycopg.copy import QueuedLibpqWriter

            cursor = self._connection.cursor()
            # FREEZE: the stage was created in this transaction, so its rows can be written frozen and all-visible; the first
            # reads of a new day (the publish's, the analysts') then set no hint bits, which would rewrite every page once.
            statement = f"COPY {self.stage} ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN (FORMAT BINARY, FREEZE)"
            self._copy_context = cursor.copy(statement, writer=QueuedLibpqWriter(cursor))
            self._copy = self._copy_context.__enter__()
            self._copy.write(BINARY_SIGNATURE)
        self._copy.write(
            encode_prediction_rows(
                self.model_name, version, role, _as_bytes(entity_ids), self.ds, scores, labels, self.run_id, self.written_at, arm
            )
        )

    def write_rejects(self, entity_ids: Sequence[str | None], reasons: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        written_at = self.written_at.isoformat()
        for entity, reason, payload in zip(entity_ids, reasons, payloads, strict=True):
            fields = (self.model_name, self.ds.isoformat(), entity, reason, to_json(payload), self.run_id, written_at)
            self._rejects.write("\t".join(map(_copy_text_field, fields)) + "\n")

    def finish(self) -> None:
        """Close the predictions COPY, write the spooled rejects, swap the stage in and summarise the day; the caller commits."""
        self._close_copy()
        self._write_rejects()
        if self._postgres:
            swap_in(self._connection, self.model_name, self.ds, self.stage)
        write_daily_scoring(self._connection, self._postgres, self.model_name, self.ds, shards=1)

    def _close_copy(self) -> None:
        if self._copy is not None:
            self._copy.write(BINARY_TRAILER)
            self._copy = None
            self._copy_context.__exit__(None, None, None)

    def _write_rejects(self) -> None:
        self._rejects.seek(0)
        if self._postgres:
            statement = f"COPY {self.rejects_table} ({', '.join(REJECT_COLUMNS)}) FROM STDIN (FORMAT text)"
            with self._connection.cursor().copy(statement) as copy:
                while block := self._rejects.read(1 << 20):
                    copy.write(block)
        else:
            rows = ([None if field == NULL else copy_unescape(field) for field in line.rstrip("\n").split("\t")] for line in self._rejects)
            self._connection.executemany(
                _sqlite_insert(self.rejects_table, REJECT_COLUMNS),
                [
                    (model, ds, entity, reason, payload, run_id, sqlite_value(datetime.fromisoformat(at)))
                    for model, ds, entity, reason, payload, run_id, at in rows
                ],
            )
        self._rejects.close()

    def abort(self, error: BaseException) -> None:
        if self._copy is not None:
            self._copy_context.__exit__(type(error), error, error.__traceback__)
            self._copy = None
        self._rejects.close()


def create_stage(
    connection: Any, stage: str, shaped_as: str = "predictions", bounds: tuple[str, date] | None = None, partitioned_by: str | None = None
) -> None:
    """An empty, unindexed table shaped as `shaped_as`, owned by the owner of `predictions` so that a later swap may attach and drop it.

    `bounds` (model, day): a check that every row is of that model and day, which proves the partition bound to
    ATTACH. Made on the empty table, it costs a comparison per row written instead of a scan of the day at the swap.
    `partitioned_by`: the table is partitioned so (a sharded day, whose shards are attached as its partitions).
    """
    from psycopg import sql

    partitioning = f" PARTITION BY {partitioned_by}" if partitioned_by else ""
    connection.execute(f"CREATE TABLE {stage} ({_table_definition(connection, shaped_as)}){partitioning}")
    if bounds is not None:
        model_name, ds = bounds
        connection.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT stage_bounds CHECK (model_name = {} AND ds >= {} AND ds < {})").format(
                sql.Identifier(stage), sql.Literal(model_name), sql.Literal(ds), sql.Literal(ds + timedelta(days=1))
            )
        )
    # Only the owner of `predictions` may attach the stage and, the next time the day is scored, detach
    # and drop it: with the roles of migration 0010 that is batchwatch_pipeline, not this login user.
    connection.execute(f"ALTER TABLE {stage} OWNER TO {_predictions_owner(connection)}")


def add_unique_key(connection: Any, stage: str) -> None:
    """The parent's unique constraint on a stage, built with one sort; ATTACH adopts it as it is."""
    connection.execute("SET LOCAL maintenance_work_mem = '256MB'")
    connection.execute(f"ALTER TABLE {stage} ADD CONSTRAINT {stage}_key UNIQUE (model_name, entity_id, ds, model_version)")


def swap_in(connection: Any, model_name: str, ds: date, stage: str, *, keyed: bool = False) -> None:
    """Make `stage` the (model_name, ds) partition in place of the old one, inside the caller's transaction.

    The stage was made with its bounds (create_stage), so ATTACH scans no row. `keyed`: the stage has its
    unique key already (add_unique_key); otherwise it is built here.
    """
    from psycopg import sql

    partition = partition_name(model_name, ds)
    day, next_day = sql.Literal(ds), sql.Literal(ds + timedelta(days=1))
    if not keyed:
        add_unique_key(connection, stage)
    # Swaps of all models and days go one at a time, and each takes its locks on `predictions`
    # only now, so concurrent runs cannot deadlock. Detaching takes an exclusive lock on
    # `predictions`: it is tried in short attempts (partitions.detach_partition), so readers of
    # other days never queue behind a swap that waits, up to the session's lock_timeout.
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (SWAP_LOCK,))
    if connection.execute("SELECT to_regclass(%s) IS NOT NULL", (partition,)).fetchone()[0]:
        detach_partition(connection, partition)
        connection.execute(f"DROP TABLE {partition}")
    connection.execute(
        sql.SQL("ALTER TABLE predictions ATTACH PARTITION {} FOR VALUES FROM ({}, {}) TO ({}, {})").format(
            sql.Identifier(stage), sql.Literal(model_name), day, sql.Literal(model_name), next_day
        )
    )
    connection.execute(f"ALTER TABLE {stage} DROP CONSTRAINT IF EXISTS stage_bounds")
    connection.execute(f"ALTER TABLE {stage} RENAME CONSTRAINT {stage}_key TO {partition}_key")
    connection.execute(f"ALTER TABLE {stage} RENAME TO {partition}")


def write_daily_scoring(connection: Any, postgres: bool, model_name: str, ds: date, *, shards: int) -> None:
    """The day's summary for the web page, from the rows just written, committed with them; `shards` scored them."""
    if postgres:
        where, params = "model_name = %(m)s AND ds = %(ds)s", {"m": model_name, "ds": ds, "shards": shards}
        set_shards = "UPDATE daily_scoring SET shards = %(shards)s WHERE "
    else:
        where, params = "model_name = :m AND ds = :ds", {"m": model_name, "ds": ds.isoformat(), "shards": shards}
        set_shards = "UPDATE daily_scoring SET shards = :shards WHERE "
    for statement in [*daily_scoring_statements(postgres, where), set_shards + where]:
        connection.execute(statement, params)

def _copy_text_field(value: str | None) -> str:
    """A field of COPY's text format: NULL as \\N; a text's backslashes, tabs and line breaks escaped."""
    if value is None:
        return NULL
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _sqlite_insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})"


def _as_bytes(values: Sequence[str]) -> np.ndarray:
    """Strings as a numpy bytes array: vectorised for ASCII keys, encoded one by one otherwise."""
    try:
        return np.asarray(values, dtype=bytes)
    except UnicodeEncodeError:
        return np.array([value.encode() for value in values], dtype=bytes)


@contextmanager
def replace_interval(engine: Engine, model_name: str, ds: date, run_id: str, written_at: datetime) -> Iterator[IntervalWriter]:
    """Open one transaction that owns (model_name, ds): lock it, clear it, let the caller refill it.

    Concurrent runs of the same interval wait on an advisory lock (PostgreSQL) or the database
    write lock (SQLite). Readers see the old rows until commit; an exception rolls everything back.
    """
    postgres = is_postgres(engine)
    with driver_transaction(engine) as connection:
        if postgres:
            wait_for_unit(connection.execute, lock_key("predict", model_name, ds))
            for table in ("rejected_rows", "daily_scoring"):
                connection.execute(f"DELETE FROM {table} WHERE model_name = %s AND ds = %s", (model_name, ds))
        else:
            connection.execute("BEGIN IMMEDIATE")
            for table in ("predictions", "rejected_rows", "daily_scoring"):
                connection.execute(f"DELETE FROM {table} WHERE model_name = ? AND ds = ?", (model_name, ds.isoformat()))
        with finished(IntervalWriter(connection, postgres, model_name, ds, run_id, written_at)) as writer:
            yield writer


@contextmanager
def finished(writer: IntervalWriter) -> Iterator[IntervalWriter]:
    """The writer for the caller's rows, finished when they are all written, aborted (its COPY closed) on an error."""
    try:
        yield writer
        writer.finish()
    except BaseException as error:
        writer.abort(error)
        raise


def load_frame(engine: Engine, table: str, frame: pd.DataFrame, chunk_size: int = 200_000) -> int:
    """Append a frame to a table (simulated source rows, outcomes); CSV COPY on PostgreSQL."""
    if frame.empty:
        return 0
    frame = frame.copy()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            # Naive UTC text: a tz-aware column halves to_csv's speed.
            frame[name] = frame[name].dt.tz_convert("UTC").dt.tz_localize(None)
    with driver_transaction(engine) as connection:
        if is_postgres(engine):
            cursor = connection.cursor()
            cursor.execute("SET LOCAL TIME ZONE 'UTC'")
            columns = ", ".join(map(quote, frame.columns))
            for start in range(0, len(frame), chunk_size):
                buffer = frame.iloc[start : start + chunk_size].to_csv(index=False, header=False, na_rep=NULL)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, NULL '{NULL}')") as copy:
                    copy.write(buffer)
        else:
            records = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
            connection.executemany(_sqlite_insert(table, frame.columns), (tuple(map(sqlite_value, row)) for row in records))
    return len(frame)
