"""The warehouse: engines, migrations, streaming reads and atomic interval writes.

PostgreSQL is the production warehouse and takes the fast path: COPY out streamed in fixed-size
chunks, binary COPY in. SQLite is the zero-setup default and takes plain DB-API batches. Both
replace one interval's rows inside one transaction, so a failure leaves the interval as it was.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sqlite3
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.errors import PermanentError
from batchwatch.serialization import to_json
from batchwatch.spec import quote

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

PREDICTION_COLUMNS = ("model_name", "model_version", "role", "entity_id", "ds", "score", "predicted_label", "run_id", "scored_at")
REJECT_COLUMNS = ("model_name", "ds", "entity_id", "reason", "payload", "run_id", "rejected_at")


def make_engine(url: str) -> Engine:
    """An engine for a warehouse URL. PostgreSQL goes through psycopg 3 (binary COPY in);
    `stream_frames` reads through psycopg2, whose COPY out loop runs in C."""
    if url.startswith(("postgres://", "postgresql://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


SAMPLE_BUCKETS = 1 << 20


def _sample_bucket(key: str | None) -> int:
    return zlib.crc32((key or "").encode()) & (SAMPLE_BUCKETS - 1)


def sample_predicate(engine: Engine, key_sql: str, fraction: float) -> str:
    """SQL keeping about `fraction` of rows, chosen by a hash of the key: the same rows on every run."""
    cutoff = int(fraction * SAMPLE_BUCKETS)
    if is_postgres(engine):
        return f"(hashtextextended(CAST({key_sql} AS TEXT), 0) & {SAMPLE_BUCKETS - 1}) < {cutoff}"
    return f"batchwatch_sample_bucket(CAST({key_sql} AS TEXT)) < {cutoff}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("batchwatch_sample_bucket", 1, _sample_bucket, deterministic=True)
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


def lock_unit(connection: Connection, *parts: object) -> None:
    """Serialise the unit of work named by `parts` until the transaction ends.

    PostgreSQL: a transaction-level advisory lock. SQLite has one lock for the whole database: a
    write statement, even one matching no row, takes it now rather than at the first real write,
    so the reads that follow are serialised too (alembic_version is in every migrated warehouse).
    """
    if is_postgres(connection.engine):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(*parts)})
    else:
        connection.execute(sa.text("DELETE FROM alembic_version WHERE 1 = 0"))


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A timestamp as read back: SQLite gives naive UTC (or text), PostgreSQL aware values."""
    moment = pd.Timestamp(value)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


# --- reading ----------------------------------------------------------------------------------


def stream_frames(
    engine: Engine,
    query: str,
    params: dict[str, Any],
    columns: Sequence[str],
    text_columns: Sequence[str],
    chunk_size: int,
    categorical_columns: Sequence[str] = (),
    origin: str = "the query",
) -> Iterator[pd.DataFrame]:
    """Yield the result of `query` as DataFrames of at most `chunk_size` rows, in bounded memory.

    `query` uses `:name` placeholders. Columns in `text_columns` come back as strings; the others
    are parsed as numbers where they are numbers and left as text where they are not, so that
    validation can reject a wrong type row by row instead of the whole batch failing to parse.
    Text columns also in `categorical_columns` come back as pandas categoricals (few distinct
    values: one Python string per category instead of one per row). A query the database refuses
    raises QueryRefused naming `origin`, where the query came from (a spec field, say).
    """
    dtypes = {name: "category" if name in categorical_columns else str for name in text_columns}
    stream = _stream_postgres if is_postgres(engine) else _stream_dbapi
    with refused_queries(origin):
        yield from stream(engine, query, params, columns, dtypes, chunk_size)


class QueryRefused(PermanentError):
    """The database refused a query's text: a syntax error, a table or column it does not have, no permission."""


# SQLite's messages for a query whose text is wrong (it has no SQLSTATE).
_SQLITE_REFUSALS = re.compile(r"near .*: syntax error|incomplete input|no such (table|column|function)|unrecognized token")


def refusal(error: BaseException) -> str | None:
    """The database's message if `error` says the query's text is wrong, which no retry changes; else None.

    PostgreSQL: SQLSTATE class 42 (syntax error or access rule violation: undefined table, column or
    function, wrong types, no permission), from psycopg 3 or psycopg2, bare or wrapped by SQLAlchemy.
    """
    cause = getattr(error, "orig", None) or error
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
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


