"""The daily volume and freshness check: did a day's rows arrive, as many as usual, before the nightly run scored them?

A day is compared with the same weekday of the trailing weeks, so a weekly cycle is not news, by their median
and their median absolute deviation: one broken week in the history moves neither. A weekday with no rows at
all is left out of that history, since it is a day before the model's data began (or an outage already
reported), not evidence that zero rows is normal. Both a robust z over `volume.max_robust_z` and a change of at
least `volume.min_relative_change` of the median are needed: a very regular feed has a MAD near 0, where any
difference gives a huge z.

Rows that reach the source after the nightly run scored their day were never scored. Every check re-counts
the `volume.late_days` days before its own and compares each scored one with what its run read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch import registry
from batchwatch.errors import InvalidArgument
from batchwatch.monitoring.incidents import Finding, day_window, update_incident
from batchwatch.serialization import finite_or_none
from batchwatch.spec import ModelSpec, quote
from batchwatch.spec.model import Volume as VolumeSettings
from batchwatch.warehouse import lock_unit, refused_queries
from batchwatch.warehouse.schema import daily_scoring, volume_daily

OK, LOW, HIGH, MISSING, LATE, INSUFFICIENT = "ok", "low", "high", "missing", "late", "insufficient_history"
# Volume verdicts that are findings of the day's own check; a late day is a finding of every check that re-counts it.
VOLUME_PROBLEMS = (LOW, HIGH, MISSING)
# 1 / Phi^-1(3/4): the MAD times this estimates the standard deviation of normal data (scipy's scale="normal").
NORMAL_MAD_SCALE = 1.482602218505602
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class RobustScore:
    """A count against its history: the history's median and scaled MAD, and how far the count is from them."""

    median: float
    mad: float  # scaled by NORMAL_MAD_SCALE
    z: float  # (rows - median) / mad; +-inf when the MAD is 0 and the count differs from the median
    relative_change: float  # rows / median - 1


def robust_score(rows: int, history: Sequence[int]) -> RobustScore:
    """Score `rows` against a history of positive counts by median and MAD, which an outlier in the history barely moves."""
    if not history or min(history) <= 0:
        raise InvalidArgument(f"a robust score needs a history of positive counts, got {list(history)}")
    values = np.asarray(history, dtype=float)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * NORMAL_MAD_SCALE
    if mad > 0:
        z = (rows - median) / mad
    else:
        z = 0.0 if rows == median else math.copysign(math.inf, rows - median)
    return RobustScore(median=median, mad=mad, z=z, relative_change=rows / median - 1)


@dataclass(frozen=True)
class DayVolume:
    """One judged day as volume_daily stores it: its rows against its weekdays, and its rows that came after scoring."""

    ds: date
    rows: int
    history: tuple[tuple[date, int], ...]  # the same weekday of each trailing week and its rows, newest first
    score: RobustScore | None  # None when too few of those weekdays had rows
    rows_at_scoring: int | None  # what the nightly run read; None when it did not score the day
    late_rows: int | None
    late_share: float | None
    verdict: str
    volume_reason: str
    late_reason: str | None  # set when the late share passes volume.max_late_share

    @property
    def reason(self) -> str:
        return "; ".join(part for part in (self.volume_reason, self.late_reason) if part)


def judge_day(
    ds: date, rows: int, history: Sequence[tuple[date, int]], settings: VolumeSettings, *, rows_at_scoring: int | None = None,
    rows_now: int | None = None,
) -> DayVolume:
    """Judge a day's `rows` against its trailing weekdays, and its rows now (default: `rows`) against those the nightly run read.

    No rows at all is 'missing' whatever the history. Late rows make an otherwise unremarkable day 'late'; a day
    already low, high or missing keeps that verdict, the late rows being part of the same story.
    """
    baseline = [count for _, count in history if count > 0]
    score = robust_score(rows, baseline) if len(baseline) >= settings.min_history else None
    weekdays = f"{WEEKDAYS[ds.weekday()]}s"
    if rows == 0:
        verdict = MISSING
        against = f", against the median {_count(score.median)} of {len(baseline)} {weekdays}" if score else ""
        volume_reason = f"no rows by the deadline{against}"
    elif score is None:
        verdict = INSUFFICIENT
        volume_reason = (
            f"{rows:,} rows; {len(baseline)} of the {len(history)} previous {weekdays} had rows, "
            f"{settings.min_history} needed (volume.min_history) to judge the volume"
        )
    else:
        unusual = abs(score.z) > settings.max_robust_z and abs(score.relative_change) >= settings.min_relative_change
        verdict = (LOW if score.z < 0 else HIGH) if unusual else OK
        volume_reason = _against_median(rows, score, len(baseline), weekdays)

    late_rows = late_share = late_reason = None
    if rows_at_scoring is not None:
        now = rows if rows_now is None else rows_now
        late_rows = max(0, now - rows_at_scoring)
        late_share = late_rows / now if now else 0.0
        if late_share > settings.max_late_share:
            late_reason = f"{late_rows:,} rows ({_percent(late_share)}) arrived after the nightly run scored the day"
            if verdict in (OK, INSUFFICIENT):
                verdict = LATE
    return DayVolume(
        ds=ds, rows=rows, history=tuple(history), score=score, rows_at_scoring=rows_at_scoring, late_rows=late_rows, late_share=late_share,
        verdict=verdict, volume_reason=volume_reason, late_reason=late_reason,
    )


