"""Daily performance: realized figures once a day's labels mature, an estimate from calibrated scores before.

One run judges one day (the day before its deadline): it estimates every scored day of the lookback
that has no estimate yet (and its own day again), computes realized figures for every matured day of
the lookback (so labels that arrive late update the day they belong to), records how far each
estimate was from what was realized, and updates the model's performance incident from the newest
evidence: the newest matured day's realized figures and, as an early warning labelled as estimated,
its own day's estimate.

The database does the heavy part: one query per day groups the day's predictions by distinct score
with their labelled and positive counts, so memory depends on the distinct scores of one day, never
on the number of days.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch import registry
from batchwatch.monitoring.incidents import Finding, day_window, update_incident
from batchwatch.spec import LOWER_IS_BETTER, ModelSpec, quote
from batchwatch.stats.calibration import Calibration
from batchwatch.stats.performance import Figure, ScoreGroups, estimated, realized
from batchwatch.warehouse import lock_unit

log = logging.getLogger(__name__)

REALIZED, ESTIMATED = "realized", "estimated"
# The role whose figures open incidents: the champion's. A shadow's figures are shown, never alerted on.
ALERTED_ROLE = "champion"


@dataclass(frozen=True)
class Decision:
    """What a version's figures are judged at and against: its threshold, its calibration, its validation figures."""

    threshold: float
    calibration: dict[str, Any] | None
    validation: dict[str, float]


def decision_of(connection: Connection, spec: ModelSpec, version: int) -> Decision:
    """The version's threshold and calibration (registry.threshold_of: the spec's number, or 0.5, for a version stored
    before thresholds were), and its validation figures, at that threshold, to compare days with."""
    row = connection.execute(
        sa.text("SELECT model_name, version, threshold, calibration, metrics FROM model_versions WHERE model_name = :m AND version = :v")
        .columns(calibration=sa.JSON, metrics=sa.JSON),
        {"m": spec.name, "v": version},
    ).mappings().one()
    validation = (row["metrics"] or {}).get("validation", {})
    numbers = {key: float(value) for key, value in validation.items() if isinstance(value, int | float)}
    return Decision(registry.threshold_of(row, spec), row["calibration"], numbers)


@dataclass(frozen=True)
class DayFigures:
    """One day's figures for one version and role, from one source."""

    ds: date
    version: int
    role: str
    source: str
    threshold: float
    rows_scored: int
    rows_labelled: int
    positives: int
    figures: dict[str, Figure]

    def rows(self, model_name: str, *, labels_as_of: datetime | None, run_id: str, computed_at: datetime) -> list[dict[str, Any]]:
        return [
            {"model_name": model_name, "ds": self.ds, "model_version": self.version, "role": self.role, "source": self.source,
             "metric": metric, "value": _finite(figure.value), "lower": _finite(figure.lower), "upper": _finite(figure.upper),
             "threshold": self.threshold, "rows_scored": self.rows_scored, "rows_labelled": self.rows_labelled,
             "positives": self.positives, "labels_as_of": labels_as_of, "computed_at": computed_at, "run_id": run_id}
            for metric, figure in self.figures.items()
        ]


@dataclass(frozen=True)
class Verdict:
    """How one source's figures of one day compare with the spec's limits."""

    ds: date
    source: str
    version: int
    degraded: dict[str, str] = field(default_factory=dict)  # metric -> the line saying by how much
    unjudged: tuple[str, ...] = ()  # metrics with a limit whose interval is undefined (too few labels)


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def matured(spec: ModelSpec, ds: date, as_of: datetime) -> bool:
    """Every label of the day's events is in by `as_of`: its last event plus label.delay_days have passed."""
    return day_window(ds)[1] + timedelta(days=spec.label.delay_days) <= as_of


def read_groups(connection: Connection, spec: ModelSpec, ds: date, as_of: datetime) -> dict[tuple[int, str], ScoreGroups]:
    """The day's predictions grouped by version, role and distinct score, with the labels observed by `as_of`."""
    label = spec.label
    outcomes = ".".join(map(quote, label.table.split(".")))
    if connection.dialect.name == "postgresql":
        # A day is a small slice of the labels: probe their key index instead of hashing every label ever observed
        # (bench/bench_performance_realized.py: 8.6 s a day against 17.4 s at 1M rows a day and 30M labels).
        connection.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
        connection.exec_driver_sql("SET LOCAL jit = off")
    rows = connection.execute(
        sa.text(
            f"SELECT p.model_version, p.role, p.score, COUNT(*) AS scored, COUNT(o.{quote(label.column)}) AS labelled,"
            f" COALESCE(SUM(o.{quote(label.column)}), 0) AS positives"
            f" FROM predictions p LEFT JOIN {outcomes} o ON o.{quote(label.entity_key)} = p.entity_id"
            f" AND o.{quote(label.observed_at)} <= :as_of"
            " WHERE p.model_name = :m AND p.ds = :ds GROUP BY p.model_version, p.role, p.score"
        ),
        {"m": spec.name, "ds": ds, "as_of": as_of},
    ).all()
    if not rows:
        return {}
    version = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    role = np.array([row[1] for row in rows], dtype=object)
    numbers = np.array([row[2:] for row in rows], dtype=np.float64)
    groups = {}
    for key in dict.fromkeys(zip(version.tolist(), role.tolist(), strict=True)):
        mask = (version == key[0]) & (role == key[1])
        part = numbers[mask]
        groups[key] = ScoreGroups.from_aggregates(part[:, 0], part[:, 1].astype(np.int64), part[:, 2].astype(np.int64), part[:, 3].astype(np.int64))
    return groups


