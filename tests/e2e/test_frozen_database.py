"""A frozen or vanished warehouse fails a read or write within its timeout, with an error naming the real cause.

The server-down cases run on a PostgreSQL this module starts itself (initdb, pg_ctl) and stops;
the shared server on 5432 is never restarted. The lock and statement timeouts run on a fresh
database of the shared server, with timeouts of a fraction of a second set through the environment.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from contextlib import suppress
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import psycopg2
import psycopg2.extensions
import pytest
import sqlalchemy as sa

from batchwatch.errors import PermanentError
from batchwatch.warehouse import lock_unit, make_engine, migrate, replace_interval, stream_frames
from batchwatch.warehouse.engine import driver_transaction
from batchwatch.warehouse.timeouts import ConnectTimeout, LockTimeout, StatementTimeout, timeout_error
from tools.runs import load_dag

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROWS = 400_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateServer:
    """A PostgreSQL of this test's own, run as the `postgres` user (initdb refuses root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="batchwatch-private-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        shutil.chown(self.folder, "postgres")
        self._as_postgres([PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"])

    def _as_postgres(self, command: list) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        self._as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l", self.folder / "log", "-w", "start"])

    def stop(self) -> None:
        """`immediate`: the way a crash or a host going away looks to a client, no goodbye to any session."""
        self._as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        with_server = (self.data / "postmaster.pid").exists()
        if with_server:
            self.stop()
        shutil.rmtree(self.folder)


@pytest.fixture(scope="module")
def private_server():
    server = PrivateServer()
    yield server
    server.remove()


@pytest.fixture
def running_private_server(private_server):
    """The private server, started, with a table of ROWS rows; stopped again by the test or after it."""
    private_server.start()
    with psycopg.connect(private_server.url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS numbers")
        connection.execute(f"CREATE TABLE numbers AS SELECT n, md5(n::text) AS label FROM generate_series(1, {ROWS}) AS n")
    yield private_server
    if (private_server.data / "postmaster.pid").exists():
        private_server.stop()


def open_copy_connections() -> list:
    """psycopg2 connections this process still holds open (stream_frames' COPY readers are the only ones)."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, psycopg2.extensions.connection) and not obj.closed]


def copy_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "copy-out"]


def numbers(engine, chunk_size: int = 10_000):
    return stream_frames(engine, "SELECT n, label FROM numbers ORDER BY n", {}, ["n", "label"], ["label"], chunk_size)


def test_a_server_gone_mid_read_raises_the_real_cause_and_closes_the_reader(running_private_server):
    """It was a `PQcancel()` error (the cancel needs the server too), and the reader's connection stayed open."""
    engine = make_engine(running_private_server.url)
    frames = numbers(engine)
    assert len(next(frames)) == 10_000
    running_private_server.stop()
    with pytest.raises(psycopg2.OperationalError) as raised:
        for _ in frames:
            pass
    message = str(raised.value)
    assert "PQcancel" not in message
    assert "server closed the connection unexpectedly" in message or "terminating connection" in message
    assert open_copy_connections() == [] and copy_threads() == []
    engine.dispose()


def test_a_reader_abandoned_after_the_server_went_away_closes_quietly(running_private_server):
    """The consumer stops (its own write failed, say) while the COPY thread still waits: no PQcancel error replaces the consumer's."""
    engine = make_engine(running_private_server.url)
    frames = numbers(engine, chunk_size=1_000)
    next(frames)
    running_private_server.stop()
    frames.close()  # what a `for` loop leaving on an exception does to the generator
    assert open_copy_connections() == [] and copy_threads() == []
    engine.dispose()


def test_a_server_that_is_down_is_named_as_refusing_the_connection(private_server):
    engine = make_engine(private_server.url)
    with pytest.raises(psycopg2.OperationalError, match="Connection refused"):
        next(numbers(engine))
    with pytest.raises(sa.exc.OperationalError, match="Connection refused"):
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    assert open_copy_connections() == []


# --- lock and statement timeouts, tiny ones set through the environment ---------------------------


@pytest.fixture
def tiny_timeouts(monkeypatch):
    monkeypatch.setenv("BATCHWATCH_PG_LOCK_TIMEOUT", "300ms")
    monkeypatch.setenv("BATCHWATCH_PG_STATEMENT_TIMEOUT", "1s")


@pytest.fixture
def shared_engine(postgres_database, tiny_timeouts):
    engine = make_engine(postgres_database)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS held")
        connection.exec_driver_sql("CREATE TABLE held (n integer)")
    yield engine
    engine.dispose()


def test_every_session_gets_the_timeouts_and_keepalives(postgres_database, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_PG_IDLE_IN_TRANSACTION_TIMEOUT", "2min")
    engine = make_engine(postgres_database)
    with engine.connect() as connection:
        names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "client_connection_check_interval")
        shown = {name: connection.exec_driver_sql(f"SHOW {name}").scalar() for name in names}
        keepalives = connection.connection.driver_connection.info.get_parameters()
    assert shown == {
        "statement_timeout": "1h", "lock_timeout": "5min", "idle_in_transaction_session_timeout": "2min", "client_connection_check_interval": "10s"
    }  # fmt: skip
    assert (keepalives["keepalives"], keepalives["keepalives_idle"], keepalives["connect_timeout"]) == ("1", "60", "30")
    # The COPY reader (psycopg2) starts its sessions the same way.
    query = "SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l"
    frame = next(stream_frames(engine, query, {}, ["s", "l"], ["s", "l"], 10))
    assert frame.iloc[0].to_dict() == {"s": "1h", "l": "5min"}
    engine.dispose()


def test_a_write_behind_a_held_lock_fails_within_lock_timeout_naming_it(shared_engine):
    """The partition swap behind a long reader: it waited forever; now a transient error (the retry runs after the reader)."""
    with shared_engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE held IN ACCESS SHARE MODE")  # a reader's lock, held until the transaction ends
        with pytest.raises(LockTimeout, match=r"^lock_timeout \(300ms\) fired: .*raise BATCHWATCH_PG_LOCK_TIMEOUT \(now 300ms\)") as raised:
            with shared_engine.begin() as connection:
                connection.exec_driver_sql("DROP TABLE held")
    assert not isinstance(raised.value, PermanentError)
    # The raw driver path (binary COPY in) names it too.
    with shared_engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE held IN ACCESS SHARE MODE")
        with pytest.raises(LockTimeout):
            with driver_transaction(shared_engine) as connection:
                connection.execute("ALTER TABLE held ADD COLUMN m integer")


def test_a_second_run_of_a_unit_of_work_waits_past_lock_timeout_for_the_first(postgres_database, tiny_timeouts, monkeypatch):
    """Two runs of one interval: one waits for the other to finish (the advisory lock), not just lock_timeout's 300 ms."""
    monkeypatch.setenv("BATCHWATCH_PG_STATEMENT_TIMEOUT", "1min")
    shared_engine = make_engine(postgres_database)
    waited: list[str] = []

    def second_run() -> None:
        with shared_engine.begin() as connection:
            lock_unit(connection, "predict", "fraud", "2026-10-11")
            waited.append(connection.exec_driver_sql("SHOW lock_timeout").scalar())

    with shared_engine.begin() as first:
        lock_unit(first, "predict", "fraud", "2026-10-11")
        second = threading.Thread(target=second_run)
        second.start()
        while not first.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").scalar():
            pass  # the second run is queued behind the first
        second.join(timeout=1.5)  # five lock_timeouts: before, it failed after one
        assert second.is_alive() and waited == []
    second.join()
    assert waited == ["300ms"], "the session's lock_timeout is back for the rest of the unit's work"
    shared_engine.dispose()


def write_day(engine, run_id: str) -> None:
    with replace_interval(engine, "fraud", date(2026, 10, 11), run_id, datetime(2026, 10, 12, tzinfo=timezone.utc)) as writer:
        writer.write_predictions(1, "champion", ["a", "b"], np.array([0.1, 0.9]), np.array([0, 1]))


def test_the_partition_swap_behind_a_reader_fails_at_lock_timeout_and_leaves_the_day(postgres_database, tiny_timeouts):
    """It waited for as long as the reader read (a 40 s reader, a 23 s stall); now a clear, transient error, the day as it was."""
    engine = make_engine(postgres_database)
    migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE predictions, rejected_rows, daily_scoring")
    write_day(engine, "first")
    with engine.connect() as reader:
        reader.exec_driver_sql("SELECT count(*) FROM predictions")  # its lock on `predictions` lasts until its transaction ends
        with pytest.raises(LockTimeout, match=r"^lock_timeout \(300ms\) fired"):
            write_day(engine, "second")
        reader.rollback()
    with engine.connect() as connection:
        assert set(connection.exec_driver_sql("SELECT run_id FROM predictions").scalars()) == {"first"}
    write_day(engine, "retried")  # the retry, once the reader is done
    with engine.connect() as connection:
        assert set(connection.exec_driver_sql("SELECT run_id FROM predictions").scalars()) == {"retried"}
    engine.dispose()


def test_a_statement_past_statement_timeout_is_a_permanent_error_naming_it(shared_engine):
    with pytest.raises(StatementTimeout, match=r"^statement_timeout \(1s\) fired: .*raise BATCHWATCH_PG_STATEMENT_TIMEOUT") as raised:
        with shared_engine.connect() as connection:
            connection.exec_driver_sql("SELECT pg_sleep(30)")
    assert isinstance(raised.value, PermanentError)
    # The same through the COPY reader.
    with pytest.raises(StatementTimeout):
        list(stream_frames(shared_engine, "SELECT pg_sleep(30)::text AS s", {}, ["s"], ["s"], 10))


def test_errors_that_are_no_timeout_are_left_alone():
    assert timeout_error(ValueError("timeout")) is None
    assert timeout_error(psycopg2.OperationalError("could not connect: Connection refused")) is None


# --- a server that stops answering: every one of its processes stopped (SIGSTOP) --------------------


def server_processes(server: PrivateServer) -> list[int]:
    """The postmaster (from its pid file) and the processes it forked."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


@pytest.fixture
def frozen_server(running_private_server):
    """The private server with every process stopped: connections are accepted by the kernel and never answered."""
    processes = server_processes(running_private_server)
    for pid in processes:
        with suppress(ProcessLookupError):  # the backend of the set-up's connection may be exiting still
            os.kill(pid, signal.SIGSTOP)
    yield running_private_server
    for pid in processes:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_frozen_server_fails_a_connection_within_connect_timeout_naming_it(frozen_server, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_PG_CONNECT_TIMEOUT", "2")
    engine = make_engine(frozen_server.url)
    with pytest.raises(ConnectTimeout, match=r"^connect_timeout \(2 s\) fired: .*raise BATCHWATCH_PG_CONNECT_TIMEOUT \(now 2\)") as raised:
        with engine.connect():
            pass
    assert not isinstance(raised.value, PermanentError)
    with pytest.raises(ConnectTimeout):  # the COPY reader's own connection (psycopg2)
        next(numbers(engine))
    assert open_copy_connections() == []
    engine.dispose()


def test_a_task_on_a_frozen_server_fails_at_its_execution_timeout_saying_why(frozen_server, airflow_db, monkeypatch, capfd):
    """What no server-side timeout catches (the server itself is stopped): the task's execution_timeout, with our message."""
    monkeypatch.setenv("BATCHWATCH_PG_CONNECT_TIMEOUT", "600")  # longer than the test may take: the execution_timeout must end it
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", frozen_server.url)
    dag = load_dag("fraud_nightly_predict")
    task = dag.get_task("predict")
    task.retries, task.execution_timeout = 0, timedelta(seconds=3)
    moment = datetime(2026, 10, 12, 0, 1, tzinfo=timezone.utc)
    run = dag.test(logical_date=moment, run_after=moment)
    assert str(run.state) == "failed"
    logged = capfd.readouterr()
    assert "predict ran past its execution_timeout (0:00:03) while using the warehouse" in logged.out + logged.err
