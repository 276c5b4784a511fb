"""Prometheus metrics built from warehouse state at scrape time.

Nothing is counted in process memory: every scrape reads the warehouse, so every API-server worker
(and a restarted one) answers the same, and a number on a Grafana board is the number in the tables.

Gauges (labels in braces):

- `batchwatch_drift_window_end_timestamp_seconds{model}`: end of the latest checked drift window.
- `batchwatch_drift_verdict{model,column,test,verdict}`: per check of that window, 1 for its verdict
  and 0 for the other two (`drifted`, `ok`, `insufficient_data`), so `== 1` selects a state.
- `batchwatch_drift_effect_size{model,column,test}`, `batchwatch_drift_threshold{...}` and
  `batchwatch_drift_p_adjusted{...}` (BH-adjusted p): the numbers behind each verdict, where stored.
- `batchwatch_open_incidents{model}`: open drift incidents (0 or 1 today: one open incident per model).
- `batchwatch_last_success_timestamp_seconds{model,job}`: when the warehouse last received the job's
  committed output. `predict`: the newest `scored_at` of the latest scored day (looked for within the
  last `days` days); `drift`: the newest `checked_at`; `retrain`: the newest promotion decision
  (`promoted`, `forced` or `rejected` in `model_events`; a retrain that reproduces the champion
  records nothing). Taken from the warehouse rather than Airflow's metadata database because the
  output is what users depend on (a run that succeeded and wrote nothing is no success for them),
  the CLI and every warehouse reader see the same, and Airflow exports its own DAG-run metrics.
- `batchwatch_rows_scored{model,role,ds}` and `batchwatch_rows_rejected{model,ds}`: per day of the
  last `days` days up to today (role `champion` or `shadow`); a day with predictions and no rejects
  reports 0. On PostgreSQL a day's partition is counted once per process and identity (see `_scored`).
- `batchwatch_model_version{model,alias}`: the version each alias (`champion`, `challenger`) points at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection, Engine

from batchwatch.monitoring.drift import DRIFTED, INSUFFICIENT, OK
from batchwatch.warehouse import partition_name, utc_timestamp
from batchwatch.warehouse.schema import alerts, drift_results, model_aliases, model_events, predictions, rejected_rows

VERDICTS = (DRIFTED, OK, INSUFFICIENT)
RETRAIN_DECISIONS = ("promoted", "forced", "rejected")
DEFAULT_DAYS = 7


@dataclass(frozen=True)
class _Families:
    """One family per gauge, filled model by model."""

    window_end: GaugeMetricFamily
    verdict: GaugeMetricFamily
    effect_size: GaugeMetricFamily
    threshold: GaugeMetricFamily
    p_adjusted: GaugeMetricFamily
    open_incidents: GaugeMetricFamily
    last_success: GaugeMetricFamily
    rows_scored: GaugeMetricFamily
    rows_rejected: GaugeMetricFamily
    model_version: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _Families:
        check = ["model", "column", "test"]
        return cls(
            window_end=GaugeMetricFamily(
                "batchwatch_drift_window_end_timestamp_seconds", "End of the latest checked drift window (Unix seconds).", labels=["model"]
            ),
            verdict=GaugeMetricFamily(
                "batchwatch_drift_verdict", "Verdict of each check in the latest drift window: 1 for its verdict, 0 for the others.",
                labels=[*check, "verdict"],
            ),
            effect_size=GaugeMetricFamily("batchwatch_drift_effect_size", "Effect size of each test in the latest drift window.", labels=check),
            threshold=GaugeMetricFamily(
                "batchwatch_drift_threshold", "Effect-size threshold over which a significant test counts as drift.", labels=check
            ),
            p_adjusted=GaugeMetricFamily(
                "batchwatch_drift_p_adjusted", "Benjamini-Hochberg adjusted p-value of each test in the latest drift window.", labels=check
            ),
            open_incidents=GaugeMetricFamily("batchwatch_open_incidents", "Open drift incidents.", labels=["model"]),
            last_success=GaugeMetricFamily(
                "batchwatch_last_success_timestamp_seconds",
                "When the warehouse last received the job's committed output (Unix seconds): job is predict, drift or retrain.",
                labels=["model", "job"],
            ),
            rows_scored=GaugeMetricFamily("batchwatch_rows_scored", "Rows scored per day and role.", labels=["model", "role", "ds"]),
            rows_rejected=GaugeMetricFamily("batchwatch_rows_rejected", "Rows rejected by validation per day.", labels=["model", "ds"]),
            model_version=GaugeMetricFamily("batchwatch_model_version", "Version an alias points at.", labels=["model", "alias"]),
        )

    def __iter__(self) -> Iterator[Metric]:
        return iter(vars(self).values())


def _seconds(value: Any) -> float:
    return utc_timestamp(value).timestamp()


def _drift(connection: Connection, model: str, families: _Families) -> None:
    newest = sa.select(sa.func.max(drift_results.c.window_end)).where(drift_results.c.model_name == model).scalar_subquery()
    latest = connection.execute(sa.select(newest)).scalar()
    if latest is None:
        return
    families.window_end.add_metric([model], _seconds(latest))
    # The window is compared in SQL: SQLite hands timestamps back as text that would not bind again.
    rows = connection.execute(
        sa.select(
            drift_results.c.column_name, drift_results.c.test, drift_results.c.verdict, drift_results.c.effect_size,
            drift_results.c.threshold, drift_results.c.p_adjusted,
        )
        .where(drift_results.c.model_name == model, drift_results.c.window_end == newest)
        .order_by(drift_results.c.column_name, drift_results.c.test)
    )
    for row in rows:
        labels = [model, row.column_name, row.test]
        for verdict in VERDICTS:
            families.verdict.add_metric([*labels, verdict], 1.0 if row.verdict == verdict else 0.0)
        for family, value in ((families.effect_size, row.effect_size), (families.threshold, row.threshold), (families.p_adjusted, row.p_adjusted)):
            if value is not None:
                family.add_metric(labels, float(value))
    checked = connection.execute(sa.select(sa.func.max(drift_results.c.checked_at)).where(drift_results.c.model_name == model)).scalar()
    families.last_success.add_metric([model, "drift"], _seconds(checked))


# Counts of one PostgreSQL partition of `predictions`, by (oid, xmin of its catalog row). The nightly
# writer replaces a day by swapping in a new table, so a partition's rows never change after it is
# attached: its counts are exact for as long as that identity exists, in every worker.
_PartitionCounts = list[tuple[date, str, int, Any]]
_PARTITION_COUNTS: dict[tuple[int, str], _PartitionCounts] = {}
_PARTITION_LOCK = threading.Lock()


def _count_scored(connection: Connection, model: str, since: date, until: date) -> _PartitionCounts:
    """(ds, role, rows, newest scored_at) per day and role of [since, until]."""
    rows = connection.execute(
        sa.select(predictions.c.ds, predictions.c.role, sa.func.count(), sa.func.max(predictions.c.scored_at))
        .where(predictions.c.model_name == model, predictions.c.ds >= since, predictions.c.ds <= until)
        .group_by(predictions.c.ds, predictions.c.role)
    ).all()
    return [(_day(ds), role, count, at) for ds, role, count, at in rows]


def _scored(connection: Connection, model: str, since: date, until: date) -> _PartitionCounts:
    """The day counts; on PostgreSQL each day's partition is counted once per process, not per scrape
    (a million rows a day would otherwise cost a second per scrape)."""
    if connection.dialect.name != "postgresql":
        return _count_scored(connection, model, since, until)
    names = {partition_name(model, since + timedelta(days=n)): since + timedelta(days=n) for n in range((until - since).days + 1)}
    partitions = connection.execute(
        sa.text(
            "SELECT c.relname, c.oid::bigint, c.xmin::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'predictions'::regclass AND c.relname = ANY(:names)"
        ),
        {"names": list(names)},
    ).all()
    counts: _PartitionCounts = []
    for name, oid, xmin in partitions:
        with _PARTITION_LOCK:
            known = _PARTITION_COUNTS.get((oid, xmin))
        if known is None:
            known = _count_scored(connection, model, names[name], names[name])
            with _PARTITION_LOCK:
                _PARTITION_COUNTS[(oid, xmin)] = known
        counts.extend(known)
    return counts


def _forget_partitions(keep: int = 1024) -> None:
    """Bound the cache: partitions past the scraped days are not asked for again."""
    with _PARTITION_LOCK:
        for key in list(_PARTITION_COUNTS)[: max(0, len(_PARTITION_COUNTS) - keep)]:
            del _PARTITION_COUNTS[key]


def _volume(connection: Connection, model: str, since: date, until: date, families: _Families) -> None:
    scored = _scored(connection, model, since, until)
    rejected = {
        _day(ds): count
        for ds, count in connection.execute(
            sa.select(rejected_rows.c.ds, sa.func.count())
            .where(rejected_rows.c.model_name == model, rejected_rows.c.ds >= since, rejected_rows.c.ds <= until)
            .group_by(rejected_rows.c.ds)
        )
    }
    for ds, role, count, _ in sorted(scored, key=lambda row: (row[0], row[1])):
        families.rows_scored.add_metric([model, role, ds.isoformat()], float(count))
    for day in sorted({ds for ds, *_ in scored} | set(rejected)):
        families.rows_rejected.add_metric([model, day.isoformat()], float(rejected.get(day, 0)))
    if scored:
        latest_day = max(ds for ds, *_ in scored)
        last = max(utc_timestamp(at) for ds, _, _, at in scored if ds == latest_day)
        families.last_success.add_metric([model, "predict"], last.timestamp())


def _day(value: Any) -> date:
    """SQLite may hand dates back as text."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _registry(connection: Connection, model: str, families: _Families) -> None:
    for alias, version in connection.execute(
        sa.select(model_aliases.c.alias, model_aliases.c.version).where(model_aliases.c.model_name == model).order_by(model_aliases.c.alias)
    ):
        families.model_version.add_metric([model, alias], float(version))
    decided = connection.execute(
        sa.select(sa.func.max(model_events.c.created_at)).where(model_events.c.model_name == model, model_events.c.event.in_(RETRAIN_DECISIONS))
    ).scalar()
    if decided is not None:
        families.last_success.add_metric([model, "retrain"], _seconds(decided))
    open_count = connection.execute(
        sa.select(sa.func.count()).select_from(alerts).where(alerts.c.model_name == model, alerts.c.status == "open")
    ).scalar_one()
    families.open_incidents.add_metric([model], float(open_count))


class WarehouseCollector(Collector):
    """Reads the gauges of `models` from the warehouse each time it is collected."""

    def __init__(self, engine: Engine, models: Sequence[str], *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> None:
        if days < 1:
            raise ValueError(f"days must be at least 1 (the latest day alone), got {days}")
        self.engine = engine
        self.models = list(dict.fromkeys(models))
        self.days = days
        self.now = now

    def collect(self) -> Iterator[Metric]:
        families = _Families.empty()
        today = (self.now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
        since = today - timedelta(days=self.days - 1)
        with self.engine.connect() as connection:
            for model in self.models:
                _drift(connection, model, families)
                _volume(connection, model, since, today, families)
                _registry(connection, model, families)
        _forget_partitions()
        yield from families


def metrics_registry(engine: Engine, models: Sequence[str], *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> CollectorRegistry:
    """A fresh registry holding only the warehouse gauges of `models` (the ones the caller may read)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WarehouseCollector(engine, models, days=days, now=now))
    return registry
