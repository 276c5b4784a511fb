"""Every trigger form opens ready to submit: a plain run is one click, as the Airflow UI decides it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException

# The one param a user must fill in on purpose: a rollback says why.
DELIBERATELY_REQUIRED = {("fraud_rollback", "reason"), ("churn_rollback", "reason")}


def required_in_the_form(schema: dict[str, Any]) -> bool:
    """The UI's rule (Airflow 3.3 FlexibleForm): a param with a `type` that does not admit "null" is required,
    and the Trigger button stays disabled while a required field is null, missing or ""."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag()


def _params(dagbag: DagBag) -> list[tuple[str, str, Any]]:
    return [(dag_id, name, dag.params.get_param(name)) for dag_id, dag in sorted(dagbag.dags.items()) for name in dag.params]


def test_every_form_but_a_rollbacks_reason_is_ready_with_its_defaults(dagbag):
    blocking = {
        (dag_id, name)
        for dag_id, name, param in _params(dagbag)
        if required_in_the_form(param.schema) and (not param.has_value or param.value == "")
    }
    assert blocking == DELIBERATELY_REQUIRED
    for dag_id, dag in dagbag.dags.items():
        if not dag_id.endswith("_rollback"):
            dag.params.validate()  # what the API does with the defaults of a run triggered with no conf


def test_every_optional_param_admits_null_and_an_optional_text_admits_empty(dagbag):
    optional = [(dag_id, name, param) for dag_id, name, param in _params(dagbag) if not required_in_the_form(param.schema)]
    assert {(dag_id.split("_", 1)[1], name) for dag_id, name, _ in optional} == {
        ("weekly_retrain", "force_reason"), ("weekly_retrain", "candidate_version"), ("rollback", "to_version"),
        ("chaos_drill", "window_end"),
    }
    for _, _, param in optional:
        jsonschema.validate(None, param.schema)
        if "string" in param.schema["type"]:
            jsonschema.validate("", param.schema)


def test_a_plain_retrain_triggers_with_no_conf(dagbag):
    assert dagbag.dags["fraud_weekly_retrain"].params.validate() == {
        "dry_run": False, "force_promote": False, "force_reason": None, "training_window_days": 28, "candidate_version": None,
    }


@pytest.mark.parametrize("unset", [pytest.param("None", id="null-renders-None"), pytest.param("", id="empty"), pytest.param("  ", id="blank")])
def test_forcing_without_a_reason_fails_the_train_task_saying_what_to_type(unset):
    from batchwatch_airflow.operators import TrainModelOperator

    operator = TrainModelOperator(task_id="train", model_name="fraud", force_promote="True", force_reason=unset)
    with pytest.raises(AirflowFailException, match="force_promote needs a force_reason.*fill in force_reason"):
        operator.execute({})


def test_a_forced_run_without_a_reason_fails_at_once_not_after_retries(dagbag, airflow_db):
    """Through Airflow: the train task fails on its first try and nothing after it runs."""
    from airflow.utils.state import DagRunState, TaskInstanceState

    run = dagbag.dags["fraud_weekly_retrain"].test(run_conf={"force_promote": True})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == DagRunState.FAILED
    assert states["train"] == (TaskInstanceState.FAILED, 1)
    assert {states["validate"][0], states["promote"][0]} == {TaskInstanceState.UPSTREAM_FAILED}
