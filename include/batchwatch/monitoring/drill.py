"""The chaos drill: known faults injected into sandboxed copies of a window of the warehouse, the real monitors run on
each, and a report of which detector caught which fault and how fast.

Each fault gets a sandbox of its own (warehouse.sandbox), so whatever fires there fired because of it. A control
sandbox with no fault runs every check any fault ran, at the same moments, and must stay quiet: a detector that
fires on clean data proves nothing, and the drill is then inconclusive.

The monitors run as the DAGs would, at their schedules' moments: the nightly scoring again over a day whose source
rows the fault changed (its reject-rate limit is a detector too), the hourly drift check at each window end from the
fault's start (for up to drift.window_hours windows, within the drill's window), and the daily volume and
performance checks at each day's deadline from the fault's first day on. The drift check reads source rows only, so
a fault that leaves them alone is not drift-checked: its windows would repeat the control's. A detector *fired*
when its finding reached an incident, what a person is told about, or when the nightly run refused the day.

The real warehouse gets one write, the report's row in drill_reports. No notifier is called, and the drift reports
of the sandboxes' windows go to a temporary directory.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from threadpoolctl import threadpool_limits

from batchwatch import registry
from batchwatch.errors import InvalidArgument
from batchwatch.hashing import BUCKETS, CHAOS_DRILL
from batchwatch.monitoring.drift import SCORES, check_window, load_reference
from batchwatch.monitoring.faults import FAULTS, minimum_days, run_after
from batchwatch.monitoring.incidents import day_window
from batchwatch.monitoring.performance import check_performance, matured
from batchwatch.monitoring.volume import check_volume
from batchwatch.scoring import RejectRateExceeded, predict_interval
from batchwatch.serialization import json_safe
from batchwatch.spec import ModelSpec, quote
from batchwatch.warehouse import is_postgres, sample_predicate, utc_timestamp
from batchwatch.warehouse.read import bucket_sql
from batchwatch.warehouse.sandbox import Sandbox, sandbox
from batchwatch.warehouse.schema import (
    daily_scoring,
    drill_reports,
    model_aliases,
    model_events,
    model_versions,
    predictions,
    reference_profiles,
    rejected_rows,
)
from batchwatch.warehouse.write import daily_scoring_statements

log = logging.getLogger(__name__)

CONTROL = "control"
PASSED, FAILED = "passed", "failed"
FAULT_HOUR = 12  # shifted_feature and null_burst start at noon of the last day: half a day of traffic follows
BURST_HOURS = 3
SHIFT_SDS = 1.0
FLIP_SHARE = 0.2
NIGHTLY, DAILY, DRIFT = "nightly", "daily", "drift"
_JOB_ORDER = {NIGHTLY: 0, DAILY: 1, DRIFT: 2}  # at one moment the nightly run has written what the daily check reads


class DrillRefused(InvalidArgument):
    """The drill cannot run on this model or window as asked."""


# --- what the drill injects -------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault planned for a window: what it changes, from when, and the detectors (names or their starts) that should see it."""

    name: str
    start: datetime
    end: datetime
    expected: tuple[str, ...]
    injected: dict[str, Any]  # what and where, for the report; the injection reads its column, shift or share here
    rescored: tuple[date, ...] = ()  # days whose source rows it changes: the nightly run scores them again


def _shifted_feature(engine: Engine, spec: ModelSpec, last_day: date) -> Fault:
    """The watched numeric source feature (a float one before an integer one) moved by SHIFT_SDS of the champion's reference."""
    watched = set(spec.drift_columns)
    numeric = [f for f in spec.features if f.type in ("numeric", "integer")]
    if not numeric:
        raise DrillRefused(f"model spec {spec.name} has no numeric source feature for shifted_feature to move")
    feature = min(numeric, key=lambda f: (f.name not in watched, f.type != "numeric"))
    start = day_window(last_day)[0] + timedelta(hours=FAULT_HOUR)
    version = registry.champion_at(engine, spec.name, start) or registry.alias_version(engine, spec.name, "champion")
    if version is None:
        raise DrillRefused(f"{spec.name} has no champion whose monitors could be drilled; register one first (bin/batchwatch bootstrap {spec.name})")
    sd = load_reference(engine, spec.name, version).numeric[feature.name].std
    shift = SHIFT_SDS * sd if feature.type == "numeric" else float(max(1, round(SHIFT_SDS * sd)))
    end = day_window(last_day)[1]
    expected = (f"drift:distribution:{feature.name}",) if feature.name in watched else ("prediction_drift:",)
    injected = {"what": FAULTS["shifted_feature"], "column": feature.name, "shift": shift, "reference_sd": sd,
                "reference_version": version, "from": start, "until": end}
    return Fault("shifted_feature", start, end, expected, injected, rescored=(last_day,))


