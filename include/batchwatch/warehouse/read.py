"""Reading: a query's rows as DataFrames in fixed-size chunks and bounded memory, nulls and texts kept apart.

PostgreSQL streams COPY out through psycopg2's C loop; SQLite takes plain DB-API batches.
"""

from __future__ import annotations

import csv
import io
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import suppress
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchwatch.hashing import BUCKETS, salt_seed
from batchwatch.warehouse.engine import NULL, copy_unescape, is_postgres, refused_queries, sqlite_value
from batchwatch.warehouse.timeouts import named_timeouts


def bucket_sql(engine: Engine, key_sql: str, salt: str) -> str:
    """SQL of the key's bucket in [0, BUCKETS) under `salt`, computed where the rows are: the same bucket on every run."""
    if is_postgres(engine):
        return f"(hashtextextended(CAST({key_sql} AS TEXT), {salt_seed(salt)}) & {BUCKETS - 1})"
    literal = salt.replace("'", "''")
    return f"batchwatch_bucket(CAST({key_sql} AS TEXT), '{literal}')"


def sample_predicate(engine: Engine, key_sql: str, fraction: float, salt: str) -> str:
    """SQL keeping about `fraction` of rows, chosen by a salted hash of the key: the same rows on every run."""
    return f"{bucket_sql(engine, key_sql, salt)} < {int(fraction * BUCKETS)}"


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A timestamp as read back: SQLite gives naive UTC (or text), PostgreSQL aware values."""
    moment = pd.Timestamp(value)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


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
    with refused_queries(origin), named_timeouts():
        yield from stream(engine, query, params, columns, dtypes, chunk_size)


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
    # The URL's own options (a sandbox's search_path) stay: the keyword would replace them.
    options = " ".join(part for part in (engine.url.query.get("options"), "-c TimeZone=UTC") if part)
    connection = psycopg2.connect(dsn, options=options)
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
            failure.append(_lost(connection, error))

    def stop() -> None:
        """End the COPY if it still runs, and close the connection whatever happened before.

        The cancel is a new connection to the server: with the server down it fails too, and its
        `PQcancel()` error would hide the real one (and skip the close). The producer ends anyway:
        the read end of the pipe is closed, or the dead socket fails its read.
        """
        if producer.is_alive():
            with suppress(psycopg2.Error):
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


def _lost(connection: Any, error: BaseException) -> BaseException:
    """The error naming the real cause: a connection lost mid-COPY gives psycopg2 only 'no message from the libpq'."""
    import psycopg2

    cause = connection.info.error_message.strip() if connection.closed else ""
    if not cause or cause in str(error):
        return error
    lost = psycopg2.OperationalError(f"the warehouse connection was lost during a COPY out: {cause}")
    lost.__cause__ = error
    return lost


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


def _unescaped(chunk: pd.DataFrame) -> pd.DataFrame:
    """The chunk's texts as stored: every text value (categories, for a categorical) unescaped."""
    for name in chunk.columns:
        column = chunk[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            chunk[name] = column.cat.rename_categories([copy_unescape(category) for category in column.cat.categories])
        elif pd.api.types.is_string_dtype(column.dtype):  # text, or a number column holding text
            chunk[name] = column.map(copy_unescape, na_action="ignore")
    return chunk


def _stream_dbapi(engine, query, params, columns, dtypes, chunk_size):
    # SQLite compares timestamps as text: bind them in the stored form, naive UTC.
    params = {name: sqlite_value(value) if isinstance(value, datetime) else value for name, value in params.items()}
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
