"""Batchwatch: one set of DAGs per model spec in include/models (BATCHWATCH_SPEC_DIRS to change)."""

from batchwatch.spec import load_specs
from batchwatch_airflow.dag_factory import nightly_predict_dag

for _spec in load_specs().values():
    globals()[f"{_spec.name}_nightly_predict"] = nightly_predict_dag(_spec)
