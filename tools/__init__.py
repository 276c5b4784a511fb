"""Developer tools beside the product: the demo runner and the in-process DAG run helpers.

They live outside plugins/ because Airflow's plugin loader executes every module there.
"""
