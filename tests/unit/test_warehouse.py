"""Streaming reads: a key reads as the same text in every chunk, on PostgreSQL and on SQLite."""

from __future__ import annotations

from batchwatch.warehouse import make_engine, stream_frames


def test_integer_keys_read_as_the_same_text_in_every_chunk(warehouse_url) -> None:
    """A chunk with a NULL key must not turn the integer keys beside it into "5.0"."""
    engine = make_engine(warehouse_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE keyed (n INTEGER, k BIGINT, c TEXT)")
        connection.exec_driver_sql("INSERT INTO keyed VALUES (1, 5, 'a'), (2, NULL, NULL), (3, 5, 'a'), (4, 7, 'b')")
    query = "SELECT k, c FROM keyed ORDER BY n"
    first, second = stream_frames(engine, query, {}, ["k", "c"], ["k", "c"], 2, ["c"])
    assert first["k"].iloc[0] == "5" and first["k"].isna().tolist() == [False, True]
    assert second["k"].tolist() == ["5", "7"]
    assert first["c"].isna().tolist() == [False, True] and second["c"].astype(str).tolist() == ["a", "b"]
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE keyed")
