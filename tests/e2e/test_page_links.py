"""Links from a task instance to the Batchwatch page: the operator extra link, stored when the task ends."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from .conftest import DAY, run_day

NIGHTLY = "fraud_nightly_predict"


def stored_link(dag_id: str, task_id: str, run_id: str) -> str:
    """What the Airflow UI shows behind a task's "Batchwatch" button: the XCom the worker stored for the link."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids=task_id, key="_link_BatchwatchPageLink")).all()
        return XComModel.deserialize_value(rows[0])


def test_a_task_links_to_its_models_page_for_its_run(fraud_world):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    assert run_day(NIGHTLY, DAY)[0] == "success"
    with create_session() as session:
        run_id = session.query(DagRun).filter_by(dag_id=NIGHTLY, data_interval_start=DAY).one().run_id

    link = urlsplit(stored_link(NIGHTLY, "predict", run_id))
    assert link.path == "/batchwatch/models/fraud"
    assert parse_qs(link.query) == {"dag_id": [NIGHTLY], "run_id": [run_id]}


def test_the_link_is_declared_on_every_batchwatch_operator():
    """The UI lists a task's links from its serialized operator: every one of ours carries the page link."""
    from batchwatch_airflow import operators
    from batchwatch_airflow.links import BatchwatchPageLink, DriftReportLink

    classes = [cls for name in dir(operators) if name.endswith("Operator") and (cls := getattr(operators, name)).__module__ == operators.__name__]
    assert len(classes) == 15  # the fourteen task operators (with score_shard and publish) and the daily checks' base
    for cls in classes:
        expected = [BatchwatchPageLink, DriftReportLink] if cls is operators.DriftCheckOperator else [BatchwatchPageLink]
        assert [type(link) for link in cls.operator_extra_links] == expected, cls.__name__