def figures_of_day(
    connection: Connection, spec: ModelSpec, ds: date, as_of: datetime, *, sources: tuple[str, ...], decisions: dict[int, Decision]
) -> list[DayFigures]:
    """The day's figures per version and role, from each of `sources`."""
    settings = spec.performance
    out = []
    seed = ds.toordinal()
    for (version, role), groups in read_groups(connection, spec, ds, as_of).items():
        decision = decisions.get(version) or decision_of(connection, spec, version)
        decisions[version] = decision
        counts = {"rows_scored": groups.n_rows, "rows_labelled": groups.n_labelled, "positives": groups.n_positives}
        if REALIZED in sources:
            figures = realized(groups, decision.threshold, min_positives=settings.min_positives, samples=settings.bootstrap_samples,
                               confidence=settings.confidence, seed=seed)
            out.append(DayFigures(ds, version, role, REALIZED, decision.threshold, figures=figures, **counts))
        if ESTIMATED in sources:
            calibrated = Calibration.from_json(decision.calibration).apply(groups.scores)
            figures = estimated(groups, calibrated, decision.threshold, samples=settings.bootstrap_samples, confidence=settings.confidence,
                                seed=seed)
            out.append(DayFigures(ds, version, role, ESTIMATED, decision.threshold, figures=figures, **counts))
    return out


def write_figures(connection: Connection, spec: ModelSpec, ds: date, source: str, figures: list[DayFigures], *, labels_as_of: datetime | None,
                  run_id: str) -> None:
    """Replace the day's figures of `source` (every version and role): a rerun or late labels give the same rows as a first run would."""
    connection.execute(
        sa.text("DELETE FROM performance_daily WHERE model_name = :m AND ds = :ds AND source = :s"), {"m": spec.name, "ds": ds, "s": source}
    )
    now = datetime.now(timezone.utc)
    rows = [row for day in figures if day.source == source for row in day.rows(spec.name, labels_as_of=labels_as_of, run_id=run_id,
                                                                                     computed_at=now)]
    if rows:
        connection.execute(
            sa.text(
                "INSERT INTO performance_daily (model_name, ds, model_version, role, source, metric, value, lower, upper, threshold,"
                " rows_scored, rows_labelled, positives, labels_as_of, computed_at, run_id) VALUES (:model_name, :ds, :model_version,"
                " :role, :source, :metric, :value, :lower, :upper, :threshold, :rows_scored, :rows_labelled, :positives, :labels_as_of,"
                " :computed_at, :run_id)"
            ),
            rows,
        )


def record_estimation_error(connection: Connection, model_name: str, ds: date) -> None:
    """On the day's estimated rows: estimate minus realized, for each metric both sources have."""
    connection.execute(
        sa.text(
            "UPDATE performance_daily SET estimation_error = (SELECT performance_daily.value - r.value FROM performance_daily r"
            " WHERE r.model_name = performance_daily.model_name AND r.ds = performance_daily.ds AND r.model_version = performance_daily.model_version"
            " AND r.role = performance_daily.role AND r.metric = performance_daily.metric AND r.source = 'realized')"
            " WHERE model_name = :m AND ds = :ds AND source = 'estimated'"
        ),
        {"m": model_name, "ds": ds},
    )


def judge(spec: ModelSpec, day: DayFigures, validation: dict[str, float]) -> Verdict:
    """Degraded metrics of one day: the whole interval beyond a floor, or beyond the version's validation figure by more than max_drop.

    Decided on the confidence bound, not the point figure, so a small day's noise does not alert.
    """
    settings = spec.performance
    degraded: dict[str, str] = {}
    unjudged: list[str] = []
    limits: dict[str, list[tuple[float, str]]] = {}
    for metric, floor in settings.floors.items():
        limits.setdefault(metric, []).append((floor, f"{'ceiling' if metric in LOWER_IS_BETTER else 'floor'} {floor:g}"))
    for metric, drop in settings.max_drop.items():
        reference = validation.get(metric)
        if reference is not None and math.isfinite(reference):
            sign = 1 if metric in LOWER_IS_BETTER else -1
            what = f"v{day.version}'s validation {reference:.3f} {'+' if sign > 0 else '-'} {drop:g}"
            limits.setdefault(metric, []).append((reference + sign * drop, what))
    for metric, bounds in limits.items():
        figure = day.figures.get(metric)
        if figure is None:
            continue
        worse = metric in LOWER_IS_BETTER
        bound = figure.lower if worse else figure.upper
        if not math.isfinite(bound):
            unjudged.append(metric)
            continue
        for limit, what in bounds:
            if (bound > limit) if worse else (bound < limit):
                side = "lower bound" if worse else "upper bound"
                degraded[metric] = (
                    f"{day.source} {metric} {figure.value:.3f} [{figure.lower:.3f}, {figure.upper:.3f}] on {day.ds} ({day.role} v{day.version}, "
                    f"{day.rows_labelled if day.source == REALIZED else day.rows_scored:,} rows): {side} {bound:.3f} "
                    f"{'>' if worse else '<'} {limit:.3f} ({what})"
                )
                break
    return Verdict(day.ds, day.source, day.version, degraded, tuple(unjudged))


