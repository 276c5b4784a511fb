"""A NULL and a text that spells a null marker read back differently, on PostgreSQL and on SQLite.

The PostgreSQL reader once exported CSV with NULL '\\N' and read the text `\\N` as a NULL.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest

from batchwatch.warehouse import make_engine, read_frame, stream_frames

# Texts an export could confuse with a NULL or mangle, each stored beside a real NULL.
TEXTS = ["\\N", "NULL", "", "NaN", "null", "\\\\N", "N", "back\\slash", "a\tb", "two\nlines", "cr\r", '"quoted", with a comma', "é"]
NULL_ROW = len(TEXTS)


@pytest.fixture
def tricky(warehouse_url):
    """A table of text columns (a key, a free text, a category) holding TEXTS and one NULL row."""
    engine = make_engine(warehouse_url)
    placeholders = "%s, %s, %s, %s" if engine.dialect.name == "postgresql" else "?, ?, ?, ?"
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE tricky (n INTEGER, k TEXT, t TEXT, c TEXT)")
        for n, text in enumerate([*TEXTS, None]):
            connection.exec_driver_sql(f"INSERT INTO tricky VALUES ({placeholders})", (n, text, text, text))
    yield engine
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE tricky")
    engine.dispose()


def stored(n: int) -> str | None:
    return None if n == NULL_ROW else TEXTS[n]


def as_read(value: object) -> object:
    return None if pd.isna(value) else value


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_texts_read_as_stored_and_null_reads_as_null(tricky, chunk_size: int) -> None:
    """Also in chunks after the first escaped text, and in chunks before it."""
    query = "SELECT n, k, t, c FROM tricky ORDER BY n"
    frames = list(stream_frames(tricky, query, {}, ["n", "k", "t", "c"], ["k", "t", "c"], chunk_size, ["c"]))
    assert sum(map(len, frames)) == len(TEXTS) + 1
    for frame in frames:
        expected = [stored(n) for n in frame["n"]]
        for name in ("k", "t", "c"):
            assert [as_read(value) for value in frame[name].astype(object)] == expected, name
        assert str(frame["c"].dtype) == "category"
        assert set(frame["c"].cat.categories) == {text for text in expected if text is not None}, "no category that no row has"


def test_a_number_column_holding_the_text_backslash_n_reads_it_as_text(tricky) -> None:
    """Validation then rejects it as a wrong type instead of taking it for a missing number."""
    with tricky.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE amounts (n INTEGER, amount TEXT)")
        connection.exec_driver_sql("INSERT INTO amounts VALUES (1, '1.5'), (2, '\\N'), (3, NULL)")
    frame = read_frame(tricky, "SELECT n, amount FROM amounts ORDER BY n", {}, ["n", "amount"], [])
    assert [as_read(value) for value in frame["amount"].astype(object)] == ["1.5", "\\N", None]
    with tricky.begin() as connection:
        connection.exec_driver_sql("DROP TABLE amounts")


def test_read_frame_binds_and_keeps_the_text_backslash_n(tricky) -> None:
    frame = read_frame(tricky, "SELECT n, k FROM tricky WHERE k = :k OR k IS NULL ORDER BY n", {"k": "\\N"}, ["n", "k"], ["k"])
    assert [as_read(value) for value in frame["k"]] == ["\\N", None]


@pytest.mark.parametrize(
    ("stream", "escaped"),
    [
        pytest.param(b"1\t\\N\n2\t\\N\n", False, id="nulls-only"),
        pytest.param(b"1\t\\\\N\n2\t\\N\n", True, id="the-text-backslash-n"),
        pytest.param(b"1\ta\\tb\n", True, id="a-tab"),
    ],
)
@pytest.mark.parametrize("split", range(1, 8))
def test_an_escape_is_noticed_wherever_the_reads_split_the_stream(stream: bytes, escaped: bool, split: int) -> None:
    """PostgreSQL reads are unescaped only once the stream held an escape; one split over two reads counts."""
    from batchwatch.warehouse.read import _EscapeWatch

    watch = _EscapeWatch(io.BytesIO(stream))
    assert watch.read(split) + watch.read() == stream
    assert watch.escaped is escaped


def test_a_one_column_row_holding_an_empty_text_is_a_row(warehouse_url) -> None:
    engine = make_engine(warehouse_url)
    frame = read_frame(engine, "SELECT CAST('' AS TEXT) AS t UNION ALL SELECT CAST(NULL AS TEXT)", {}, ["t"], ["t"])
    assert [as_read(value) for value in frame["t"]] == ["", None]
    engine.dispose()
