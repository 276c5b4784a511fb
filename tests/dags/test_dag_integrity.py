"""Every DAG imports cleanly, parses fast, and has the schedule, tasks, owner and retries we expect."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import CronDataIntervalTimetable

EXPECTED = {
    "fraud_nightly_predict": {"tasks": {"predict", "apply_retention"}, "cron": "0 0 * * *", "owner": "ml-platform", "max_active_runs": 4},
    "churn_nightly_predict": {"tasks": {"predict"}, "cron": "0 0 * * *", "owner": "growth-ds", "max_active_runs": 4},
    "fraud_hourly_drift": {"tasks": {"check_drift"}, "cron": "0 * * * *", "owner": "ml-platform", "max_active_runs": 1},
    "churn_hourly_drift": {"tasks": {"check_drift"}, "cron": "0 * * * *", "owner": "growth-ds", "max_active_runs": 1},
    "fraud_daily_performance": {"tasks": {"check_volume", "check_performance"}, "cron": "0 6 * * *", "owner": "ml-platform", "max_active_runs": 1},
    "churn_daily_performance": {"tasks": {"check_volume", "check_performance"}, "cron": "0 6 * * *", "owner": "growth-ds", "max_active_runs": 1},
    "fraud_weekly_retrain": {"tasks": {"train", "validate", "promote"}, "cron": "0 3 * * 1", "owner": "ml-platform", "max_active_runs": 1},
    "churn_weekly_retrain": {"tasks": {"train", "validate", "promote"}, "cron": "0 3 * * 1", "owner": "growth-ds", "max_active_runs": 1},
    "fraud_release": {"tasks": {"decide", "approve", "record_approval"}, "cron": "0 7 * * *", "owner": "ml-platform", "max_active_runs": 1},
    "churn_release": {"tasks": {"decide"}, "cron": "0 7 * * *", "owner": "growth-ds", "max_active_runs": 1},
    "fraud_rollback": {"tasks": {"rollback"}, "cron": None, "owner": "ml-platform", "max_active_runs": 1},
    "churn_rollback": {"tasks": {"rollback"}, "cron": None, "owner": "growth-ds", "max_active_runs": 1},
    "fraud_chaos_drill": {"tasks": {"drill"}, "cron": None, "owner": "ml-platform", "max_active_runs": 1},
    "churn_chaos_drill": {"tasks": {"drill"}, "cron": None, "owner": "growth-ds", "max_active_runs": 1},
}


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag()


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_spec_builds(dagbag):
    """A broken spec still parses (as a failing `<file>_spec_error` DAG, so the other models keep running); CI fails on it here."""
    from batchwatch_airflow.spec_errors import SPEC_ERROR_TAG

    assert {dag_id: dag.doc_md for dag_id, dag in dagbag.dags.items() if SPEC_ERROR_TAG in dag.tags} == {}


def test_one_dag_set_per_spec(dagbag):
    assert set(dagbag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_shape(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    expected = EXPECTED[dag_id]
    if expected["cron"] is None:
        assert type(dag.timetable).__name__ == "NullTimetable", "manual only"
    else:
        assert isinstance(dag.timetable, CronDataIntervalTimetable), "the interval must be a real data interval"
        assert dag.timetable.expression == expected["cron"]
        assert str(dag.timetable.timezone) == "UTC"
    assert {task.task_id for task in dag.tasks} == expected["tasks"]
    assert dag.tags and "batchwatch" in dag.tags
    assert dag.catchup is False
    assert dag.max_active_runs == expected["max_active_runs"]
    assert dag.doc_md
    scheduled = expected["cron"] is not None
    assert dag.is_paused_upon_creation is scheduled, "scheduled DAGs wait for a user to unpause them; manual ones run when triggered"
    assert ("**Paused when Airflow first sees it**" if scheduled else "**Not paused**") in dag.doc_md
    for task in dag.tasks:
        assert task.owner == expected["owner"]
        assert task.retries >= 2
        assert task.retry_exponential_backoff
        if task.task_id == "approve":  # HITL: a person's wait, bounded by response_timeout instead
            assert task.execution_timeout is None and task.response_timeout == timedelta(hours=20)
        else:
            assert timedelta(0) < task.execution_timeout <= timedelta(hours=6), "no task may hang for ever on a frozen database"
        if expected["cron"] == "0 * * * *":
            assert task.execution_timeout < timedelta(hours=1), "an hourly run that overruns holds back the next"
    if "promote" in expected["tasks"]:
        assert [outlet.name for outlet in dag.get_task("promote").outlets] == [dag_id.replace("_weekly_retrain", "_champion")]
        assert set(dag.params) == {"dry_run", "force_promote", "force_reason", "training_window_days", "candidate_version"}
        assert [t.task_id for t in dag.get_task("train").downstream_list] == ["validate"]
    if "drill" in expected["tasks"]:
        from batchwatch.monitoring.faults import FAULTS

        assert dag.render_template_as_native_obj, "the drill's params reach its operator typed"
        assert dag.params.validate() == {"window_end": None, "days": dag.params["days"], "faults": list(FAULTS)}
        assert dag.params["days"] >= 1
    if "predict" in expected["tasks"]:
        assert [outlet.name for outlet in dag.get_task("predict").outlets] == [dag_id.replace("_nightly_predict", "_predictions")]
        assert dag.params["chunk_size"] > 0


def test_interval_is_one_utc_day(dagbag):
    from airflow.serialization.encoders import coerce_to_core_timetable
    from pendulum import datetime

    timetable = coerce_to_core_timetable(dagbag.dags["fraud_nightly_predict"].timetable)
    interval = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 3, 0, 30, tz="UTC"))
    assert (interval.start, interval.end - interval.start) == (datetime(2026, 11, 2, tz="UTC"), timedelta(days=1))


def test_drift_interval_is_one_hour(dagbag):
    from airflow.serialization.encoders import coerce_to_core_timetable
    from pendulum import datetime

    timetable = coerce_to_core_timetable(dagbag.dags["fraud_hourly_drift"].timetable)
    interval = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 3, 7, 30, tz="UTC"))
    assert (interval.start, interval.end - interval.start) == (datetime(2026, 11, 3, 6, tz="UTC"), timedelta(hours=1))


def test_dag_file_does_no_heavy_import():
    """Parsing the DAG file must not import pandas, sklearn or a database driver."""
    code = (
        "import sys, runpy; runpy.run_path('dags/batchwatch_models.py'); "
        "heavy = [m for m in ('pandas', 'sklearn', 'psycopg', 'joblib', 'scipy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_what_airflow_creates_paused(dagbag, airflow_db):
    """Recorded as Airflow records a new DAG: the schedules wait for a user, rollback runs when triggered."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(dagbag, "dags-folder", None)
    with create_session() as session:
        paused = {model.dag_id: model.is_paused for model in session.query(DagModel).filter(DagModel.dag_id.in_(EXPECTED))}
    assert paused == {dag_id: expected["cron"] is not None for dag_id, expected in EXPECTED.items()}