def _null_burst(spec: ModelSpec, last_day: date) -> Fault:
    """A watched source feature that allows nulls (a categorical first); failing that, one the nightly run rejects nulls of."""
    watched = set(spec.drift_columns)
    feature = min(spec.features, key=lambda f: (f.name not in watched, f.nulls != "allow", not f.is_categorical))
    start = day_window(last_day)[0] + timedelta(hours=FAULT_HOUR)
    end = start + timedelta(hours=BURST_HOURS)
    expected = ((f"drift:null_rate:{feature.name}",) if feature.name in watched else ()) + (("reject_rate",) if feature.nulls == "reject" else ())
    injected = {"what": FAULTS["null_burst"], "column": feature.name, "nulls": feature.nulls, "from": start, "until": end}
    return Fault("null_burst", start, end, expected, injected, rescored=(last_day,))


def _corrupted_scores(last_day: date) -> Fault:
    start, end = day_window(last_day)
    injected = {"what": FAULTS["corrupted_scores"], "day": last_day, "role": "champion", "noise": "uniform on [0, 1)"}
    return Fault("corrupted_scores", start, end, ("performance:estimated",), injected)


def _flipped_labels(spec: ModelSpec, days: list[date]) -> Fault:
    """The newest day of the window whose labels have matured by the last day's deadline: its realized figures are judged then."""
    as_of = run_after(spec.schedules.daily_performance, days[-1])
    ripe = [ds for ds in days if matured(spec, ds, as_of)]
    if not ripe:
        raise DrillRefused(
            f"flipped_labels needs a day of the window whose labels have matured ({spec.label.delay_days:g} days) by the last check, "
            f"at {as_of:%Y-%m-%d %H:%M} UTC: drill at least {minimum_days(spec)} days"
        )
    start, end = day_window(ripe[-1])
    injected = {"what": FAULTS["flipped_labels"], "day": ripe[-1], "share": FLIP_SHARE, "labels_matured_by": as_of}
    return Fault("flipped_labels", start, end, ("performance:realized",), injected)


def _missing_day(last_day: date) -> Fault:
    start, end = day_window(last_day)
    injected = {"what": FAULTS["missing_day"], "day": last_day}
    return Fault("missing_day", start, end, ("volume:missing",), injected, rescored=(last_day,))


def plan_faults(engine: Engine, spec: ModelSpec, names: Sequence[str], window_start: datetime, window_end: datetime) -> list[Fault]:
    """The faults by name, placed in the window [window_start, window_end) of UTC days."""
    days = [(window_start + timedelta(days=offset)).date() for offset in range((window_end - window_start).days)]
    last = days[-1]
    plans = {
        "shifted_feature": lambda: _shifted_feature(engine, spec, last),
        "null_burst": lambda: _null_burst(spec, last),
        "corrupted_scores": lambda: _corrupted_scores(last),
        "flipped_labels": lambda: _flipped_labels(spec, days),
        "missing_day": lambda: _missing_day(last),
    }
    return [plans[name]() for name in names]


def _inject(fault: Fault, engine: Engine, spec: ModelSpec) -> int:
    """Apply the fault in a sandbox, in one transaction; the rows it changed."""
    inject = {
        "shifted_feature": _change_source, "null_burst": _change_source, "missing_day": _change_source,
        "corrupted_scores": _corrupt_scores, "flipped_labels": _flip_labels,
    }[fault.name]
    with engine.begin() as connection:
        return inject(connection, fault, spec)


