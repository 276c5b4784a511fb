"""Batchwatch: one set of DAGs per model spec in include/models (BATCHWATCH_SPEC_DIRS to change).

A spec that cannot be used shows as a failing `<file>_spec_error` DAG; the other models keep their DAGs.
"""

from batchwatch_airflow.dag_factory import all_dags

for _dag in all_dags():
    globals()[_dag.dag_id] = _dag