@dataclass
class PerformanceCheck:
    day: date
    estimated_days: list[date] = field(default_factory=list)
    realized_days: list[date] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    incident: dict[str, Any] | None = None
    seconds: float = 0.0

    def summary(self, model_name: str) -> dict[str, Any]:
        return {
            "model_name": model_name,
            "day": self.day.isoformat(),
            "estimated_days": [d.isoformat() for d in self.estimated_days],
            "realized_days": [d.isoformat() for d in self.realized_days],
            "degraded": [line for verdict in self.verdicts for line in verdict.degraded.values()],
            "incident": self.incident,
            "seconds": round(self.seconds, 3),
        }


def _scored_days(connection: Connection, model_name: str, first: date, last: date) -> list[date]:
    rows = connection.execute(
        sa.text("SELECT DISTINCT ds FROM daily_scoring WHERE model_name = :m AND ds >= :a AND ds <= :b AND rows_scored > 0 ORDER BY ds"),
        {"m": model_name, "a": first, "b": last},
    ).scalars()
    return [value if isinstance(value, date) else date.fromisoformat(str(value)) for value in rows]


def _estimated_days(connection: Connection, model_name: str, first: date, last: date) -> set[date]:
    rows = connection.execute(
        sa.text("SELECT DISTINCT ds FROM performance_daily WHERE model_name = :m AND source = 'estimated' AND ds >= :a AND ds <= :b"),
        {"m": model_name, "a": first, "b": last},
    ).scalars()
    return {value if isinstance(value, date) else date.fromisoformat(str(value)) for value in rows}


def check_performance(engine: Engine, spec: ModelSpec, day: date, *, as_of: datetime, run_id: str) -> PerformanceCheck:
    """Estimate, realize and judge the model's performance for the run that checks `day`, with the labels observed by `as_of`."""
    started = time.perf_counter()
    check = PerformanceCheck(day)
    first = day - timedelta(days=spec.performance.lookback_days)
    decisions: dict[int, Decision] = {}
    with engine.connect() as connection:
        scored = _scored_days(connection, spec.name, first, day)
        estimated_before = _estimated_days(connection, spec.name, first, day)
    newest: dict[str, list[DayFigures]] = {}
    for ds in scored:
        sources = tuple(source for source, wanted in (
            (ESTIMATED, ds == day or ds not in estimated_before),
            (REALIZED, matured(spec, ds, as_of)),
        ) if wanted)
        if not sources:
            continue
        # One transaction a day: a failure leaves the days before it done and this one as it was.
        with engine.begin() as connection:
            lock_unit(connection, "performance", spec.name)
            figures = figures_of_day(connection, spec, ds, as_of, sources=sources, decisions=decisions)
            for source in sources:
                write_figures(connection, spec, ds, source, figures, labels_as_of=as_of if source == REALIZED else None, run_id=run_id)
            if REALIZED in sources:
                check.realized_days.append(ds)
                newest[REALIZED] = figures
            if ESTIMATED in sources:
                check.estimated_days.append(ds)
                if ds == day:
                    newest[ESTIMATED] = figures
            record_estimation_error(connection, spec.name, ds)
    check.verdicts = [
        judge(spec, figures, decisions[figures.version].validation)
        for source in (REALIZED, ESTIMATED) if source != ESTIMATED or spec.performance.estimated_alerts
        for figures in newest.get(source, []) if figures.role == ALERTED_ROLE and figures.source == source
    ]
    with engine.begin() as connection:
        lock_unit(connection, "performance", spec.name)
        check.incident = _update_incident(connection, spec, check, run_id=run_id)
    check.seconds = time.perf_counter() - started
    return check


def _update_incident(connection: Connection, spec: ModelSpec, check: PerformanceCheck, *, run_id: str) -> dict[str, Any] | None:
    """Open, extend or resolve the performance incident from this run's newest evidence; nothing when there is none."""
    if not check.verdicts:
        return None
    lines = [line for verdict in check.verdicts for line in verdict.degraded.values()]
    findings = {f"{verdict.source}:{metric}": Finding(band=0, ratio=None) for verdict in check.verdicts for metric in verdict.degraded}
    unjudged = [f"{verdict.source}:{metric}" for verdict in check.verdicts for metric in verdict.unjudged]
    version = check.verdicts[0].version
    return update_incident(
        connection, spec.name, version, kind="performance", found=bool(findings), window_end=day_window(check.day)[1], drifted=lines,
        findings=findings, run_id=run_id, unjudged=unjudged,
    )
