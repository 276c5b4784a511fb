"""The one module Airflow's plugin loader executes from plugins/ (see .airflowignore).

It registers the `batchwatch` plugin: the Batchwatch FastAPI app mounted at /batchwatch and a
"Batchwatch" entry in the Airflow UI's nav that shows it. The loader runs this file in the API server
and in every task, so it imports nothing beyond Airflow: the web app (FastAPI, Airflow's security
module, the core) is imported on the first request, and the operators by the DAG file and the tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin


class LazyBatchwatchApp:
    """An ASGI app that builds the Batchwatch FastAPI app on its first request.

    Importing the app costs seconds (Airflow's API security module, the ORM models); tasks load
    this plugin too and never serve a request, so they should not pay for it.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            from batchwatch_airflow.web.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class BatchwatchPlugin(AirflowPlugin):
    """Batchwatch's Airflow plugin."""

    name = "batchwatch"
    fastapi_apps = [{"app": LazyBatchwatchApp(), "url_prefix": "/batchwatch", "name": "Batchwatch"}]
    external_views = [
        {
            "name": "Batchwatch",
            "href": "/batchwatch/",
            "destination": "nav",
            "url_route": "batchwatch",
        }
    ]
