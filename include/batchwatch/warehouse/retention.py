"""Partition retention: a model's predictions of days older than its retention are dropped, with their rejects.

On PostgreSQL a day is a partition, so a day goes by DETACH and DROP: no row-by-row delete, no bloat,
and under the same advisory lock and the session's lock_timeout as the nightly swap, so retention never races a
publish. On SQLite the rows are deleted. The day's summary in daily_scoring stays: the page's history
of volumes outlives the rows. What was dropped is returned for the caller to audit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from batchwatch.warehouse.partitions import detach_partition
from batchwatch.warehouse.write import SWAP_LOCK


@dataclass
class Dropped:
    model_name: str
    before: date  # days before this one were dropped
    days: list[date] = field(default_factory=list)
    predictions: int = 0  # rows dropped
    rejected_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "before": self.before.isoformat(), "days": [d.isoformat() for d in self.days],
                "predictions": self.predictions, "rejected_rows": self.rejected_rows}


def _partition_days(connection: sa.Connection, model_name: str, before: date) -> list[tuple[str, date]]:
    """The model's partitions of `predictions` for days before `before`, by name (predictions_<model>_<yyyymmdd>)."""
    pattern = re.compile(rf"^predictions_{re.escape(model_name)}_(\d{{8}})$")
    names = connection.execute(
        sa.text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'predictions'::regclass")
    ).scalars()
    found = []
    for name in names:
        match = pattern.match(name)
        if match and (day := datetime.strptime(match.group(1), "%Y%m%d").date()) < before:
            found.append((name, day))
    return sorted(found, key=lambda pair: pair[1])


def drop_before(connection: sa.Connection, model_name: str, before: date) -> Dropped:
    """Drop `model_name`'s predictions and rejects of every day before `before`, inside the caller's transaction."""
    dropped = Dropped(model_name, before)
    params = {"m": model_name, "b": before}
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SWAP_LOCK})
        for name, day in _partition_days(connection, model_name, before):
            dropped.predictions += connection.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one()
            detach_partition(connection.connection.driver_connection, name)
            connection.execute(sa.text(f'DROP TABLE "{name}"'))
            dropped.days.append(day)
    else:
        days = connection.execute(
            sa.text("SELECT DISTINCT ds FROM predictions WHERE model_name = :m AND ds < :b ORDER BY ds"), params
        ).scalars().all()
        dropped.days = [d if isinstance(d, date) else date.fromisoformat(str(d)) for d in days]
        dropped.predictions = connection.execute(sa.text("DELETE FROM predictions WHERE model_name = :m AND ds < :b"), params).rowcount
    dropped.rejected_rows = connection.execute(sa.text("DELETE FROM rejected_rows WHERE model_name = :m AND ds < :b"), params).rowcount
    return dropped
