"""Batchwatch: one set of DAGs per model spec in include/models (BATCHWATCH_SPEC_DIRS to change)."""

from batchwatch.spec import load_specs
from batchwatch_airflow.dag_factory import hourly_drift_dag, nightly_predict_dag

for _spec in load_specs().values():
    for _dag in (nightly_predict_dag(_spec), hourly_drift_dag(_spec)):
        globals()[_dag.dag_id] = _dag
