"""Run a DAG for one data interval in-process with `dag.test()` and read back what its tasks returned.

Used by `make demo` and the end-to-end tests, so both go through Airflow's own machinery and the
runs land in the metadata database that `make airflow` shows: with their real duration, and with
each task's log where the UI reads it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import IO, Any

from airflow.listeners import hookimpl
from airflow.sdk import DAG


def load_dag(dag_id: str) -> DAG:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    if dag_id not in bag.dags:
        raise LookupError(f"no DAG {dag_id!r} in {bag.dag_folder}; import errors: {bag.import_errors}")
    return bag.dags[dag_id]


def run_interval(dag: DAG, interval_start: datetime, interval_end: datetime, conf: dict | None = None) -> tuple[str, dict[str, Any]]:
    """Run `dag` for the data interval [interval_start, interval_end); return its state and task results."""
    state, results, (start, end) = run_latest_interval(dag, interval_end, conf)
    if (start, end) != (interval_start, interval_end):
        raise ValueError(f"{dag.dag_id}: the interval ending by {interval_end} is {start}..{end}, not {interval_start}..{interval_end}")
    return state, results


def run_latest_interval(dag: DAG, until: datetime, conf: dict | None = None) -> tuple[str, dict[str, Any], tuple[datetime, datetime]]:
    """Run `dag` for its last complete data interval ending by `until` (a schedule boundary, or a minute or more
    before the next); return its state, task results and that interval, which the DAG's own timetable decides.

    Like a manual trigger, the run covers the last complete interval before its logical date. That
    date is a minute past `until`, not on it: a scheduled run's logical date is its interval start,
    so a run dated exactly on a boundary would take a scheduled run's date.

    `dag.test()` dates the run's start at its logical date (apache/airflow#66127), so a backdated run
    would show days of duration in the UI: the run's start is set to the moment it was created.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    moment = until + timedelta(minutes=1)
    with _task_logs_where_the_ui_reads_them():
        run = dag.test(logical_date=moment, run_after=moment, run_conf=conf)
    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.id == run.id).values(start_date=DagRun.created_at))
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id)).all()
        values = {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}
    # A task's result is its return value; a task that returned none (one that skipped after recording
    # what it decided, like promote) gives its other XComs by key.
    results: dict[str, Any] = {}
    for (task_id, key), value in values.items():
        if key == "return_value":
            results[task_id] = value
        elif (task_id, "return_value") not in values:
            results.setdefault(task_id, {})[key] = value
    return str(run.state), results, (run.data_interval_start, run.data_interval_end)


class _TaskLogRouter(io.RawIOBase):
    """The stream Airflow's logging writes to while the run helper runs a DAG in this process.

    A worker writes each try's log, as JSON lines, to the file the API server reads
    (`[logging] base_log_folder` / `log_filename_template`); `dag.test()` runs the tasks in this process
    and leaves their lines on the console, so the UI found no log. As an Airflow listener, the router
    points itself at a try's file while the try runs; other lines reach stderr from `[logging] logging_level` up.
    One router serves the process, because loggers Airflow caches on first use keep writing to it.
    """

    def __init__(self, console_level: int) -> None:
        super().__init__()
        self.console_level = console_level
        self._lock = threading.Lock()
        self._task_file: IO[bytes] | None = None
        self._started: set[str] = set()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        with self._lock:
            if self._task_file is not None:
                self._task_file.write(data)
                self._task_file.flush()
            else:
                self._echo(bytes(data))
        return len(data)

    def _echo(self, data: bytes) -> None:
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": line}
            level = str(event.get("level", "info"))
            if logging.getLevelNamesMapping().get(level.upper(), logging.INFO) >= self.console_level:
                exceptions = event.get("exception") if isinstance(event.get("exception"), list) else []
                errors = "".join(f"; {error.get('exc_type')}: {error.get('exc_value')}" for error in exceptions)
                stamp, logger = event.get("timestamp", ""), event.get("logger", "")
                sys.stderr.write(f"{stamp} [{level}] {event.get('event', '')}{errors} [{logger}]\n")

    @hookimpl
    def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
        """Point the stream at this try's log file; a try resumed in this process (after a deferral) appends."""
        from airflow.sdk.log import init_log_file
        from airflow.utils.helpers import log_filename_template_renderer

        path = init_log_file(log_filename_template_renderer()(ti=task_instance))
        # dag.test() replaces an earlier run of the same logical date and starts again at try 1,
        # so a file left by the replaced run is that run's log, not this one's.
        first_time = str(task_instance.id) not in self._started
        self._started.add(str(task_instance.id))
        with self._lock:
            self._close_task_file()
            self._task_file = path.open("wb" if first_time else "ab")

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self.end_task()

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self.end_task()

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self.end_task()

    def end_task(self) -> None:
        with self._lock:
            self._close_task_file()

    def _close_task_file(self) -> None:
        if self._task_file is not None:
            self._task_file.close()
            self._task_file = None


_router: _TaskLogRouter | None = None


@contextmanager
def _task_logs_where_the_ui_reads_them() -> Iterator[None]:
    """While a DAG runs in this process, log as a task process does (JSON lines, secrets masked) into the
    router; then give the process its own logging back.

    Task logs keep INFO lines even when `[logging] logging_level` quiets the console (as `make demo` does).
    """
    global _router
    from airflow.configuration import conf
    from airflow.logging_config import configure_logging as configure_process_logging
    from airflow.sdk.listener import get_listener_manager
    from airflow.sdk.log import configure_logging as configure_task_logging

    if _router is None:
        configured = conf.get("logging", "logging_level", fallback="INFO").upper()
        _router = _TaskLogRouter(logging.getLevelNamesMapping().get(configured, logging.INFO))
    listeners = get_listener_manager()
    listeners.add_listener(_router)
    excepthook = sys.excepthook
    # The task SDK's configure_logging is cached on its arguments (Airflow 3.3.2): clear it so this
    # applies again after the process's logging was given back.
    configure_task_logging.cache_clear()
    task_level = logging.getLevelName(min(_router.console_level, logging.INFO))
    configure_task_logging(json_output=True, log_level=task_level, output=_router)
    try:
        yield
    finally:
        _router.end_task()
        listeners.pm.unregister(_router)
        configure_process_logging()
        sys.excepthook = excepthook
