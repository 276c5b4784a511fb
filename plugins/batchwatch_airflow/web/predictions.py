"""Served predictions: one entity's latest champion prediction, and a small batch lookup.

Read-only over the `predictions` table (nothing is scored on request), behind Airflow's
authentication and the model's DAG permissions (`ReadableModel`), with a per-user rate limit that
answers 429 and `Retry-After` (see `ratelimit`). Every lookup, valid or not, spends one token.

    GET  /api/models/{model_name}/predictions/{entity_id}
    GET  /api/models/{model_name}/predictions?entity_id=a&entity_id=b     (at most 100 ids)
    POST /api/models/{model_name}/predictions  {"entity_ids": ["a", "b"]}  (the same, for long ids
                                                                           and ids with a "/")
"""

from __future__ import annotations

import threading
from typing import Annotated

from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.configuration import conf
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from batchwatch import serving
from batchwatch_airflow.web.ratelimit import DEFAULT_BURST, DEFAULT_PER_SECOND, TokenBucket
from batchwatch_airflow.web.security import ReadableModel, WarehouseDep

router = APIRouter(tags=["predictions"])
_creating = threading.Lock()


class BatchLookup(BaseModel):
    entity_ids: list[str] = Field(description=f"between 1 and {serving.MAX_BATCH} entity ids")


class BatchAnswer(BaseModel):
    model_name: str
    predictions: list[serving.ServedPrediction] = Field(description="in the order asked, ids without a prediction left out")
    missing: list[str] = Field(description="ids with no served prediction")


def prediction_bucket(request: Request) -> TokenBucket:
    """The app's bucket, made on first use from Airflow's configuration."""
    state = request.app.state
    with _creating:
        if getattr(state, "batchwatch_prediction_bucket", None) is None:
            state.batchwatch_prediction_bucket = TokenBucket(
                per_second=conf.getfloat("batchwatch", "predictions_per_second", fallback=DEFAULT_PER_SECOND),
                burst=conf.getint("batchwatch", "predictions_burst", fallback=DEFAULT_BURST),
            )
    return state.batchwatch_prediction_bucket


def rate_limited(user: GetUserDep, bucket: Annotated[TokenBucket, Depends(prediction_bucket)]) -> None:
    wait = bucket.take(user.get_id())
    if wait:
        retry_after = TokenBucket.retry_after(wait)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many prediction lookups: {bucket.burst} at once, then {bucket.per_second:g} a second; retry in {retry_after} s",
            headers={"Retry-After": retry_after},
        )


RateLimited = Annotated[None, Depends(rate_limited)]


def _batch(spec_name: str, engine: WarehouseDep, entity_ids: list[str]) -> BatchAnswer:
    try:
        found = serving.latest_predictions(engine, spec_name, entity_ids)
    except serving.InvalidLookup as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    missing = [entity_id for entity_id in dict.fromkeys(entity_ids) if entity_id not in found]
    return BatchAnswer(model_name=spec_name, predictions=list(found.values()), missing=missing)


@router.get("/api/models/{model_name}/predictions/{entity_id}")
def get_prediction(spec: ReadableModel, entity_id: str, engine: WarehouseDep, _: RateLimited) -> serving.ServedPrediction:
    """One entity's latest served prediction; 404 when the model never scored it."""
    try:
        found = serving.latest_prediction(engine, spec.name, entity_id)
    except serving.InvalidLookup as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    if found is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"{spec.name} has no served prediction for entity {entity_id!r}: the nightly job has not scored it "
            "(not yet arrived, or rejected by validation: see rejected_rows)",
        )
    return found


@router.get("/api/models/{model_name}/predictions")
def get_predictions(
    spec: ReadableModel,
    engine: WarehouseDep,
    _: RateLimited,
    entity_id: Annotated[list[str] | None, Query(description=f"repeat for each id, at most {serving.MAX_BATCH}")] = None,
) -> BatchAnswer:
    """The latest served prediction of each id given as `?entity_id=...`."""
    return _batch(spec.name, engine, entity_id or [])


@router.post("/api/models/{model_name}/predictions")
def post_predictions(spec: ReadableModel, engine: WarehouseDep, _: RateLimited, lookup: BatchLookup) -> BatchAnswer:
    """The same batch lookup with the ids in a JSON body, for ids too long for a URL."""
    return _batch(spec.name, engine, lookup.entity_ids)
