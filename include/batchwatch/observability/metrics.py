"""Prometheus metrics built from warehouse state at scrape time.

Nothing is counted in process memory: every scrape reads the warehouse, so every API-server worker
(and a restarted one) answers the same, and a number on a Grafana board is the number in the tables.

Gauges (labels in braces):

- `batchwatch_drift_window_end_timestamp_seconds{model}`: end of the latest checked drift window.
- `batchwatch_drift_verdict{model,column,test,verdict}`: per check of that window, 1 for its verdict
  and 0 for the other two (`drifted`, `ok`, `insufficient_data`), so `== 1` selects a state.
- `batchwatch_drift_effect_size{model,column,test}`, `batchwatch_drift_threshold{...}` and
  `batchwatch_drift_p_adjusted{...}` (BH-adjusted p): the numbers behind each verdict, where stored.
- `batchwatch_open_incidents{model,kind}`: open incidents per kind (`drift`, `performance`, `volume`),
  0 for a kind with none (one open incident per model and kind); `sum by (model)` for all kinds.
- `batchwatch_performance{model,role,source,metric}` (source `realized` or `estimated`): each figure of
  the latest day of that source and role in `performance_daily`, as the version that scored the day
  measured it; `batchwatch_performance_lower{...}` and `batchwatch_performance_upper{...}` bound its
  confidence interval. A figure or bound stored as NULL (undefined that day) has no sample. Realized
  figures wait for labels to mature, so their day is older than the estimate's and may be another
  version's: `batchwatch_performance_day_timestamp_seconds{model,role,source}` is the UTC midnight
  that starts that day and `batchwatch_performance_version{model,role,source}` the version that scored it.
- `batchwatch_volume_rows{model}`, `batchwatch_volume_expected_rows{model}` (the median of the same
  weekday in the trailing weeks) and `batchwatch_volume_late_ratio{model}` (share of the day's rows that
  arrived after the nightly run scored it) of the latest day in `volume_daily`, where stored;
  `batchwatch_volume_verdict{model,verdict}`: 1 for that day's verdict, 0 for the others (`ok`, `low`,
  `high`, `missing`, `late`, `insufficient_history`).
- `batchwatch_last_success_timestamp_seconds{model,job}`: when the warehouse last received the job's
  committed output. `predict`: the newest `scored_at` of the latest scored day (looked for within the
  last `days` days); `drift`: the newest `checked_at`; `retrain`: the newest promotion decision
  (`promoted`, `forced`, `rejected` or `canary_started` in `model_events`; a retrain that reproduces the champion
  records nothing); `performance`: the newest `computed_at` in `performance_daily`; `volume`: the
  newest `checked_at` in `volume_daily`. Taken from the warehouse rather than Airflow's metadata
  database because the output is what users depend on (a run that succeeded and wrote nothing is no
  success for them), the CLI and every warehouse reader see the same, and Airflow exports its own
  DAG-run metrics.
- `batchwatch_rows_scored{model,role,ds}` and `batchwatch_rows_rejected{model,ds}`: per day of the
  last `days` days up to today (role `champion` or `shadow`); a day with predictions and no rejects
  reports 0. On PostgreSQL a day's partition is counted once per process and identity (see `_scored`).
- `batchwatch_model_version{model,alias}`: the version each alias (`champion`, `challenger`) points at.
- `batchwatch_release_active{model,kind,status}`: 1 while a release is under way (`canary` or `guard`; status
  `running` or `awaiting_approval`), absent otherwise; `batchwatch_canary_share{model}`: the share of entities
  the canary's challenger serves (0 when none is under way), so a dashboard plots the ramp.
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

from batchwatch.monitoring import volume as volume_check
from batchwatch.monitoring.drift import DRIFTED, INSUFFICIENT, OK
from batchwatch.monitoring.incidents import KINDS, day_window
from batchwatch.warehouse import partition_name, utc_timestamp
from batchwatch.warehouse.schema import (
    alerts,
    drift_results,
    model_aliases,
    model_events,
    performance_daily,
    predictions,
    rejected_rows,
    releases,
    volume_daily,
)

VERDICTS = (DRIFTED, OK, INSUFFICIENT)
VOLUME_VERDICTS = (
    volume_check.OK, volume_check.LOW, volume_check.HIGH, volume_check.MISSING, volume_check.LATE, volume_check.INSUFFICIENT,
)
RETRAIN_DECISIONS = ("promoted", "forced", "rejected", "canary_started")
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
    performance: GaugeMetricFamily
    performance_lower: GaugeMetricFamily
    performance_upper: GaugeMetricFamily
    performance_day: GaugeMetricFamily
    performance_version: GaugeMetricFamily
    volume_rows: GaugeMetricFamily
    volume_expected_rows: GaugeMetricFamily
    volume_late_ratio: GaugeMetricFamily
    volume_verdict: GaugeMetricFamily
    release_active: GaugeMetricFamily
    canary_share: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _Families:
        check = ["model", "column", "test"]
        figure = ["model", "role", "source", "metric"]
        day = ["model", "role", "source"]
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
            open_incidents=GaugeMetricFamily(
                "batchwatch_open_incidents", "Open incidents per kind (drift, performance, volume).", labels=["model", "kind"]
            ),
            last_success=GaugeMetricFamily(
                "batchwatch_last_success_timestamp_seconds",
                "When the warehouse last received the job's committed output (Unix seconds): job is predict, drift, retrain, performance"
                " or volume.",
                labels=["model", "job"],
            ),
            rows_scored=GaugeMetricFamily("batchwatch_rows_scored", "Rows scored per day and role.", labels=["model", "role", "ds"]),
            rows_rejected=GaugeMetricFamily("batchwatch_rows_rejected", "Rows rejected by validation per day.", labels=["model", "ds"]),
            model_version=GaugeMetricFamily("batchwatch_model_version", "Version an alias points at.", labels=["model", "alias"]),
            performance=GaugeMetricFamily(
                "batchwatch_performance", "Each performance figure of the latest day of its source (realized or estimated) and role.",
                labels=figure,
            ),
            performance_lower=GaugeMetricFamily(
                "batchwatch_performance_lower", "Lower bound of the confidence interval of batchwatch_performance.", labels=figure
            ),
            performance_upper=GaugeMetricFamily(
                "batchwatch_performance_upper", "Upper bound of the confidence interval of batchwatch_performance.", labels=figure
            ),
            performance_day=GaugeMetricFamily(
                "batchwatch_performance_day_timestamp_seconds", "UTC midnight that starts the day batchwatch_performance reports (Unix seconds).",
                labels=day,
            ),
            performance_version=GaugeMetricFamily(
                "batchwatch_performance_version", "Version that scored the day batchwatch_performance reports.", labels=day
            ),
            volume_rows=GaugeMetricFamily("batchwatch_volume_rows", "Source rows of the latest day the volume check judged.", labels=["model"]),
            volume_expected_rows=GaugeMetricFamily(
                "batchwatch_volume_expected_rows", "Median rows of the same weekday in the trailing weeks, for the latest judged day.",
                labels=["model"],
            ),
            volume_late_ratio=GaugeMetricFamily(
                "batchwatch_volume_late_ratio", "Share of the latest judged day's rows that arrived after the nightly run scored it.",
                labels=["model"],
            ),
            volume_verdict=GaugeMetricFamily(
                "batchwatch_volume_verdict", "Volume verdict of the latest judged day: 1 for its verdict, 0 for the others.",
                labels=["model", "verdict"],
            ),
            release_active=GaugeMetricFamily(
                "batchwatch_release_active", "1 while a canary or a guard is under way, by its status.", labels=["model", "kind", "status"]
            ),
            canary_share=GaugeMetricFamily("batchwatch_canary_share", "Share of entities the canary's challenger serves now.", labels=["model"]),
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


def _rows(connection: Connection, model: str, since: date, until: date, families: _Families) -> None:
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
    share = 0.0
    for kind, status, step, plan in connection.execute(
        sa.select(releases.c.kind, releases.c.status, releases.c.step, releases.c.plan)
        .where(releases.c.model_name == model, releases.c.status.in_(("running", "awaiting_approval")))
    ):
        families.release_active.add_metric([model, kind, status], 1.0)
        if kind == "canary":
            share = float(plan["canary"]["steps"][step])
    families.canary_share.add_metric([model], share)


def _incidents(connection: Connection, model: str, families: _Families) -> None:
    """Every kind has a sample, 0 when none is open, so an alert rule on it sees a resolved incident as 0, not as absent."""
    open_by_kind = dict(
        connection.execute(
            sa.select(alerts.c.kind, sa.func.count()).where(alerts.c.model_name == model, alerts.c.status == "open").group_by(alerts.c.kind)
        ).all()
    )
    for kind in sorted(set(KINDS) | set(open_by_kind)):
        families.open_incidents.add_metric([model, kind], float(open_by_kind.get(kind, 0)))


def _performance(connection: Connection, model: str, families: _Families) -> None:
    """The figures of the latest day per role and source, and the newest computed_at, in one query whatever the number of metrics.

    The grouping reads each of the model's stored rows once (about 15,000 a year with two roles); the newest
    computed_at comes from the same pass, since a rerun of an older day is as much the job's output as the latest day.
    """
    figures = performance_daily.c
    latest = (
        sa.select(figures.role, figures.source, sa.func.max(figures.ds).label("ds"), sa.func.max(figures.computed_at).label("computed_at"))
        .where(figures.model_name == model)
        .group_by(figures.role, figures.source)
        .subquery()
    )
    rows = connection.execute(
        sa.select(
            figures.role, figures.source, figures.ds, figures.model_version, figures.metric, figures.value, figures.lower, figures.upper,
            latest.c.computed_at,
        )
        .join(latest, sa.and_(figures.role == latest.c.role, figures.source == latest.c.source, figures.ds == latest.c.ds))
        .where(figures.model_name == model)
        .order_by(figures.role, figures.source, figures.model_version.desc(), figures.metric)
    ).all()
    if not rows:
        return
    versions: dict[tuple[str, str], int] = {}
    for row in rows:
        # One version scores a role's day; were a day ever stored for two, the newer one is reported, never both under one label set.
        day = (row.role, row.source)
        if day not in versions:
            versions[day] = row.model_version
            families.performance_day.add_metric([model, *day], day_window(_day(row.ds))[0].timestamp())
            families.performance_version.add_metric([model, *day], float(row.model_version))
        elif versions[day] != row.model_version:
            continue
        labels = [model, *day, row.metric]
        for family, value in ((families.performance, row.value), (families.performance_lower, row.lower), (families.performance_upper, row.upper)):
            if value is not None:
                family.add_metric(labels, float(value))
    families.last_success.add_metric([model, "performance"], max(_seconds(row.computed_at) for row in rows))


def _volume_check(connection: Connection, model: str, families: _Families) -> None:
    """The latest judged day's figures and verdict; the newest check may also have rewritten earlier days' late rows."""
    checks = volume_daily.c
    newest_check = sa.select(sa.func.max(checks.checked_at)).where(checks.model_name == model).scalar_subquery()
    day = connection.execute(
        sa.select(checks.rows, checks.expected_rows, checks.late_share, checks.verdict, newest_check.label("newest_check"))
        .where(checks.model_name == model)
        .order_by(checks.ds.desc())
        .limit(1)
    ).first()
    if day is None:
        return
    families.volume_rows.add_metric([model], float(day.rows))
    for family, value in ((families.volume_expected_rows, day.expected_rows), (families.volume_late_ratio, day.late_share)):
        if value is not None:
            family.add_metric([model], float(value))
    for verdict in VOLUME_VERDICTS:
        families.volume_verdict.add_metric([model, verdict], 1.0 if day.verdict == verdict else 0.0)
    families.last_success.add_metric([model, "volume"], _seconds(day.newest_check))


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
                _rows(connection, model, since, today, families)
                _registry(connection, model, families)
                _incidents(connection, model, families)
                _performance(connection, model, families)
                _volume_check(connection, model, families)
        _forget_partitions()
        yield from families


def metrics_registry(engine: Engine, models: Sequence[str], *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> CollectorRegistry:
    """A fresh registry holding only the warehouse gauges of `models` (the ones the caller may read)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WarehouseCollector(engine, models, days=days, now=now))
    return registry