def _stream_postgres(engine, query, params, columns, dtypes, chunk_size):
    r"""COPY out in a thread (psycopg2 runs the per-row loop in C) into a pipe that pandas parses.

    The server's one-message-per-row COPY protocol costs ~2.5 us a row through psycopg 3's Python
    loop; psycopg2's C loop plus a pipe leaves the main thread free to parse, validate and score.

    COPY's text format, not CSV: in CSV a NULL and a text spelling the NULL marker differ only by
    quotes, which pandas drops before it looks for markers, so the text `\N` read as NULL. In the
    text format a NULL is `\N` and a backslash in a text is escaped (`\\`), so the two never meet;
    texts are unescaped only when the stream had an escape at all.
    """
    import psycopg2

    dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn, options="-c TimeZone=UTC")
    try:
        cursor = connection.cursor()
        statement = cursor.mogrify(f"COPY ({sa.text(query).compile(dialect=engine.dialect).string}) TO STDOUT (FORMAT text)", params).decode()
    except BaseException:
        connection.close()
        raise
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_end, "wb", buffering=1 << 20) as pipe:
                cursor.copy_expert(statement, pipe)
        except BaseException as error:  # handed to the consumer below
            failure.append(error)

    def stop() -> None:
        if producer.is_alive():
            connection.cancel()
        producer.join()
        connection.close()

    producer = threading.Thread(target=produce, name="copy-out", daemon=True)
    producer.start()
    try:
        with _EscapeWatch(io.FileIO(read_end, "rb"), buffer_size=1 << 20) as pipe:
            try:
                chunks = pd.read_csv(
                    pipe,
                    sep="\t",
                    quoting=csv.QUOTE_NONE,  # the text format quotes nothing: a '"' is data
                    names=list(columns),
                    header=None,
                    dtype=dtypes,
                    keep_default_na=False,
                    # NULL comes as \N, and NaN as 'NaN' (only a number column can hold it).
                    na_values={name: [NULL] if name in dtypes else [NULL, "NaN"] for name in columns},
                    skip_blank_lines=len(columns) > 1,  # a row of one empty text is a blank line
                    chunksize=chunk_size,
                    low_memory=False,
                )
                for chunk in chunks:
                    yield _unescaped(chunk) if pipe.escaped else chunk
            except pd.errors.EmptyDataError:
                pass  # no rows: an empty interval, or a failed COPY, raised below
    except Exception as error:
        stop()
        if failure:  # a truncated stream fails to parse: the COPY's own error is the one to report
            raise failure[0] from error
        raise
    finally:
        stop()
    if failure:
        raise failure[0]


class _EscapeWatch(io.BufferedReader):
    r"""The COPY text stream, noting once any of it has held an escape: a backslash not starting a NULL's `\N`.

    An escape is a backslash followed by something other than N (`\\` before a text's N
    included). Looking for one costs a regex scan in C of each block read, ~25 ms for 1M rows; a
    stream without escapes (almost all of them) is then never unescaped.
    """

    escaped = False
    _ends_in_backslash = False  # an escape or a NULL split over two blocks

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if data and not self.escaped:
            self.escaped = bool(_ESCAPE.search(data)) or (self._ends_in_backslash and not data.startswith(b"N"))
            self._ends_in_backslash = data.endswith(b"\\")
        return data


_ESCAPE = re.compile(rb"\\[^N]")


# COPY TO writes these escapes (never octal or hex ones); any other escaped character stands for itself.
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPE_SEQUENCE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE_SEQUENCE.sub(lambda match: _COPY_ESCAPES.get(match.group(1), match.group(1)), text)


def _unescaped(chunk: pd.DataFrame) -> pd.DataFrame:
    """The chunk's texts as stored: every text value (categories, for a categorical) unescaped."""
    for name in chunk.columns:
        column = chunk[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            chunk[name] = column.cat.rename_categories([_unescape(category) for category in column.cat.categories])
        elif pd.api.types.is_string_dtype(column.dtype):  # text, or a number column holding text
            chunk[name] = column.map(_unescape, na_action="ignore")
    return chunk


def _stream_dbapi(engine, query, params, columns, dtypes, chunk_size):
    # SQLite compares timestamps as text: bind them in the stored form, naive UTC.
    params = {name: _sqlite_value(value) if isinstance(value, datetime) else value for name, value in params.items()}
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True).execute(sa.text(query), params)
        positions = {name: columns.index(name) for name in dtypes}
        while rows := result.fetchmany(chunk_size):
            frame = pd.DataFrame.from_records(rows, columns=list(columns))
            # Text from the values as the database gave them: a column of integers with a NULL
            # becomes float in the frame, and 5 must not read as "5.0" in that chunk only.
            for name, dtype in dtypes.items():
                text = [None if row[positions[name]] is None else str(row[positions[name]]) for row in rows]
                frame[name] = pd.Series(text, index=frame.index, dtype=object).astype(dtype)
            yield frame


