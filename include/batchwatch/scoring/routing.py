"""Which model scores which rows, and whose prediction is served.

The champion serves every entity and a challenger, when there is one, scores every row in shadow, so
it can be judged on the same rows. During a canary the challenger's prediction is the one served for
the treatment arm: the entities whose salted hash falls in the first `share` of the buckets
(hashing.in_share), so an entity keeps its arm from day to day, and a larger share only adds entities.
Both models still score every row; each row records its entity's arm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchwatch.hashing import in_share
from batchwatch.registry import LoadedModel
from batchwatch.warehouse.schema import release_steps, releases

# Which entities a model's prediction is served for: every one, an arm's, or none (shadow only).
Serves = Literal["all", "control", "treatment", "none"]


@dataclass(frozen=True)
class Arms:
    """The canary step in force on a scored day."""

    release_id: int
    version: int  # the challenger under test
    baseline_version: int  # the champion it is compared with: a rerun of the day serves these two, whoever is champion now
    salt: str
    share: float  # of entities in the treatment arm

    def treatment(self, entity_ids: list[str]) -> np.ndarray:
        return in_share(entity_ids, self.salt, self.share)


@dataclass(frozen=True)
class Route:
    role: str  # as written to predictions.role
    model: LoadedModel
    serves: Serves


def arms_on(connection: Connection, model_name: str, ds: date) -> Arms | None:
    """The canary step whose days include `ds`, if any: a rerun of a past day draws the arms that day had."""
    row = connection.execute(
        sa.select(releases.c.id, releases.c.version, releases.c.baseline_version, releases.c.salt, release_steps.c.share)
        .join(release_steps, release_steps.c.release_id == releases.c.id)
        .where(
            releases.c.model_name == model_name, releases.c.kind == "canary", release_steps.c.effective_from <= ds,
            sa.or_(release_steps.c.effective_until.is_(None), release_steps.c.effective_until > ds),
        )
        .order_by(release_steps.c.effective_from.desc(), releases.c.id.desc())
        .limit(1)
    ).first()
    if row is None or row.share <= 0:
        return None
    return Arms(row.id, row.version, row.baseline_version, row.salt, row.share)


def plan_routes(champion: LoadedModel, challenger: LoadedModel | None, arms: Arms | None = None) -> list[Route]:
    """The champion serves (the control arm during a canary); a challenger scores in shadow and serves the treatment arm."""
    if challenger is None:
        return [Route("champion", champion, "all")]
    if arms is None:
        return [Route("champion", champion, "all"), Route("shadow", challenger, "none")]
    return [Route("champion", champion, "control"), Route("shadow", challenger, "treatment")]
