"""The one module Airflow's plugin loader executes from plugins/ (see .airflowignore).

It registers the `batchwatch` plugin, where the Batchwatch UI surfaces hang (`fastapi_apps`,
`external_views`). The loader runs this file in the API server and in every task, so it imports
nothing beyond Airflow: the operators and the core are imported by the DAG file and the tasks.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class BatchwatchPlugin(AirflowPlugin):
    """Batchwatch's Airflow plugin."""

    name = "batchwatch"
