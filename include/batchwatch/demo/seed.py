"""Fill a warehouse with simulated history for the demo, the tests and the benchmarks."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa

from batchwatch import warehouse
from batchwatch.demo import simulate


def day_start(text: str) -> datetime:
    """A YYYY-MM-DD day as its UTC midnight."""
    return datetime.combine(date.fromisoformat(text), time(), tzinfo=timezone.utc)


def simulate_into(
    engine: sa.Engine,
    *,
    start: datetime,
    end: datetime,
    rows_per_day: int,
    seed: int = 7,
    malformed_rate: float = 0.0,
    labels_as_of: datetime | None = None,
    scenarios: tuple[simulate.Scenario, ...] = (),
) -> int:
    """Simulate [start, end) into `transactions`, and the outcomes observed by `labels_as_of`."""
    batch = simulate.simulate(start, end, rows_per_day=rows_per_day, seed=seed, malformed_rate=malformed_rate, scenarios=scenarios)
    warehouse.load_frame(engine, "transactions", batch.transactions)
    outcomes = batch.outcomes
    if labels_as_of is not None:
        outcomes = outcomes[outcomes["observed_at"] <= labels_as_of]
    warehouse.load_frame(engine, "outcomes", outcomes)
    return len(batch.transactions)


def default_demo_window(today: date | None = None, history_days: int = 21, demo_days: int = 7) -> tuple[datetime, datetime, datetime]:
    """(history start, first demo day, today) at UTC midnight: the demo scores the last `demo_days` full days."""
    end = day_start((today or datetime.now(timezone.utc).date()).isoformat())
    first_demo = end - timedelta(days=demo_days)
    return first_demo - timedelta(days=history_days), first_demo, end
