"""Airflow glue for Batchwatch: thin operators over `batchwatch` and the DAG factory."""
