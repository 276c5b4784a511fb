"""The JSON API: the model list and one route per read model of `batchwatch.queries`, each behind Airflow's auth."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from batchwatch import queries
from batchwatch_airflow.web.security import ReadableModel, ReadableModels, WarehouseDep, model_dag_ids

router = APIRouter(prefix="/api", tags=["batchwatch"])
Days = Annotated[int, Query(ge=1, le=90, description="how many days back")]


class ModelEntry(BaseModel):
    name: str
    description: str
    dag_ids: list[str]


@router.get("/models")
def models(specs: ReadableModels) -> list[ModelEntry]:
    """The models whose DAGs the user may read."""
    return [ModelEntry(name=spec.name, description=spec.description, dag_ids=sorted(model_dag_ids(spec.name))) for spec in specs]


@router.get("/models/{model_name}/overview")
def overview(spec: ReadableModel, engine: WarehouseDep) -> queries.ModelOverview:
    return queries.model_overview(engine, spec.name)


@router.get("/models/{model_name}/drift")
def drift_heatmap(spec: ReadableModel, engine: WarehouseDep, days: Days = 30) -> queries.DriftHeatmap:
    return queries.drift_heatmap(engine, spec.name, days=days)


@router.get("/models/{model_name}/drift/check")
def drift_check(
    spec: ReadableModel,
    engine: WarehouseDep,
    window_end: Annotated[datetime, Query(description="the window's end, ISO 8601 with a UTC offset")],
    column: Annotated[str, Query(min_length=1)],
    test: Annotated[str, Query(min_length=1)],
) -> queries.DriftCheckDetail:
    if window_end.utcoffset() is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "window_end needs a UTC offset, e.g. 2026-10-14T00:00:00Z")
    try:
        return queries.drift_check(engine, spec.name, window_end=window_end, column=column, test=test)
    except queries.NotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error


@router.get("/models/{model_name}/volume")
def prediction_volume(spec: ReadableModel, engine: WarehouseDep, days: Days = 30) -> list[queries.DailyVolume]:
    return queries.prediction_volume(engine, spec.name, days=days)


@router.get("/models/{model_name}/volume/checks")
def volume_checks(spec: ReadableModel, engine: WarehouseDep, days: Days = 60) -> list[queries.VolumeDay]:
    """The daily volume and freshness verdicts (`/volume` is the nightly job's own per-day counts)."""
    return queries.volume_checks(engine, spec.name, days=days)


@router.get("/models/{model_name}/performance")
def performance(spec: ReadableModel, engine: WarehouseDep, days: Days = 60) -> queries.PerformanceHistory:
    return queries.performance(engine, spec.name, days=days)


@router.get("/models/{model_name}/versions")
def versions(spec: ReadableModel, engine: WarehouseDep) -> list[queries.VersionRow]:
    return queries.versions(engine, spec.name)


@router.get("/models/{model_name}/alias-history")
def alias_history(spec: ReadableModel, engine: WarehouseDep) -> list[queries.AliasEvent]:
    return queries.alias_history(engine, spec.name)


@router.get("/models/{model_name}/promotions")
def promotion_decisions(spec: ReadableModel, engine: WarehouseDep) -> list[queries.PromotionDecision]:
    return queries.promotion_decisions(engine, spec.name)


@router.get("/models/{model_name}/incidents")
def incidents(spec: ReadableModel, engine: WarehouseDep) -> list[queries.Incident]:
    return queries.incidents(engine, spec.name)


@router.get("/models/{model_name}/releases")
def releases(spec: ReadableModel, engine: WarehouseDep) -> queries.ReleaseHistory:
    """The release under way or the latest (a canary's arms and ramp, or a guard), the ones before it, and the latest looks."""
    return queries.release_history(engine, spec.name)


@router.get("/models/{model_name}/drills/latest")
def latest_drill(spec: ReadableModel, engine: WarehouseDep) -> queries.ChaosDrill | None:
    """The last chaos drill of the model's monitors; null before the first one (trigger <model>_chaos_drill)."""
    return queries.latest_drill(engine, spec.name)