def read_frame(
    engine: Engine,
    query: str,
    params: dict[str, Any],
    columns: Sequence[str],
    text_columns: Sequence[str],
    categorical_columns: Sequence[str] = (),
    origin: str = "the query",
) -> pd.DataFrame:
    """The whole result as one frame, for data that is bounded by design (training windows)."""
    frames = list(stream_frames(engine, query, params, columns, text_columns, 250_000, categorical_columns, origin))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object if name in text_columns else float) for name in columns})
    return pd.concat(frames, ignore_index=True)


# --- writing ----------------------------------------------------------------------------------




PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
BINARY_TRAILER = struct.pack(">h", -1)
NULL = "\\N"


def _field(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def encode_prediction_rows(
    model_name: str, version: int, role: str, entity_ids: np.ndarray, ds: date, scores: np.ndarray, labels: np.ndarray, run_id: str, scored_at: datetime
) -> bytes:
    """Rows of `predictions` in PostgreSQL's binary COPY format, built with numpy, not row by row.

    Every field but the entity id has a fixed width, so rows whose ids have the same length form
    one numpy structured array; a chunk is a handful of such arrays (row order does not matter).
    """
    head = struct.pack(">h", len(PREDICTION_COLUMNS)) + _field(model_name.encode()) + _field(struct.pack(">i", version)) + _field(role.encode())
    middle = _field(struct.pack(">i", (ds - PG_EPOCH.date()).days))
    tail = _field(run_id.encode()) + _field(struct.pack(">q", (scored_at - PG_EPOCH) // timedelta(microseconds=1)))
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


def _predictions_definition(connection: Any) -> str:
    """Columns and checks of `predictions`, read from the catalog.

    Not `CREATE TABLE … (LIKE predictions)`: that holds a lock on `predictions` for the whole run,
    and two runs swapping partitions would deadlock. Reading the catalog takes no such lock.
    """
    columns, checks = connection.execute(
        """
        SELECT
            (SELECT string_agg(format('%I %s%s', attname, format_type(atttypid, atttypmod),
                                      CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY attnum)
             FROM pg_attribute WHERE attrelid = 'predictions'::regclass AND attnum > 0 AND NOT attisdropped),
            (SELECT string_agg(format('CONSTRAINT %I %s', conname, pg_get_constraintdef(oid)), ', ' ORDER BY conname)
             FROM pg_constraint WHERE conrelid = 'predictions'::regclass AND contype = 'c')
        """
    ).fetchone()
    return f"{columns}, {checks}" if checks else columns


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
        if postgres:
            self.partition = partition_name(model_name, ds)
            self.stage = f"{self.partition}_next"
            connection.execute(f"CREATE TABLE {self.stage} ({_predictions_definition(connection)})")

    def write_predictions(self, version: int, role: str, entity_ids: Sequence[str], scores: np.ndarray, labels: np.ndarray) -> None:
        if not self._postgres:
            self._connection.executemany(
                _sqlite_insert("predictions", PREDICTION_COLUMNS),
                [
                    (self.model_name, version, role, entity, self.ds.isoformat(), score, label, self.run_id, _sqlite_value(self.written_at))
                    for entity, score, label in zip(entity_ids, scores.tolist(), labels.tolist())
                ],
            )
            return
        if self._copy is None:
            from psycopg.copy import QueuedLibpqWriter

            cursor = self._connection.cursor()
            statement = f"COPY {self.stage} ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            self._copy_context = cursor.copy(statement, writer=QueuedLibpqWriter(cursor))
            self._copy = self._copy_context.__enter__()
            self._copy.write(BINARY_SIGNATURE)
        self._copy.write(
            encode_prediction_rows(self.model_name, version, role, _as_bytes(entity_ids), self.ds, scores, labels, self.run_id, self.written_at)
        )

    def write_rejects(self, entity_ids: Sequence[str | None], reasons: Sequence[str], payloads: Sequence[dict[str, Any]]) -> None:
        written_at = self.written_at.isoformat()
        for entity, reason, payload in zip(entity_ids, reasons, payloads):
            fields = (self.model_name, self.ds.isoformat(), entity, reason, to_json(payload), self.run_id, written_at)
            self._rejects.write("\t".join(map(_copy_text_field, fields)) + "\n")

    def finish(self) -> None:
        """Close the predictions COPY and write the spooled rejects; the caller commits."""
        if self._copy is not None:
            self._copy.write(BINARY_TRAILER)
            self._copy = None
            self._copy_context.__exit__(None, None, None)
        self._rejects.seek(0)
        if self._postgres:
            statement = f"COPY rejected_rows ({', '.join(REJECT_COLUMNS)}) FROM STDIN (FORMAT text)"
            with self._connection.cursor().copy(statement) as copy:
                while block := self._rejects.read(1 << 20):
                    copy.write(block)
            self._swap_partition()
        else:
            rows = ([None if field == NULL else _unescape(field) for field in line.rstrip("\n").split("\t")] for line in self._rejects)
            self._connection.executemany(
                _sqlite_insert("rejected_rows", REJECT_COLUMNS),
                [(model, ds, entity, reason, payload, run_id, _sqlite_value(datetime.fromisoformat(at))) for model, ds, entity, reason, payload, run_id, at in rows],
            )
        self._rejects.close()

    def _swap_partition(self) -> None:
        """Index the stage with one sort, then make it the interval's partition in place of the old one."""
        from psycopg import sql

        connection, stage, partition = self._connection, self.stage, self.partition
        day, next_day = sql.Literal(self.ds), sql.Literal(self.ds + timedelta(days=1))
        connection.execute("SET LOCAL maintenance_work_mem = '256MB'")
        # The parent's unique constraint, built here with one sort; ATTACH adopts it as it is.
        connection.execute(f"ALTER TABLE {stage} ADD CONSTRAINT {stage}_key UNIQUE (model_name, entity_id, ds, model_version)")
        # Proves the partition bound, so ATTACH does not scan the rows to check it.
        connection.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT stage_bounds CHECK (model_name = {} AND ds >= {} AND ds < {})").format(
                sql.Identifier(stage), sql.Literal(self.model_name), day, next_day
            )
        )
        # Swaps of all models and days go one at a time, and each takes its locks on `predictions`
        # only now, so concurrent runs cannot deadlock. Detaching takes an exclusive lock on
        # `predictions`: wait for running readers, not forever.
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("swap predictions partition"),))
        connection.execute("SET LOCAL lock_timeout = '5min'")
        if connection.execute("SELECT to_regclass(%s) IS NOT NULL", (partition,)).fetchone()[0]:
            connection.execute(f"ALTER TABLE predictions DETACH PARTITION {partition}")
            connection.execute(f"DROP TABLE {partition}")
        connection.execute(
            sql.SQL("ALTER TABLE predictions ATTACH PARTITION {} FOR VALUES FROM ({}, {}) TO ({}, {})").format(
                sql.Identifier(stage), sql.Literal(self.model_name), day, sql.Literal(self.model_name), next_day
            )
        )
        connection.execute(f"ALTER TABLE {stage} DROP CONSTRAINT stage_bounds")
        connection.execute(f"ALTER TABLE {stage} RENAME CONSTRAINT {stage}_key TO {partition}_key")
        connection.execute(f"ALTER TABLE {stage} RENAME TO {partition}")

    def abort(self, error: BaseException) -> None:
        if self._copy is not None:
            self._copy_context.__exit__(type(error), error, error.__traceback__)
            self._copy = None
        self._rejects.close()


