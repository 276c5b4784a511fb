"""Publishing a day must not stall the readers of other days (issue 14), and it still replaces the day in one transaction.

A long reader of `predictions` holds its lock on the parent until its transaction ends. The re-score
of another day waits for it to swap that day's partition; before, the waiting DETACH queued every
later query of `predictions` behind it, whatever day it read. Each test's long reader is an open
transaction the test ends itself; the only clocks are generous deadlines and the lock_timeout under test.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.scoring import predict_interval
from batchwatch.spec import get_spec
from batchwatch.warehouse import LockTimeout, make_engine, migrate, partition_name
from batchwatch.warehouse.partitions import detach_partition

from .conftest import FIRST_DAY, HISTORY_START, ROWS_PER_DAY

POSTGRES_SERVER = os.environ.get("BATCHWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DAY_A, DAY_B, DAY_C = (FIRST_DAY + timedelta(days=offset) for offset in range(3))
GENEROUS = 60  # seconds: a deadline for what finishes in well under one, so that a failure fails rather than hangs
ROW_COLUMNS = "entity_id, role, model_version, score, predicted_label, arm"
WAITING_FOR_PREDICTIONS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted AND relation = 'predictions'::regclass"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.fixture(scope="module")
def scored_world():
    """A database of its own: labelled history, a champion, and days A, B and C scored once (run_id 'first')."""
    name = f"bw_swap_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{POSTGRES_SERVER}/{name}"
    try:
        engine = make_engine(url)
        migrate(engine)
        simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
        simulate_into(engine, start=DAY_A, end=DAY_C + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
        spec = get_spec("fraud")
        bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
        for day in (DAY_A, DAY_B, DAY_C):
            predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id="first")
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def engine_with_lock_timeout(scored_world, monkeypatch):
    """An engine on the world whose sessions have lock_timeout (BATCHWATCH_PG_LOCK_TIMEOUT) as given."""
    engines = []

    def make(lock_timeout: str):
        monkeypatch.setenv("BATCHWATCH_PG_LOCK_TIMEOUT", lock_timeout)
        engines.append(make_engine(scored_world))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def rescore(engine, day, run_id: str) -> dict:
    return predict_interval(engine, get_spec("fraud"), start=day, end=day + timedelta(days=1), run_id=run_id)


def day_rows(connection, day) -> pd.DataFrame:
    query = f"SELECT {ROW_COLUMNS}, run_id FROM predictions WHERE model_name = 'fraud' AND ds = :ds ORDER BY role, entity_id"
    return pd.read_sql(sa.text(query), connection, params={"ds": day.date()})


def open_long_reader(connection) -> int:
    """Read day A and keep the transaction open: its lock on `predictions` lasts until the test ends it. Returns its pid."""
    assert connection.execute(sa.text("SELECT count(*) FROM predictions WHERE ds = :ds"), {"ds": DAY_A.date()}).scalar_one() > 0
    return connection.connection.driver_connection.info.backend_pid


def eventually(condition: Callable[[], object], publish: Future, failure: str) -> None:
    """Wait until `condition` holds, while the publish still runs (its error, if it stopped, is raised)."""
    deadline = time.monotonic() + GENEROUS
    while not condition():
        if publish.done():
            publish.result()
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def waits_logged_for(caplog, pid: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "batchwatch.warehouse.partitions" and pid in record.args[1]]


def test_a_publish_waiting_for_a_long_reader_does_not_stall_readers_of_other_days(engine_with_lock_timeout, caplog):
    caplog.set_level(logging.INFO, logger="batchwatch.warehouse.partitions")
    engine = engine_with_lock_timeout("5min")
    with engine.connect() as connection:
        old_b = day_rows(connection, DAY_B)
        rows_c = len(day_rows(connection, DAY_C))
    assert set(old_b.run_id) == {"first"} and rows_c > 0

    # The pool is left last: the long reader has ended by then, so a failing test does not wait for the publish.
    with ThreadPoolExecutor(max_workers=1) as pool, engine.connect() as long_reader, engine.connect() as monitor:
        reader_pid = open_long_reader(long_reader)
        publish = pool.submit(rescore, engine, DAY_B, "rescored")
        # The swap has met the long reader and waits for it.
        eventually(lambda: monitor.execute(sa.text(WAITING_FOR_PREDICTIONS)).scalar(), publish, "the publish never waited for the long reader")

        # An analyst querying day C meanwhile. Before, this query queued behind the waiting DETACH until the
        # long reader ended: its own lock_timeout turns that into an error instead of a hang.
        with engine.connect() as analyst:
            analyst.exec_driver_sql(f"SET lock_timeout = '{GENEROUS}s'")
            assert len(day_rows(analyst, DAY_C)) == rows_c
            still_old = day_rows(analyst, DAY_B)
        assert not publish.done(), "the publish cannot finish while the long reader holds predictions"
        pd.testing.assert_frame_equal(still_old, old_b)  # readers see the old rows until the publish commits

        eventually(lambda: waits_logged_for(caplog, reader_pid), publish, "each wait is logged with the sessions holding predictions")
        long_reader.rollback()  # the long reader ends
        summary = publish.result(timeout=GENEROUS)

    assert summary["ds"] == DAY_B.date().isoformat()
    with engine.connect() as connection:
        new_b = day_rows(connection, DAY_B)
        lock_timeout = connection.exec_driver_sql("SHOW lock_timeout").scalar()
    assert set(new_b.run_id) == {"rescored"}
    # The same model over the same source rows: exactly the rows of the first scoring, now from this run.
    pd.testing.assert_frame_equal(new_b.drop(columns="run_id"), old_b.drop(columns="run_id"))
    assert lock_timeout == "5min"


def test_a_publish_past_its_lock_timeout_fails_naming_it_and_leaves_the_day(engine_with_lock_timeout, caplog):
    caplog.set_level(logging.INFO, logger="batchwatch.warehouse.partitions")
    engine = engine_with_lock_timeout("1s")
    summary_query = "SELECT * FROM daily_scoring WHERE model_name = 'fraud' AND ds = :ds ORDER BY role"
    with engine.connect() as connection:
        before = day_rows(connection, DAY_B)
        summary_before = pd.read_sql(sa.text(summary_query), connection, params={"ds": DAY_B.date()})

    with engine.connect() as long_reader:
        reader_pid = open_long_reader(long_reader)
        with pytest.raises(LockTimeout, match=r"^lock_timeout \(1s\) fired: .*raise BATCHWATCH_PG_LOCK_TIMEOUT \(now 1s\)"):
            rescore(engine, DAY_B, "timed-out")
        long_reader.rollback()

    assert len(waits_logged_for(caplog, reader_pid)) >= 2, "it stepped out of the queue and asked again"
    with engine.connect() as connection:
        pd.testing.assert_frame_equal(day_rows(connection, DAY_B), before)
        pd.testing.assert_frame_equal(pd.read_sql(sa.text(summary_query), connection, params={"ds": DAY_B.date()}), summary_before)
        stage = connection.execute(sa.text("SELECT to_regclass(:stage)"), {"stage": partition_name("fraud", DAY_B.date()) + "_next"})
        assert stage.scalar() is None


def test_detach_partition_leaves_the_transaction_usable_and_the_session_lock_timeout_in_place(engine_with_lock_timeout):
    engine = engine_with_lock_timeout("2s")
    partition = partition_name("fraud", DAY_C.date())
    raw = engine.raw_connection()
    connection = raw.driver_connection
    try:
        with engine.connect() as long_reader:
            open_long_reader(long_reader)
            with pytest.raises(LockTimeout):
                detach_partition(connection, partition, budget=0.5)
            assert connection.execute("SHOW lock_timeout").fetchone()[0] == "2s"
            long_reader.rollback()
        detach_partition(connection, partition)  # the same transaction goes on
        attached = connection.execute("SELECT count(*) FROM pg_inherits WHERE inhrelid = %s::regclass", (partition,)).fetchone()[0]
        assert attached == 0 and connection.execute("SHOW lock_timeout").fetchone()[0] == "2s"
    finally:
        connection.rollback()  # day C stays attached for the other tests
        raw.close()
