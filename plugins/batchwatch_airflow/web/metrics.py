"""GET /metrics: the Prometheus text exposition of the warehouse gauges (batchwatch.observability.metrics).

Built at scrape time from the warehouse, so every API-server worker answers the same, and limited
to the models whose DAGs the caller may read. A scraper authenticates like any Airflow API client:
a JWT from `POST /auth/token` (see the README, "Prometheus metrics"), sent as `Authorization: Bearer`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batchwatch.observability.metrics import metrics_registry
from batchwatch_airflow.web.security import ReadableModels, WarehouseDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def get_metrics(models: ReadableModels, engine: WarehouseDep) -> Response:
    """The gauges of every model the caller may read, in Prometheus' text format."""
    registry = metrics_registry(engine, [spec.name for spec in models])
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
