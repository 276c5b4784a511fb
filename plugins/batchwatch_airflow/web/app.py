"""The FastAPI app the `batchwatch` plugin mounts at /batchwatch; each router brings its own auth dependencies."""

from __future__ import annotations

from fastapi import FastAPI

from batchwatch_airflow.web import api


def create_app() -> FastAPI:
    app = FastAPI(title="Batchwatch", description="Model health of the Batchwatch DAGs, behind Airflow's auth.")
    app.include_router(api.router)
    return app
