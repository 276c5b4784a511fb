"""A sandbox is a migrated, empty warehouse beside the real one: unqualified names reach it alone, every reader
included, it copies from the real tables only when told to, and it is gone afterwards, also after an error."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchwatch.warehouse import is_postgres, make_engine, read_frame
from batchwatch.warehouse.sandbox import SCHEMA_PREFIX, sandbox


@pytest.fixture
def real(warehouse_url):
    engine = make_engine(warehouse_url)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO outcomes (entity_id, label, observed_at) VALUES ('a', 1, :t), ('b', 0, :t)"),
                           {"t": "2026-10-11 00:00:00"})
    yield engine
    engine.dispose()


def outcomes(engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT entity_id, label FROM outcomes ORDER BY entity_id")).all()


def sandboxes_left(real, made: str) -> bool:
    if is_postgres(real):
        with real.connect() as connection:
            return connection.execute(sa.text("SELECT COUNT(*) FROM pg_namespace WHERE nspname = :s"), {"s": made}).scalar() > 0
    return Path(made).exists()


def test_the_sandbox_is_migrated_empty_and_alone_on_its_names(real):
    with sandbox(real) as box:
        assert outcomes(box.engine) == []
        with box.engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO outcomes (entity_id, label, observed_at) VALUES ('c', 1, :t)"), {"t": "2026-10-12 00:00:00"})
        # The streaming reader opens connections of its own (psycopg2's COPY out on PostgreSQL): they too see the sandbox.
        frame = read_frame(box.engine, "SELECT entity_id FROM outcomes", {}, ["entity_id"], ["entity_id"])
        assert frame["entity_id"].tolist() == ["c"]
        made = box.name
        assert made.startswith(SCHEMA_PREFIX) if is_postgres(real) else made.endswith(".db")
        assert sandboxes_left(real, made)
    assert outcomes(real) == [("a", 1), ("b", 0)]
    assert not sandboxes_left(real, made)


def test_copying_reads_the_real_tables_by_their_qualified_names(real):
    with sandbox(real) as box:
        with box.copying() as connection:
            box.clone_table(connection, "outcomes")
            connection.execute(sa.text(f"INSERT INTO outcomes SELECT * FROM {box.table('outcomes')} WHERE label = 1"))
            box.add_prediction_partitions(connection, "fraud", [date(2026, 10, 11)])
            connection.execute(
                sa.text("INSERT INTO predictions (model_name, model_version, role, entity_id, ds, score, predicted_label, run_id, scored_at)"
                        " VALUES ('fraud', 1, 'champion', 'a', :ds, 0.5, 1, 'r', :t)"),
                {"ds": date(2026, 10, 11), "t": "2026-10-12 00:00:00"},
            )
        assert outcomes(box.engine) == [("a", 1)]
    with real.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM predictions")).scalar() == 0


def test_the_sandbox_is_dropped_when_the_work_inside_fails(real):
    with pytest.raises(ZeroDivisionError), sandbox(real) as box:
        made = box.name
        with box.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM outcomes"))
        1 / 0  # noqa: B018 - the work inside fails
    assert not sandboxes_left(real, made)
    assert outcomes(real) == [("a", 1), ("b", 0)]