def _change_source(connection: Connection, fault: Fault, spec: ModelSpec) -> int:
    """Source rows of [start, end): a column shifted or emptied where it held a value, or every row deleted."""
    source, event = spec.source.relation, quote(spec.source.event_time)
    span = {"a": fault.start, "b": fault.end}
    within = f"{event} >= :a AND {event} < :b"
    if fault.name == "missing_day":
        return connection.execute(sa.text(f"DELETE FROM {source} WHERE {within}"), span).rowcount
    column = quote(fault.injected["column"])
    if fault.name == "shifted_feature":
        change, params = f"{column} + :shift", {**span, "shift": fault.injected["shift"]}
    else:
        change, params = "NULL", span
    return connection.execute(sa.text(f"UPDATE {source} SET {column} = {change} WHERE {within} AND {column} IS NOT NULL"), params).rowcount


def _corrupt_scores(connection: Connection, fault: Fault, spec: ModelSpec) -> int:
    """The day's champion scores become a hash of the entity (uniform, the same on every run), labelled at each version's
    threshold, and the day's summary is written again from them, as the nightly writer would have."""
    engine = connection.engine
    day = {"m": spec.name, "ds": fault.injected["day"]}
    where = "model_name = :m AND ds = :ds AND role = 'champion'"
    versions = connection.execute(sa.text(f"SELECT DISTINCT model_version FROM predictions WHERE {where}"), day).scalars().all()
    thresholds = {version: registry.threshold_of(registry.get_version(engine, spec.name, version), spec) for version in versions}
    noise = f"{bucket_sql(engine, 'entity_id', f'{CHAOS_DRILL}:scores')} / {float(BUCKETS)}"
    changed = connection.execute(sa.text(f"UPDATE predictions SET score = {noise} WHERE {where}"), day).rowcount
    for version, threshold in thresholds.items():
        connection.execute(
            sa.text(f"UPDATE predictions SET predicted_label = CASE WHEN score >= :t THEN 1 ELSE 0 END WHERE {where} AND model_version = :v"),
            {**day, "t": threshold, "v": version},
        )
    connection.execute(sa.text("DELETE FROM daily_scoring WHERE model_name = :m AND ds = :ds"), day)
    for statement in daily_scoring_statements(is_postgres(engine), "model_name = :m AND ds = :ds"):
        connection.execute(sa.text(statement), day)
    return changed


def _flip_labels(connection: Connection, fault: Fault, spec: ModelSpec) -> int:
    """A share of the labels of the day's champion predictions, picked by a salted hash of the key, turned to their opposite."""
    label, key = spec.label, quote(spec.label.entity_key)
    flipped = sample_predicate(connection.engine, key, fault.injected["share"], f"{CHAOS_DRILL}:labels")
    return connection.execute(
        sa.text(
            f"UPDATE {quote(label.table)} SET {quote(label.column)} = 1 - {quote(label.column)}"
            f" WHERE {key} IN (SELECT entity_id FROM predictions WHERE model_name = :m AND ds = :ds AND role = 'champion') AND {flipped}"
        ),
        {"m": spec.name, "ds": fault.injected["day"]},
    ).rowcount


# --- when the monitors run --------------------------------------------------------------------


class Moment(NamedTuple):
    """One run of a job in a sandbox: the nightly scoring of a day, a drift window's end, or a day's deadline."""

    at: datetime
    order: int
    job: str
    day: date | None  # the day a nightly or daily run is for; None for a drift window


def moments(spec: ModelSpec, fault: Fault, window_end: datetime) -> list[Moment]:
    """The runs a fault is watched by, in time order (see the module's docstring)."""
    runs = [Moment(run_after(spec.schedules.nightly_predict, ds), _JOB_ORDER[NIGHTLY], NIGHTLY, ds) for ds in fault.rescored]
    if fault.rescored:
        minute = int(spec.schedules.hourly_drift.split()[0])
        first = fault.start.replace(minute=minute, second=0, microsecond=0)
        first += timedelta(hours=1) if first <= fault.start else timedelta(0)
        for hour in range(spec.drift.window_hours):
            if (end := first + timedelta(hours=hour)) > window_end:
                break
            runs.append(Moment(end, _JOB_ORDER[DRIFT], DRIFT, None))
    last = (window_end - timedelta(days=1)).date()
    ds = fault.start.date()
    while ds <= last:
        runs.append(Moment(run_after(spec.schedules.daily_performance, ds), _JOB_ORDER[DAILY], DAILY, ds))
        ds += timedelta(days=1)
    return sorted(runs)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    detector: str
    at: datetime
    delay_hours: float | None  # from the fault's start; None in the control


