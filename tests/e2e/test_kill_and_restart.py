"""Faults that must lose nothing, on PostgreSQL: a scoring task killed with kill -9 at its riskiest moments, and the
warehouse restarted under a run. After each, the day is as it was, no stage, lock or session is left, and a rerun
writes exactly the rows a clean run writes.

The kills hit a real process (the job runs in a subprocess, its sessions named by PGAPPNAME); the restart runs on a
PostgreSQL this module starts itself, never the shared server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from batchwatch import scoring
from batchwatch.demo.seed import simulate_into
from batchwatch.errors import PermanentError
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.spec import get_spec
from batchwatch.warehouse import lock_key, make_engine, migrate

from .conftest import DAY, FIRST_DAY, HISTORY_START, ROWS_PER_DAY
from .test_frozen_database import PrivateServer
from .test_sharded_scoring import assert_same_day, day_state, stage_tables

BIG_DAY = DAY + timedelta(days=3)
BIG_ROWS = 100_000
CHUNK = 5_000
KILLED = "batchwatch-killed-job"
# Run in a subprocess: the scoring call named by argv[1] on the warehouse of argv[2], for BIG_DAY; small chunks keep
# its COPY open for a few seconds, long enough to be caught in the middle of it.
JOB = """
import sys
from datetime import datetime, timedelta
from batchwatch import scoring
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine
what, url, run_id, shard, shards = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
start = datetime.fromisoformat(sys.argv[6]); end = start + timedelta(days=1)
engine, spec = make_engine(url), get_spec("fraud")
if what == "predict":
    scoring.predict_interval(engine, spec, start=start, end=end, run_id=run_id, chunk_size=1_000)
elif what == "shard":
    scoring.score_shard(engine, spec, start=start, end=end, run_id=run_id, shard=shard, shards=shards, chunk_size=1_000)
else:
    scoring.publish_shards(engine, spec, start=start, end=end, run_id=run_id, shards=shards)
"""


def start_job(url: str, what: str, run_id: str, shard: int = 0, shards: int = 1) -> subprocess.Popen:
    env = {**os.environ, "PGAPPNAME": KILLED, "BATCHWATCH_PG_CLIENT_CHECK_INTERVAL": "1s"}
    return subprocess.Popen([sys.executable, "-c", JOB, what, url, run_id, str(shard), str(shards), BIG_DAY.isoformat()], env=env)


def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.02)
    return found


_watchers: dict[str, psycopg.Connection] = {}


@pytest.fixture(autouse=True)
def _close_watchers():
    yield
    for watcher in _watchers.values():
        watcher.close()
    _watchers.clear()


def job_session(url: str, where: str) -> int | None:
    """The pid of the job's session matching `where` (on pg_stat_activity), if any; one watching connection per server."""
    if url not in _watchers or _watchers[url].closed:
        _watchers[url] = psycopg.connect(url, autocommit=True)
    row = _watchers[url].execute(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{KILLED}' AND {where}").fetchone()
    return row and row[0]


def leftovers(url: str) -> tuple[int, int]:
    """(sessions of the job, advisory locks held by anyone) in the warehouse's database."""
    with psycopg.connect(url, autocommit=True) as connection:
        sessions = connection.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (KILLED,)).fetchone()[0]
        locks = connection.execute(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchone()[0]
    return sessions, locks


def kill(job: subprocess.Popen) -> None:
    os.kill(job.pid, signal.SIGKILL)
    assert job.wait(timeout=30) == -signal.SIGKILL


@pytest.fixture
def big_world(fraud_world, warehouse_url):
    """The fraud world with a day of 100k rows, scored once cleanly: what every rerun must write again."""
    engine = fraud_world["engine"]
    simulate_into(engine, start=BIG_DAY, end=BIG_DAY + timedelta(days=1), rows_per_day=BIG_ROWS, malformed_rate=0.01, seed=11)
    scoring.predict_interval(engine, get_spec("fraud"), start=BIG_DAY, end=BIG_DAY + timedelta(days=1), run_id="clean", chunk_size=CHUNK)
    return engine, warehouse_url, day_state(engine, BIG_DAY)


def rerun(engine, what: str = "predict", shards: int = 2, run_id: str = "rerun") -> None:
    spec, end = get_spec("fraud"), BIG_DAY + timedelta(days=1)
    if what == "predict":
        scoring.predict_interval(engine, spec, start=BIG_DAY, end=end, run_id=run_id, chunk_size=CHUNK)
        return
    if what == "shards":
        for shard in range(shards):
            scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id=run_id, shard=shard, shards=shards, chunk_size=CHUNK)
    scoring.publish_shards(engine, spec, start=BIG_DAY, end=end, run_id=run_id, shards=shards)


