"""Batchwatch core: plain Python, no Airflow. DAGs and operators call into these modules."""
