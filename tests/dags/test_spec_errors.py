"""One broken spec leaves the healthy models scheduled and shows itself as a failing `<file>_spec_error` DAG."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.exceptions import AirflowFailException

ROOT = Path(__file__).resolve().parents[2]
FRAUD_DAGS = {
    "fraud_nightly_predict", "fraud_hourly_drift", "fraud_daily_performance", "fraud_weekly_retrain", "fraud_release", "fraud_rollback",
    "fraud_chaos_drill",
}
CHURN = (ROOT / "tests" / "specs" / "churn.yaml").read_text()


@pytest.fixture
def spec_dir(tmp_path, monkeypatch) -> Path:
    """A spec folder holding the good fraud spec, as BATCHWATCH_SPEC_DIRS."""
    shutil.copy(ROOT / "include" / "models" / "fraud.yaml", tmp_path / "fraud.yaml")
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    return tmp_path


MISSPELT_KEY = CHURN.replace("  delay_days: 1", "  delay_dayz: 1")


def test_the_loader_keeps_the_good_specs_and_names_each_bad_file_and_field(spec_dir):
    from batchwatch.spec import load_specs_and_errors

    (spec_dir / "churn.yaml").write_text(MISSPELT_KEY)
    (spec_dir / "fraud_copy.yaml").write_text((spec_dir / "fraud.yaml").read_text())

    specs, errors = load_specs_and_errors()
    assert list(specs) == ["fraud"]
    assert set(errors) == {spec_dir / "churn.yaml", spec_dir / "fraud_copy.yaml"}
    assert f"invalid model spec {spec_dir / 'churn.yaml'}" in errors[spec_dir / "churn.yaml"]
    assert "label.delay_dayz: Extra inputs are not permitted" in errors[spec_dir / "churn.yaml"]
    assert "name: 'fraud' must match the file name 'fraud_copy'" in errors[spec_dir / "fraud_copy.yaml"]


@pytest.mark.parametrize(
    ("churn_spec", "named"),
    [
        pytest.param(MISSPELT_KEY, ["churn.yaml", "label.delay_dayz: Extra inputs are not permitted"], id="misspelt-key"),
        pytest.param(CHURN.replace("name: churn", "name: churn\nschedules: {nightly_predict: '0 0 * * 1'}"),
                     ["churn.yaml", "schedules.nightly_predict", "is not a daily cron expression"], id="bad-value"),
        pytest.param(CHURN + "drift:\n  notifiers:\n    - class: nowhere.Notifier\n",
                     ["model spec churn", "drift.notifiers.0.class: module 'nowhere' cannot be found"], id="unimportable-notifier"),
        pytest.param(CHURN.replace("tags: [churn]", f"tags: [{'x' * 101}]"),
                     ["model spec churn", "ValueError: tag cannot be longer than 100 characters"], id="airflow-refuses-a-dag"),
    ],
)
def test_a_broken_spec_leaves_the_others_scheduled_and_shows_as_a_failing_dag(spec_dir, churn_spec, named):
    (spec_dir / "churn.yaml").write_text(churn_spec)

    bag = DagBag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == FRAUD_DAGS | {"churn_spec_error"}, "fraud keeps every DAG; churn has none but its error"
    for dag_id in FRAUD_DAGS:
        assert bag.dags[dag_id].tasks, dag_id
    placeholder = bag.dags["churn_spec_error"]
    assert "spec-error" in placeholder.tags
    assert type(placeholder.timetable).__name__ == "NullTimetable" and placeholder.is_paused_upon_creation is False
    [task] = placeholder.tasks
    for text in named:
        assert text in placeholder.doc_md
        assert text in task.message


def test_the_placeholder_task_fails_at_once_with_the_spec_error(spec_dir, airflow_db):
    from airflow.utils.state import DagRunState, TaskInstanceState

    (spec_dir / "churn.yaml").write_text(MISSPELT_KEY)
    dag = DagBag().dags["churn_spec_error"]
    [task] = dag.tasks
    with pytest.raises(AirflowFailException, match=r"label\.delay_dayz: Extra inputs are not permitted"):
        task.execute({})

    run = dag.test()
    [instance] = run.get_task_instances()
    assert (run.state, instance.state, instance.try_number) == (DagRunState.FAILED, TaskInstanceState.FAILED, 1)
