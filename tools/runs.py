"""Run a DAG for one data interval in-process with `dag.test()` and read back what its tasks returned.

Used by `make demo` and the end-to-end tests, so both go through Airflow's own machinery and the
runs land in the metadata database that `make airflow` shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

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
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    moment = until + timedelta(minutes=1)
    run = dag.test(logical_date=moment, run_after=moment, run_conf=conf)
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag.dag_id)).all()
        results = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return str(run.state), results, (run.data_interval_start, run.data_interval_end)
