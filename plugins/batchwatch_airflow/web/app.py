"""The FastAPI app the `batchwatch` plugin mounts at /batchwatch; each router brings its own auth dependencies."""

from __future__ import annotations

from fastapi import FastAPI

from batchwatch_airflow.web import api, metrics, pages, predictions, reports


def create_app() -> FastAPI:
    app = FastAPI(title="Batchwatch", description="Model health of the Batchwatch DAGs, behind Airflow's auth.")
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(metrics.router)
    app.include_router(predictions.router)
    app.include_router(reports.router)
    return app