@dataclass(frozen=True)
class FaultResult:
    """What one sandbox showed: the fault injected (none in the control), what fired and when, the incidents opened."""

    fault: str
    start: datetime | None
    injected: dict[str, Any]
    expected: tuple[str, ...]
    detections: tuple[Detection, ...]  # each detector once, when it first fired
    incidents: tuple[dict[str, Any], ...]  # the incidents the findings opened: kind, window_end and summary, as alerts has them
    runs: dict[str, int]  # how many times each job ran in the sandbox

    @property
    def caught(self) -> bool:
        return bool(self.detections)

    @property
    def missed_expected(self) -> list[str]:
        return [name for name in self.expected if not any(d.detector.startswith(name) for d in self.detections)]

    def to_dict(self) -> dict[str, Any]:
        first = self.detections[0] if self.detections else None
        return json_safe({
            "fault": self.fault,
            "start": self.start,
            "injected": self.injected,
            "expected": list(self.expected),
            "caught": self.caught,
            "caught_by": [d.detector for d in self.detections],
            "first_detection": first.at if first else None,
            "delay_hours": first.delay_hours if first else None,
            "detections": [{"detector": d.detector, "at": d.at, "delay_hours": d.delay_hours} for d in self.detections],
            "missed_expected": self.missed_expected,
            "incidents": list(self.incidents),
            "runs": self.runs,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultResult:
        return cls(
            fault=data["fault"],
            start=None if data["start"] is None else datetime.fromisoformat(data["start"]),
            injected=data["injected"],
            expected=tuple(data["expected"]),
            detections=tuple(Detection(d["detector"], datetime.fromisoformat(d["at"]), d["delay_hours"]) for d in data["detections"]),
            incidents=tuple(data["incidents"]),
            runs=data["runs"],
        )

    def line(self) -> str:
        """One line for the task log and the failure message."""
        if self.fault == CONTROL:
            fired = ", ".join(f"{d.detector} at {d.at:%Y-%m-%d %H:%M}" for d in self.detections)
            return f"control: {'fired ' + fired + ' on clean data' if fired else 'quiet'} ({_runs(self.runs)})"
        if not self.detections:
            return f"{self.fault}: UNSEEN, no monitor fired ({_runs(self.runs)})"
        caught = ", ".join(f"{d.detector} after {d.delay_hours:g} h" for d in self.detections)
        missed = f"; expected but silent: {', '.join(self.missed_expected)}" if self.missed_expected else ""
        return f"{self.fault}: caught by {caught}{missed}"


def _runs(runs: dict[str, int]) -> str:
    return ", ".join(f"{count} {job}" for job, count in runs.items() if count) or "no monitor ran"


@dataclass(frozen=True)
class DrillReport:
    """One drill of a model's monitors over the window [window_start, window_end) of UTC days."""

    model_name: str
    run_id: str
    window_start: datetime
    window_end: datetime
    faults: tuple[FaultResult, ...]
    control: FaultResult
    started_at: datetime
    finished_at: datetime
    id: int | None = None

    @property
    def unseen(self) -> list[str]:
        return [result.fault for result in self.faults if not result.caught]

    @property
    def inconclusive(self) -> bool:
        """The control fired: a detector that fires on clean data proves nothing about the faults."""
        return self.control.caught

    @property
    def status(self) -> str:
        return FAILED if self.unseen or self.inconclusive else PASSED

    def failure(self) -> str | None:
        """Why the drill failed, naming each unseen fault and what the control fired; None when it passed."""
        reasons = []
        if self.unseen:
            reasons.append(f"{', '.join(self.unseen)} went unseen: no monitor fired on {'it' if len(self.unseen) == 1 else 'them'}")
        if self.inconclusive:
            reasons.append(f"inconclusive: the control sandbox, with no fault, fired {', '.join(d.detector for d in self.control.detections)}")
        if not reasons:
            return None
        where = f"drill_reports id {self.id}" if self.id is not None else "the drill report"
        return f"chaos drill of {self.model_name} failed: {'; '.join(reasons)} ({where})"

    def lines(self) -> list[str]:
        return [result.line() for result in (*self.faults, self.control)]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "id": self.id,
            "model_name": self.model_name,
            "run_id": self.run_id,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "status": self.status,
            "unseen": self.unseen,
            "inconclusive": self.inconclusive,
            "faults": [result.to_dict() for result in self.faults],
            "control": self.control.to_dict(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        })


# --- the sandbox ------------------------------------------------------------------------------


def _refuse_unsandboxable(spec: ModelSpec) -> None:
    """The sandbox holds the spec's tables under their unqualified names; a query or another schema would reach the real ones."""
    if spec.source.query is not None:
        raise DrillRefused(
            f"model spec {spec.name}: source.query may read any table, and the drill can only copy, and fault, a source.table "
            "into its sandbox. Drill a model whose rows come from a table in the warehouse's schema."
        )
    for field, table in (("source.table", spec.source.table), ("label.table", spec.label.table)):
        if "." in table:
            raise DrillRefused(
                f"model spec {spec.name}: {field} {table!r} names a schema. The drill copies the tables it faults into a sandbox "
                f"schema and finds them there by their unqualified names; a qualified name would be read, and faulted, in the real "
                f"warehouse. Drill a model whose {field} is in the warehouse's own schema."
            )


def _copy(connection: Connection, box: Sandbox, table: sa.Table, where: str, params: dict[str, Any]) -> None:
    columns = ", ".join(quote(column.name) for column in table.columns)
    connection.execute(sa.text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {box.table(table.name)} WHERE {where}"), params)


def _fill(box: Sandbox, spec: ModelSpec, window_start: datetime, window_end: datetime) -> None:
    """Copy what the monitors read for the window: the model's registry rows (its artifacts stay where they are, checked
    by their sha256 on load), its predictions, rejects and daily summaries of the window, the labels of those predictions,
    and the source rows of the window and of the trailing weeks the volume check compares a day with."""
    days = (window_end - window_start).days
    window = {"m": spec.name, "a": window_start.date(), "b": (window_end - timedelta(days=1)).date()}
    history_start = window_start - timedelta(weeks=spec.volume.trailing_weeks)
    source, label = spec.source.table, spec.label.table
    with box.copying() as connection:
        real = connection.execute(sa.text(f"SELECT version_num FROM {box.table('alembic_version')}")).scalar()
        head = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        if real != head:
            raise DrillRefused(f"the warehouse is at migration {real}, the drill's sandbox at {head}: migrate it first (bin/batchwatch migrate)")
        for table in (model_versions, model_aliases, model_events, reference_profiles):
            _copy(connection, box, table, "model_name = :m", {"m": spec.name})
        box.add_prediction_partitions(connection, spec.name, [window_start.date() + timedelta(days=d) for d in range(days)])
        for table in (predictions, rejected_rows, daily_scoring):
            _copy(connection, box, table, "model_name = :m AND ds >= :a AND ds <= :b", window)
        box.clone_table(connection, source)
        event = quote(spec.source.event_time)
        connection.execute(
            sa.text(f"INSERT INTO {quote(source)} SELECT * FROM {box.table(source)} WHERE {event} >= :a AND {event} < :b"),
            {"a": history_start, "b": window_end},
        )
        box.clone_table(connection, label)
        connection.execute(
            sa.text(
                f"INSERT INTO {quote(label)} SELECT * FROM {box.table(label)}"
                f" WHERE {quote(spec.label.entity_key)} IN (SELECT entity_id FROM predictions WHERE model_name = :m)"
            ),
            {"m": spec.name},
        )


# --- one sandbox, end to end ------------------------------------------------------------------


def _detector(kind: str, check: str, volume_verdicts: dict[str, str]) -> str:
    """A finding's detector name: drift:<check>, prediction_drift:<test>, volume:<verdict>, performance:<source>:<metric>."""
    if kind == "drift":
        test, _, column = check.partition(":")
        return f"prediction_drift:{test.removeprefix('score_')}" if column == SCORES else f"drift:{check}"
    if kind == "volume":
        finding, _, ds = check.partition(":")
        return "volume:late" if finding == "late" else f"volume:{volume_verdicts.get(ds, finding)}"
    return f"{kind}:{check}"


def _findings(engine: Engine, model_name: str) -> set[str]:
    """Every detector whose finding has reached an incident in the sandbox."""
    with engine.connect() as connection:
        alerts = connection.execute(
            sa.text("SELECT kind, checks FROM alerts WHERE model_name = :m").columns(checks=sa.JSON), {"m": model_name}
        ).all()
        verdicts = {
            str(ds): verdict
            for ds, verdict in connection.execute(sa.text("SELECT ds, verdict FROM volume_daily WHERE model_name = :m"), {"m": model_name})
        }
    return {_detector(kind, check, verdicts) for kind, checks in alerts for check in checks or {}}


def _incidents(engine: Engine, model_name: str) -> tuple[dict[str, Any], ...]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT kind, opened_window_end, summary FROM alerts WHERE model_name = :m ORDER BY id"), {"m": model_name}
        ).all()
    return tuple({"kind": kind, "window_end": utc_timestamp(end).isoformat(), "summary": summary} for kind, end, summary in rows)


def _unscored(engine: Engine, spec: ModelSpec, ds: date) -> None:
    """The nightly run refused the day: what it would have left is a day with no predictions."""
    with engine.begin() as connection:
        for table in ("predictions", "rejected_rows", "daily_scoring"):
            connection.execute(sa.text(f"DELETE FROM {table} WHERE model_name = :m AND ds = :ds"), {"m": spec.name, "ds": ds})


def _watch(engine: Engine, spec: ModelSpec, runs: Sequence[Moment], start: datetime | None, run_id: str, reports: Path) -> tuple[
    list[Detection], dict[str, int]
]:
    """Run the jobs at their moments; each detector the first time it fires, with its delay from `start`."""
    detections: list[Detection] = []
    seen: set[str] = set()
    counts = dict.fromkeys((NIGHTLY, DRIFT, DAILY), 0)

    def fired(detector: str, at: datetime) -> None:
        seen.add(detector)
        delay = None if start is None else round((at - start) / timedelta(hours=1), 2)
        detections.append(Detection(detector, at, delay))

    for moment in runs:
        counts[moment.job] += 1
        if moment.job == NIGHTLY:
            day_start, day_end = day_window(moment.day)
            try:
                predict_interval(engine, spec, start=day_start, end=day_end, run_id=run_id)
            except RejectRateExceeded as refused:
                log.info("The nightly run refused %s: %s", moment.day, refused)
                fired("reject_rate", moment.at)
                _unscored(engine, spec, moment.day)
            continue
        if moment.job == DRIFT:
            check_window(engine, spec, window_end=moment.at, run_id=run_id, report_root=reports)
        else:
            check_volume(engine, spec, moment.day, run_id=run_id)
            check_performance(engine, spec, moment.day, as_of=moment.at, run_id=run_id)
        for detector in sorted(_findings(engine, spec.name) - seen):
            fired(detector, moment.at)
    return detections, counts


def _drill(
    engine: Engine, spec: ModelSpec, fault: Fault | None, runs: Sequence[Moment], window: tuple[datetime, datetime], run_id: str, reports: Path
) -> FaultResult:
    """One sandbox: copy the window, inject the fault (none for the control), watch it; dropped however this ends."""
    name = CONTROL if fault is None else fault.name
    log.info("Chaos drill of %s: %s in a sandbox of its own, %d job runs", spec.name, name, len(runs))
    # Many small checks in a row: OpenMP threads cost a busy worker more than they save (scoring a window's rows took
    # twice as long with them on a loaded 2-core machine; drift.domain_classifier_auc limits itself for the same reason).
    with sandbox(engine) as box, threadpool_limits(1):
        _fill(box, spec, *window)
        changed = 0 if fault is None else _inject(fault, box.engine, spec)
        detections, counts = _watch(box.engine, spec, runs, None if fault is None else fault.start, run_id, reports)
        incidents = _incidents(box.engine, spec.name)
    injected = {} if fault is None else {**fault.injected, "rows": changed}
    return FaultResult(
        fault=name, start=None if fault is None else fault.start, injected=injected, expected=() if fault is None else fault.expected,
        detections=tuple(detections), incidents=incidents, runs=counts,
    )


# --- the drill --------------------------------------------------------------------------------


def drill_window(window_end: datetime, days: int) -> tuple[datetime, datetime]:
    """[window_end - days, window_end): whole UTC days."""
    if window_end.utcoffset() is None:
        raise InvalidArgument(f"the drill's window end must be timezone-aware, got {window_end!r}")
    end = window_end.astimezone(timezone.utc)
    if end != day_window(end.date())[0]:
        raise InvalidArgument(f"the drill's window ends at a UTC midnight, got {end.isoformat()}")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidArgument(f"the drill's window is a whole number of days, at least 1, got {days!r}")
    return end - timedelta(days=days), end


def default_window_end(engine: Engine, model_name: str) -> datetime:
    """The end of the latest day the nightly run scored: the drill's window ends with it unless told otherwise."""
    with engine.connect() as connection:
        latest = connection.execute(
            sa.text("SELECT MAX(ds) FROM daily_scoring WHERE model_name = :m AND role = 'champion' AND rows_scored > 0"), {"m": model_name}
        ).scalar()
    if latest is None:
        raise DrillRefused(f"{model_name} has no scored day to drill: the nightly run has scored nothing yet")
    return day_window(date.fromisoformat(str(latest)))[1]


def run_drill(engine: Engine, spec: ModelSpec, *, window_end: datetime, days: int, faults: Sequence[str], run_id: str) -> DrillReport:
    """Drill the model's monitors on [window_end - days, window_end) with `faults`, each in a sandbox of its own, and a control.

    Stores the report in drill_reports (the drill's one write to the real warehouse) and returns it. A monitor that
    raises ends the drill with its error, and no report; every sandbox is dropped all the same.
    """
    started = datetime.now(timezone.utc)
    window = drill_window(window_end, days)
    unknown = [name for name in faults if name not in FAULTS]
    if unknown or not faults:
        raise InvalidArgument(f"the drill's faults are some of {', '.join(FAULTS)}; got {list(faults)!r}")
    _refuse_unsandboxable(spec)
    planned = plan_faults(engine, spec, list(dict.fromkeys(faults)), *window)
    watched = {fault.name: moments(spec, fault, window[1]) for fault in planned}
    every_run = sorted(set().union(*watched.values()))
    with tempfile.TemporaryDirectory(prefix="batchwatch-drill-") as reports:
        control = _drill(engine, spec, None, every_run, window, run_id, Path(reports))
        results = tuple(_drill(engine, spec, fault, watched[fault.name], window, run_id, Path(reports)) for fault in planned)
    report = DrillReport(spec.name, run_id, *window, faults=results, control=control, started_at=started, finished_at=datetime.now(timezone.utc))
    with engine.begin() as connection:
        report_id = connection.execute(
            sa.insert(drill_reports).values(
                model_name=report.model_name, run_id=run_id, window_start=window[0].date(), window_end=window[1].date(), status=report.status,
                faults=[*(result.to_dict() for result in results), control.to_dict()], started_at=started, finished_at=report.finished_at,
            ).returning(drill_reports.c.id)
        ).scalar_one()
    return replace(report, id=report_id)


def latest_drill(engine: Engine, model_name: str) -> DrillReport | None:
    """The model's last stored drill, or None."""
    query = sa.select(drill_reports).where(drill_reports.c.model_name == model_name).order_by(drill_reports.c.finished_at.desc(),
                                                                                           drill_reports.c.id.desc()).limit(1)
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    if row is None:
        return None
    results = [FaultResult.from_dict(entry) for entry in row["faults"]]

    def midnight(value: Any) -> datetime:
        return day_window(date.fromisoformat(str(value)))[0]

    return DrillReport(
        model_name=row["model_name"], run_id=row["run_id"], window_start=midnight(row["window_start"]), window_end=midnight(row["window_end"]),
        faults=tuple(result for result in results if result.fault != CONTROL),
        control=next(result for result in results if result.fault == CONTROL),
        started_at=utc_timestamp(row["started_at"]).to_pydatetime(), finished_at=utc_timestamp(row["finished_at"]).to_pydatetime(), id=row["id"],
    )
