"""Faults a retry cannot fix fail the task on its first try, through Airflow's own machinery."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from batchwatch import scoring

from .conftest import DAY

WEEK_END = datetime(2026, 9, 21, 3, tzinfo=timezone.utc)  # a Monday 03:00: the end of a weekly interval


def run_with_retries(dag_id: str, until: datetime, retries: int = 1) -> tuple[str, dict[str, tuple[str, int]]]:
    """Run the DAG's last interval ending by `until` with `retries` retries and no delay between tries.

    Returns the run's state and each task's (state, try_number).
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from batchwatch_airflow.runs import load_dag

    dag = load_dag(dag_id)
    for task in dag.tasks:
        task.retries, task.retry_delay = retries, timedelta(0)
    moment = until + timedelta(minutes=1)
    run = dag.test(logical_date=moment, run_after=moment)
    with create_session() as session:
        instances = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)).all()
        return str(run.state), {ti.task_id: (str(ti.state), ti.try_number) for ti in instances}


def test_a_nightly_run_with_no_champion_fails_on_its_first_try(engine, airflow_db):
    state, tasks = run_with_retries("fraud_nightly_predict", DAY + timedelta(days=1))
    assert state == "failed"
    assert tasks["predict"] == ("failed", 1)


def test_a_retrain_with_no_labelled_data_fails_on_its_first_try(engine, airflow_db):
    """Too little labelled data was a ValueError, retried with backoff; the same rows come back on every try."""
    state, tasks = run_with_retries("fraud_weekly_retrain", WEEK_END)
    assert state == "failed"
    assert tasks["train"] == ("failed", 1)


def test_an_error_a_retry_may_fix_is_retried(engine, airflow_db, monkeypatch):
    """The control: the same nightly run with a transient error uses its retry."""

    def lose_the_connection(*args, **kwargs):
        raise ConnectionError("injected: the warehouse went away")

    monkeypatch.setattr(scoring, "predict_interval", lose_the_connection)
    state, tasks = run_with_retries("fraud_nightly_predict", DAY + timedelta(days=1))
    assert state == "failed"
    assert tasks["predict"] == ("failed", 2)