def _against_median(rows: int, score: RobustScore, weekdays_with_rows: int, weekdays: str) -> str:
    if score.relative_change == 0:
        change = "the same as"
    else:
        change = f"{_percent(abs(score.relative_change))} {'below' if score.relative_change < 0 else 'above'}"
    z = f"{score.z:.1f}" if math.isfinite(score.z) else f"{score.z}, MAD 0"
    return f"{rows:,} rows, {change} the median {_count(score.median)} of {weekdays_with_rows} {weekdays} (robust z {z})"


def _count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _percent(share: float) -> str:
    value = 100 * share
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


@dataclass(frozen=True)
class VolumeCheck:
    """What one daily check judged: the day, the earlier days it re-counted for late rows, and the findings to hand to an incident."""

    model_name: str
    day: date
    verdict: str
    days: tuple[DayVolume, ...]  # oldest first, `day` last
    findings: dict[str, str]  # {"volume:<ds>" | "late:<ds>": reason}, one per problem
    judged: bool  # False only when the day's volume could not be judged and nothing else was found
    incident: dict[str, Any] | None = None  # the volume incident's change this check made, if any

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for the task's return value (XCom and the task log)."""
        return {
            "model_name": self.model_name,
            "ds": self.day.isoformat(),
            "verdict": self.verdict,
            "judged": self.judged,
            "findings": self.findings,
            "incident": self.incident,
            "days": [
                {
                    "ds": day.ds.isoformat(),
                    "rows": day.rows,
                    "expected_rows": day.score.median if day.score else None,
                    "robust_z": finite_or_none(day.score.z) if day.score else None,
                    "relative_change": day.score.relative_change if day.score else None,
                    "late_share": day.late_share,
                    "verdict": day.verdict,
                }
                for day in self.days
            ],
        }


def check_volume(engine: Engine, spec: ModelSpec, day: date, *, run_id: str) -> VolumeCheck:
    """Judge the rows of UTC `day` and re-count the `volume.late_days` before it for rows that came after scoring; store every judged day.

    Run at the day's deadline: rows that have not arrived by then are missing. An earlier day keeps the volume
    figures its own check stored and gets its late figures updated; one with no stored row is judged now, or
    skipped when it has no rows and was never scored (a day before the model's data began). Rerunning a day
    replaces its rows. Raises QueryRefused, naming the spec field, when the database refuses the source's SQL.
    """
    if isinstance(day, datetime):
        raise InvalidArgument(f"{spec.name}: the volume check judges a UTC date, got the time {day!r}")
    settings = spec.volume
    first = day - timedelta(days=settings.late_days)
    with engine.begin() as connection:
        lock_unit(connection, "volume", spec.name)  # two checks of one model would each rewrite the other's late days
        counts = _DailyCounts(connection, spec)
        stored = _stored_volumes(connection, spec.name, first, day)
        read_at_scoring = _rows_read_at_scoring(connection, spec.name, first, day)
        judged: list[DayVolume] = []
        for offset in range(settings.late_days, -1, -1):
            ds = day - timedelta(days=offset)
            if ds != day and ds in stored:
                rows, history = stored[ds]
            else:
                rows, history = counts(ds), [(weekday, counts(weekday)) for weekday in _trailing_weekdays(ds, settings.trailing_weeks)]
                if ds != day and rows == 0 and ds not in read_at_scoring:
                    continue
            scored = read_at_scoring.get(ds)
            judged.append(judge_day(ds, rows, history, settings, rows_at_scoring=scored, rows_now=None if scored is None else counts(ds)))
        _store(connection, spec.name, judged, run_id)
        today = judged[-1]
        findings = {f"volume:{today.ds}": today.volume_reason} if today.verdict in VOLUME_PROBLEMS else {}
        findings.update({f"late:{judged_day.ds}": judged_day.late_reason for judged_day in judged if judged_day.late_reason})
        judged_at_all = today.verdict != INSUFFICIENT or bool(findings)
        incident = update_incident(
            connection, spec.name, registry.alias_version_in(connection, spec.name, "champion") or 0, kind="volume",
            found=bool(findings) if judged_at_all else None, window_end=day_window(day)[1],
            drifted=list(findings.values()), findings={check: Finding(band=0, ratio=None) for check in findings}, run_id=run_id,
        )
    return VolumeCheck(
        model_name=spec.name, day=day, verdict=today.verdict, days=tuple(judged), findings=findings, judged=judged_at_all, incident=incident,
    )