def assert_nothing_left(engine, url: str, stages: int = 0) -> None:
    wait_until(lambda: leftovers(url) == (0, 0), "the killed job's sessions and locks to go", timeout=30)
    assert len(stage_tables(engine)) == stages


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_task_killed_mid_copy_leaves_the_day_and_its_rerun_is_exact(big_world):
    engine, url, clean = big_world
    job = start_job(url, "predict", "killed")
    wait_until(lambda: job_session(url, "state = 'active' AND query LIKE 'COPY predictions\\_%\\_next%'"), "the job's COPY")
    kill(job)
    assert_nothing_left(engine, url)
    assert_same_day(day_state(engine, BIG_DAY), clean)
    rerun(engine)
    assert_same_day(day_state(engine, BIG_DAY), clean)
    assert_nothing_left(engine, url)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_task_killed_while_it_waits_to_swap_lets_go_of_its_locks_at_once(big_world):
    """Its session waits on a lock with every row written: the server notices the dead client within
    client_connection_check_interval and rolls it back, while the lock it waited for is still held."""
    engine, url, clean = big_world
    with psycopg.connect(url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("swap predictions partition"),))
        job = start_job(url, "predict", "killed")
        wait_until(lambda: job_session(url, "wait_event_type = 'Lock'"), "the job to wait for the swap")
        kill(job)
        wait_until(lambda: job_session(url, "true") is None, "the server to end the killed job's session", timeout=30)
        holder.rollback()
    assert_nothing_left(engine, url)
    assert_same_day(day_state(engine, BIG_DAY), clean)
    rerun(engine)
    assert_same_day(day_state(engine, BIG_DAY), clean)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_shard_killed_mid_copy_keeps_the_other_shards_stage(big_world):
    engine, url, clean = big_world
    spec, end = get_spec("fraud"), BIG_DAY + timedelta(days=1)
    scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id="sharded", shard=0, shards=2, chunk_size=CHUNK)
    job = start_job(url, "shard", "sharded", shard=1, shards=2)
    wait_until(lambda: job_session(url, "state = 'active' AND query LIKE 'COPY stage\\_%'"), "the shard's COPY")
    kill(job)
    assert_nothing_left(engine, url, stages=2)  # shard 0's predictions and rejects, committed
    assert_same_day(day_state(engine, BIG_DAY), clean)
    scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id="sharded", shard=1, shards=2, chunk_size=CHUNK)  # its retry
    rerun(engine, "publish", run_id="sharded")
    assert_same_day(day_state(engine, BIG_DAY), clean)
    assert_nothing_left(engine, url)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_publish_killed_before_its_swap_leaves_the_day_and_the_stages(big_world):
    engine, url, clean = big_world
    spec, end = get_spec("fraud"), BIG_DAY + timedelta(days=1)
    for shard in range(2):
        scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id="sharded", shard=shard, shards=2, chunk_size=CHUNK)
    with psycopg.connect(url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("swap predictions partition"),))
        job = start_job(url, "publish", "sharded", shards=2)
        wait_until(lambda: job_session(url, "wait_event_type = 'Lock'"), "the publish to wait for the swap")
        kill(job)
        wait_until(lambda: job_session(url, "true") is None, "the server to end the killed publish", timeout=30)
        holder.rollback()
    assert_nothing_left(engine, url, stages=4)
    assert_same_day(day_state(engine, BIG_DAY), clean)
    rerun(engine, "publish", run_id="sharded")  # the publish's retry
    assert_same_day(day_state(engine, BIG_DAY), clean)
    assert_nothing_left(engine, url)


# --- the warehouse restarted under a run: a server of this module's own ---------------------------------


@pytest.fixture(scope="module")
def restarting_warehouse(tmp_path_factory):
    server = PrivateServer()
    server.start()
    artifacts = tmp_path_factory.mktemp("artifacts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(artifacts))
        engine = make_engine(server.url)
        migrate(engine)
        simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
        simulate_into(engine, start=BIG_DAY, end=BIG_DAY + timedelta(days=1), rows_per_day=BIG_ROWS, malformed_rate=0.01, seed=11)
        bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=FIRST_DAY)
        rerun(engine, run_id="clean")
        yield server, engine, day_state(engine, BIG_DAY)
        engine.dispose()
    server.remove()


def restart_during(server: PrivateServer, where: str, work) -> BaseException:
    """Run `work` in a thread, restart the server (immediate stop, start) once a session matches `where`; `work`'s error."""
    failure: list[BaseException] = []

    def run():
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            failure.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: _active(server.url, where), "the run to reach the write")
    server.stop()
    server.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and failure, "the run went on through a restart of its server"
    return failure[0]


def _active(url: str, where: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(f"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE {where})").fetchone()[0]


def test_a_warehouse_restarted_mid_write_fails_the_try_cleanly_and_the_retry_is_exact(restarting_warehouse):
    server, engine, clean = restarting_warehouse
    error = restart_during(server, "state = 'active' AND query LIKE 'COPY predictions\\_%\\_next%'", lambda: rerun(engine, run_id="restarted"))
    assert not isinstance(error, PermanentError), error  # transient: Airflow's retry takes it
    assert "terminat" in str(error) or "closed the connection" in str(error) or "connection" in str(error).lower(), error
    engine.dispose()  # the pool's sessions died with the server
    assert_same_day(day_state(engine, BIG_DAY), clean)
    assert stage_tables(engine) == []
    rerun(engine, run_id="retry")
    assert_same_day(day_state(engine, BIG_DAY), clean)


def test_a_warehouse_restarted_under_one_shard_keeps_the_staged_ones(restarting_warehouse):
    server, engine, clean = restarting_warehouse
    spec, end = get_spec("fraud"), BIG_DAY + timedelta(days=1)
    scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id="restart-sharded", shard=0, shards=2, chunk_size=CHUNK)

    def shard_one():
        scoring.score_shard(engine, spec, start=BIG_DAY, end=end, run_id="restart-sharded", shard=1, shards=2, chunk_size=CHUNK)

    error = restart_during(server, "state = 'active' AND query LIKE 'COPY stage\\_%'", shard_one)
    assert not isinstance(error, PermanentError), error
    engine.dispose()
    assert len(stage_tables(engine)) == 2  # shard 0's, committed before the restart
    shard_one()  # the shard's retry
    rerun(engine, "publish", run_id="restart-sharded")
    assert_same_day(day_state(engine, BIG_DAY), clean)
    assert stage_tables(engine) == []
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT COUNT(*) FROM scoring_stages WHERE published_at IS NULL")).scalar_one() == 0
