"""The nightly run's retention step: drop the model's predictions older than `retention.predictions_days`, audited."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.spec import ModelSpec
from batchwatch.warehouse.retention import drop_before

log = logging.getLogger(__name__)


def apply_retention(engine: Engine, spec: ModelSpec, *, scored_day: date, actor: str) -> dict[str, Any]:
    """Keep the `retention.predictions_days` scored days up to `scored_day`; drop the older ones and their rejects.

    The drop and its `retention` event in model_events commit together, so nothing goes unaudited. Idempotent:
    a rerun finds nothing left to drop and records nothing.
    """
    days = spec.retention.predictions_days
    if days is None:
        return {"model_name": spec.name, "dropped": None, "reason": "retention.predictions_days is not set: every day is kept"}
    before = scored_day - timedelta(days=days - 1)
    with engine.begin() as connection:
        dropped = drop_before(connection, spec.name, before)
        if dropped.days or dropped.rejected_rows:
            reason = (f"retention.predictions_days {days}: dropped {len(dropped.days)} scored days before {before} "
                      f"({dropped.predictions:,} predictions, {dropped.rejected_rows:,} quarantined rows)")
            registry.record_event(connection, spec.name, "retention", version=None, previous_version=None, reason=reason, actor=actor,
                                  details=dropped.to_dict())
            log.info("%s: %s", spec.name, reason)
    return {"model_name": spec.name, "kept_days": days, "dropped": dropped.to_dict()}
