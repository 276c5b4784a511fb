"""Batchwatch: one set of DAGs per model spec in include/models (BATCHWATCH_SPEC_DIRS to change)."""

from batchwatch.spec import load_specs
from batchwatch_airflow.dag_factory import hourly_drift_dag, nightly_predict_dag, rollback_dag, weekly_retrain_dag

for _spec in load_specs().values():
    for _build in (nightly_predict_dag, hourly_drift_dag, weekly_retrain_dag, rollback_dag):
        _dag = _build(_spec)
        globals()[_dag.dag_id] = _dag
