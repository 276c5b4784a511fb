"""Serve the stored predictions: one entity's latest served prediction, or a small batch of them.

Batch first, serve stored results on request: nothing is scored here. A served prediction is the one
acted on, from the latest day the entity was scored: the champion's, or during a canary the
challenger's for an entity in the treatment arm (the shadow's other rows only measure the challenger).
The lookup walks the predictions' unique index, whose leading columns (model_name, entity_id) find an
entity's rows without reading a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchwatch.data.validation import MAX_KEY_LENGTH
from batchwatch.errors import PermanentError
from batchwatch.warehouse import utc_timestamp
from batchwatch.warehouse.schema import predictions

MAX_BATCH = 100
# The rows that were acted on, as the served_predictions view selects them.
SERVED = sa.or_(
    sa.and_(predictions.c.role == "champion", sa.or_(predictions.c.arm.is_(None), predictions.c.arm == "control")),
    sa.and_(predictions.c.role == "shadow", predictions.c.arm == "treatment"),
)


class InvalidLookup(PermanentError, ValueError):
    """A lookup that can never succeed as asked: an empty or too long id, too many ids."""


@dataclass(frozen=True)
class ServedPrediction:
    """The latest prediction served for one entity."""

    model_name: str
    entity_id: str
    score: float
    predicted_label: int
    model_version: int
    role: str
    arm: str  # control (the champion's arm; also every entity outside a canary) or treatment (the challenger's)
    ds: date
    scored_at: datetime
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ds": self.ds.isoformat(), "scored_at": self.scored_at.isoformat()}


def check_entity_id(entity_id: str) -> str:
    """The id as stored, or InvalidLookup saying why no prediction can ever have it."""
    if not entity_id or not entity_id.strip():
        raise InvalidLookup("the entity id is empty; pass the entity key the model scores (e.g. a transaction_id)")
    if len(entity_id) > MAX_KEY_LENGTH:
        raise InvalidLookup(f"the entity id has {len(entity_id)} characters; stored ids have at most {MAX_KEY_LENGTH}")
    return entity_id


def check_entity_ids(entity_ids: Sequence[str]) -> list[str]:
    """The distinct ids in their first order, each valid, of at most MAX_BATCH given."""
    if not entity_ids:
        raise InvalidLookup(f"no entity ids given; pass between 1 and {MAX_BATCH}")
    if len(entity_ids) > MAX_BATCH:
        raise InvalidLookup(f"{len(entity_ids)} entity ids given; a batch lookup takes at most {MAX_BATCH}, split the request")
    unique = list(dict.fromkeys(entity_ids))
    for position, entity_id in enumerate(unique):
        try:
            check_entity_id(entity_id)
        except InvalidLookup as error:
            raise InvalidLookup(f"entity id #{position + 1}: {error}") from None
    return unique


def _served(row: Any) -> ServedPrediction:
    ds = row.ds if isinstance(row.ds, date) else date.fromisoformat(str(row.ds))
    return ServedPrediction(
        model_name=row.model_name, entity_id=row.entity_id, score=float(row.score), predicted_label=int(row.predicted_label),
        model_version=int(row.model_version), role=row.role,
        arm=row.arm or "control", ds=ds, scored_at=utc_timestamp(row.scored_at).to_pydatetime(), run_id=row.run_id,
    )


_COLUMNS = (
    predictions.c.model_name, predictions.c.entity_id, predictions.c.score, predictions.c.predicted_label, predictions.c.model_version,
    predictions.c.role, predictions.c.arm, predictions.c.ds, predictions.c.scored_at, predictions.c.run_id,
)


def latest_prediction(engine: Engine, model_name: str, entity_id: str) -> ServedPrediction | None:
    """The prediction served on the latest day that scored `entity_id`, or None if none did."""
    query = (
        sa.select(*_COLUMNS)
        .where(predictions.c.model_name == model_name, predictions.c.entity_id == check_entity_id(entity_id), SERVED)
        .order_by(predictions.c.ds.desc(), predictions.c.scored_at.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return _served(row) if row is not None else None


def latest_predictions(engine: Engine, model_name: str, entity_ids: Sequence[str]) -> dict[str, ServedPrediction]:
    """The latest served prediction of each id that has one (ids with none are absent), in one query."""
    unique = check_entity_ids(entity_ids)
    recency = sa.func.row_number().over(
        partition_by=predictions.c.entity_id, order_by=(predictions.c.ds.desc(), predictions.c.scored_at.desc())
    ).label("recency")
    ranked = (
        sa.select(*_COLUMNS, recency)
        .where(predictions.c.model_name == model_name, predictions.c.entity_id.in_(unique), SERVED)
        .subquery()
    )
    query = sa.select(*(ranked.c[column.name] for column in _COLUMNS)).where(ranked.c.recency == 1)
    with engine.connect() as connection:
        found = {row.entity_id: _served(row) for row in connection.execute(query)}
    return {entity_id: found[entity_id] for entity_id in unique if entity_id in found}