def _copy_text_field(value: str | None) -> str:
    """A field of COPY's text format: NULL as \\N; a text's backslashes, tabs and line breaks escaped."""
    if value is None:
        return NULL
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _sqlite_insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})"


@contextmanager
def _driver_transaction(engine: Engine) -> Iterator[Any]:
    """The DB-API connection under one transaction: committed on success, rolled back on any error."""
    raw = engine.raw_connection()
    try:
        yield raw.driver_connection
        raw.driver_connection.commit()
    except BaseException:
        raw.driver_connection.rollback()
        raise
    finally:
        raw.close()


def _sqlite_value(value: Any) -> Any:
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
    with _driver_transaction(engine) as connection:
        if postgres:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("predict", model_name, ds),))
            connection.execute("DELETE FROM rejected_rows WHERE model_name = %s AND ds = %s", (model_name, ds))
        else:
            connection.execute("BEGIN IMMEDIATE")
            for table in ("predictions", "rejected_rows"):
                connection.execute(f"DELETE FROM {table} WHERE model_name = ? AND ds = ?", (model_name, ds.isoformat()))
        writer = IntervalWriter(connection, postgres, model_name, ds, run_id, written_at)
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
    with _driver_transaction(engine) as connection:
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
            connection.executemany(_sqlite_insert(table, frame.columns), (tuple(map(_sqlite_value, row)) for row in records))
    return len(frame)


def is_unique_violation(error: BaseException) -> bool:
    """A unique key refused a row, on PostgreSQL (SQLSTATE 23505) or SQLite."""
    return getattr(error, "sqlstate", None) == "23505" or (isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error))
