"""What the Airflow UI shows of a run made by the run helper (`make demo`'s backdated runs): its real
duration and each task's log, read back the way the API server reads them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from batchwatch import registry

from .conftest import DAY, run_day

NIGHTLY = "fraud_nightly_predict"


def nightly_run(day: datetime):
    """The DagRun of the nightly interval [day, day + 1) and its task instances, from the metadata database."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=NIGHTLY, data_interval_start=day).one()
        instances = session.query(TaskInstance).filter_by(dag_id=NIGHTLY, run_id=run.run_id).all()
        session.expunge_all()
    return run, instances


def task_log(task_id: str, run_id: str) -> tuple[list[str], list[dict]]:
    """(sources, lines) of a task's latest try, through Airflow's TaskLogReader as the UI's log view reads them."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.log.log_reader import TaskLogReader
    from airflow.utils.session import create_session

    with create_session() as session:
        instance = session.query(TaskInstance).filter_by(dag_id=NIGHTLY, task_id=task_id, run_id=run_id).one()
        stream, _ = TaskLogReader().read_log_chunks(instance, instance.try_number, {})
        lines = [message.model_dump(mode="json") for message in stream]
    # The reader opens with a group naming where it read from, then the log's own lines.
    end_of_sources = [line["event"] for line in lines].index("::endgroup::")
    return [line["event"] for line in lines[1:end_of_sources]], lines[end_of_sources + 1 :]


def test_a_backdated_run_shows_its_wall_clock_duration(fraud_world):
    began = datetime.now(timezone.utc)
    state, _ = run_day(NIGHTLY, DAY)
    finished = datetime.now(timezone.utc)
    assert state == "success"

    run, instances = nightly_run(DAY)
    assert run.logical_date < DAY + timedelta(days=2) < began  # backdated, as the demo's runs are
    assert began <= run.start_date <= run.end_date <= finished
    assert timedelta(0) < run.end_date - run.start_date < timedelta(minutes=3)
    assert instances and {instance.state for instance in instances} == {"success"}
    for instance in instances:
        assert began <= instance.start_date <= instance.end_date <= finished, instance.task_id


def test_each_task_log_is_where_the_ui_reads_it(fraud_world):
    state, results = run_day(NIGHTLY, DAY)
    assert state == "success"
    run, instances = nightly_run(DAY)

    sources, lines = task_log("predict", run.run_id)
    assert len(sources) == 1 and sources[0].endswith(".log"), sources  # a local file, not "not found on worker"
    scored = [line["event"] for line in lines if line["event"].startswith("Scored ")]
    assert len(scored) == 1 and f"{results['predict']['rows_scored']} of {results['predict']['rows_read']} rows" in scored[0]
    for instance in instances:
        assert task_log(instance.task_id, run.run_id)[1], f"{instance.task_id} has an empty log"


def test_a_rerun_replaces_the_log_of_the_run_it_replaces(fraud_world):
    """dag.test() deletes a run of the same logical date and starts again at try 1, so the log starts again too."""
    for _ in range(2):
        assert run_day(NIGHTLY, DAY)[0] == "success"
    run, _ = nightly_run(DAY)
    _, lines = task_log("predict", run.run_id)
    assert len([line for line in lines if line["event"].startswith("Scored ")]) == 1


def test_a_failed_task_logs_its_error(fraud_world):
    engine = fraud_world["engine"]
    artifact = registry.artifact_path(registry.get_version(engine, "fraud", fraud_world["champion"])["artifact_uri"])
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    assert run_day(NIGHTLY, DAY)[0] == "failed"

    run, instances = nightly_run(DAY)
    assert {instance.task_id: instance.state for instance in instances}["predict"] == "failed"
    _, lines = task_log("predict", run.run_id)
    refusals = [line for line in lines if "was recorded when it was written; refusing to unpickle it" in json.dumps(line)]
    assert refusals and refusals[0]["level"] == "error", lines