def _trailing_weekdays(ds: date, weeks: int) -> list[date]:
    return [ds - timedelta(weeks=week) for week in range(1, weeks + 1)]


class _DailyCounts:
    """The source's rows per UTC day, counted once each: the range on the event time keeps an index on it usable."""

    def __init__(self, connection: Connection, spec: ModelSpec) -> None:
        event = quote(spec.source.event_time)
        self._connection = connection
        self._query = sa.text(f"SELECT COUNT(*) FROM {spec.source.relation} s WHERE s.{event} >= :start AND s.{event} < :end")
        self._origin = f"model spec {spec.name}: {spec.source.field}"
        self._counts: dict[date, int] = {}

    def __call__(self, ds: date) -> int:
        if ds not in self._counts:
            start, end = day_window(ds)
            with refused_queries(self._origin):
                self._counts[ds] = self._connection.execute(self._query, {"start": start, "end": end}).scalar_one()
        return self._counts[ds]


def _stored_volumes(connection: Connection, model_name: str, first: date, last: date) -> dict[date, tuple[int, list[tuple[date, int]]]]:
    """The rows and weekday history earlier checks stored for the days in [first, last]."""
    query = sa.select(volume_daily.c.ds, volume_daily.c.rows, volume_daily.c.history).where(
        volume_daily.c.model_name == model_name, volume_daily.c.ds.between(first, last)
    )
    return {
        ds: (rows, [(date.fromisoformat(entry["ds"]), entry["rows"]) for entry in history])
        for ds, rows, history in connection.execute(query)
    }


def _rows_read_at_scoring(connection: Connection, model_name: str, first: date, last: date) -> dict[date, int]:
    """Rows the nightly run read for each day in [first, last] it scored: those it scored and those it rejected."""
    query = sa.select(daily_scoring.c.ds, daily_scoring.c.rows_scored + daily_scoring.c.rows_rejected).where(
        daily_scoring.c.model_name == model_name, daily_scoring.c.role == "champion", daily_scoring.c.ds.between(first, last)
    )
    return {ds: int(rows) for ds, rows in connection.execute(query)}


def _store(connection: Connection, model_name: str, days: list[DayVolume], run_id: str) -> None:
    """Replace the judged days' rows, inside the caller's transaction."""
    checked_at = datetime.now(timezone.utc)
    connection.execute(sa.delete(volume_daily).where(volume_daily.c.model_name == model_name, volume_daily.c.ds.in_([d.ds for d in days])))
    connection.execute(
        sa.insert(volume_daily),
        [
            {
                "model_name": model_name,
                "ds": day.ds,
                "rows": day.rows,
                "expected_rows": day.score.median if day.score else None,
                "mad": day.score.mad if day.score else None,
                "robust_z": day.score.z if day.score else None,
                "relative_change": day.score.relative_change if day.score else None,
                "history": [{"ds": weekday.isoformat(), "rows": rows} for weekday, rows in day.history],
                "rows_at_scoring": day.rows_at_scoring,
                "late_rows": day.late_rows,
                "late_share": day.late_share,
                "verdict": day.verdict,
                "reason": day.reason,
                "checked_at": checked_at,
                "run_id": run_id,
            }
            for day in days
        ],
    )
