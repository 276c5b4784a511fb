"""Typed read models over the warehouse: the one read layer of the web app, its JSON API and the CLI.

Every function takes an engine and a model name and returns frozen dataclasses of JSON types (dates
and datetimes aside), so FastAPI can serve them as they are and the CLI can print them. Reductions
happen in SQL: the predictions table holds a million rows a day per model, and only per-day
aggregates leave the database; the per-day volume comes from daily_scoring, which the nightly
writer fills. Imports stay light (SQLAlchemy, no pandas) because the Airflow API server imports
this module with the plugin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.errors import PermanentError

# Events that move an alias, and the alias each one moves (registry.point_alias, promotion.retrain).
ALIAS_OF_EVENT = {"set_champion": "champion", "promoted": "champion", "forced": "champion", "rollback": "champion",
                  "set_challenger": "challenger"}
# Decisions of the weekly retrain's promote step, as model_events records them.
DECISION_EVENTS = ("promoted", "forced", "rejected")
# Score quantiles reported per day, as daily_scoring stores them (exact, numpy's linear interpolation).
SCORE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_COLUMNS = ("score_p05", "score_p25", "score_p50", "score_p75", "score_p95")
# Where drift.py stores the champion's scores in reference_profiles and drift_results.
SCORE_COLUMN = "__score__"
TIMESTAMP = sa.DateTime(timezone=True)
# performance_daily's metrics in the order people read them; others a writer adds follow by name.
METRIC_ORDER = ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece", "positive_rate", "label_rate",
                       "label_coverage")
# volume_daily verdicts that are findings (ok and a day without enough history to judge are not).
VOLUME_FINDINGS = ("low", "high", "missing", "late")
# The scale that turns a MAD into a standard deviation for normal data, as the volume check's robust z uses it.
MAD_TO_SIGMA = 1.4826
# A release under way (promotion.releases.ACTIVE); the look of each day is a release_decision event (promotion.canary).
RELEASE_ACTIVE = ("running", "awaiting_approval")
RELEASE_DECISION = "release_decision"
# How promotion.canary judges a difference (challenger - champion): lower is better for these metrics, a move either way
# is harm for the two-sided ones, higher is better for the rest (tests/web/test_release_page.py checks they agree).
RELEASE_LOWER_IS_BETTER = ("brier", "ece", "reject_rate")
RELEASE_TWO_SIDED = ("positive_rate",)
# The chaos drill's sandbox with no fault, stored beside the faults in drill_reports.faults (monitoring.drill.CONTROL).
DRILL_CONTROL = "control"
# The columns the heatmap's SQL expression needs (the full table lives in warehouse.schema, which this light module does not import).
DRIFT_RESULTS = sa.table(
    "drift_results", sa.column("model_name", sa.Text), sa.column("column_name", sa.Text), sa.column("test", sa.Text),
    sa.column("window_end"), sa.column("verdict", sa.Text), sa.column("effect_size", sa.Double),
)


class NotFound(PermanentError, LookupError):
    """What was asked for is not in the warehouse; the message says what to ask for instead."""


# --- read models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionSummary:
    version: int
    created_at: datetime
    holdout_auc: float | None
    holdout_brier: float | None


@dataclass(frozen=True)
class DayVolume:
    ds: date
    rows_scored: int  # rows the champion scored (shadow rows are counted apart)
    rows_rejected: int
    reject_rate: float | None  # rejected / (scored + rejected)
    positive_rate: float | None  # of the champion's rows


@dataclass(frozen=True)
class ModelOverview:
    model_name: str
    champion: VersionSummary | None
    challenger: VersionSummary | None
    open_incidents: int
    latest_day: DayVolume | None


@dataclass(frozen=True)
class DriftCheckRow:
    """One check's verdicts and effect sizes over the heatmap's windows, position by position."""

    column: str
    test: str
    verdicts: list[str | None]  # aligned with DriftHeatmap.windows; None where that window has no such test
    effect_sizes: list[float | None]

    @property
    def drifted(self) -> bool:
        return "drifted" in self.verdicts


@dataclass(frozen=True)
class DriftHeatmap:
    model_name: str
    since: datetime
    windows: list[datetime]  # window ends, oldest first: the columns
    checks: list[DriftCheckRow]  # the rows: features by name, then the score


@dataclass(frozen=True)
class SiblingTest:
    """Another test of the same column in the same window: its details hold the current side's numbers."""

    test: str
    statistic: float | None
    effect_size: float | None
    threshold: float | None
    verdict: str
    details: dict[str, Any]
    n_current: int | None


@dataclass(frozen=True)
class DriftCheckDetail:
    model_name: str
    model_version: int
    window_start: datetime
    window_end: datetime
    column: str
    test: str
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None
    effect_size: float | None
    threshold: float | None
    n_reference: int | None
    n_current: int | None
    verdict: str
    details: dict[str, Any]
    run_id: str
    checked_at: datetime
    # The champion's training reference for the column (reference_profiles): for numeric columns and
    # scores `edges` and `counts` (deciles of every training row), mean, std, rows, nulls; for
    # categorical ones `frequencies`, rows, nulls. The sample itself is left out (10,000 values).
    reference: dict[str, Any] | None
    siblings: list[SiblingTest] = field(default_factory=list)

    def details_of(self, test: str) -> dict[str, Any]:
        """The stored details of `test` (or its `score_` twin) in this column and window: this test's or a sibling's."""
        return next((details or {} for name, details, _ in self._tests() if name.removeprefix("score_") == test), {})

    def n_current_of(self, test: str) -> int | None:
        return next((n for name, _, n in self._tests() if name.removeprefix("score_") == test), None)

    def _tests(self) -> list[tuple[str, dict[str, Any], int | None]]:
        return [(self.test, self.details, self.n_current), *((s.test, s.details, s.n_current) for s in self.siblings)]


@dataclass(frozen=True)
class DailyVolume:
    ds: date
    rows_by_role: dict[str, int]
    rows_scored: int  # champion rows
    rows_rejected: int
    reject_rate: float | None
    positive_rate: float | None  # champion rows
    score_quantiles: dict[str, float]  # champion scores, "0.5" -> median
    shards: int | None = None  # how many shards scored it (1: one task); None before migration 0011


@dataclass(frozen=True)
class VersionRow:
    version: int
    created_at: datetime
    parent_version: int | None
    aliases: list[str]
    holdout_auc: float | None
    holdout_brier: float | None
    metrics: dict[str, Any]
    trained_on: dict[str, Any]
    sha256: str
    rolled_back_at: datetime | None
    rolled_back_reason: str | None


@dataclass(frozen=True)
class AliasEvent:
    id: int
    created_at: datetime
    event: str
    alias: str | None  # the alias the event moved; None for events that move none (rejected, registered_again)
    version: int | None
    previous_version: int | None
    actor: str
    reason: str


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool | None  # None: not applicable
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class PromotionDecision:
    id: int
    created_at: datetime
    decision: str  # promoted, forced or rejected
    version: int | None
    champion_version: int | None  # the champion it was validated against
    actor: str
    reason: str
    failed_gates: list[str]
    gates: list[Gate]


@dataclass(frozen=True)
class EscalatedCheck:
    check: str  # e.g. null_rate:country
    band: int  # its severity band in the window: 0 over its threshold, i from the i-th multiple of drift.severity_bands on
    previous_band: int | None  # the highest band it had reached in the incident; None when it is new to it
    ratio: float | None  # its largest effect size / threshold in the window


@dataclass(frozen=True)
class Escalation:
    """A window that grew an open incident, and when people were told."""

    id: int
    window_end: datetime
    checks: list[EscalatedCheck]  # the new ones, then the more severe ones
    drifted: list[str]  # every drifted check of the window
    created_at: datetime
    notified_at: datetime | None
    run_id: str


@dataclass(frozen=True)
class Incident:
    id: int
    kind: str  # drift (the hourly check), performance or volume (the daily one)
    status: str
    model_version: int
    drifted: list[str]  # what opened it: the drifted checks of its window, or the daily check's findings
    # Every check it has seen drifted, with the highest severity band reached; None when opened before migration 0007
    # and not extended since.
    checks: dict[str, int] | None
    escalations: list[Escalation]  # oldest first
    summary: str
    opened_window_end: datetime
    last_drifted_window_end: datetime
    resolved_window_end: datetime | None
    opened_at: datetime
    resolved_at: datetime | None
    open_notified_at: datetime | None
    resolved_notified_at: datetime | None
    run_id: str


@dataclass(frozen=True)
class Figure:
    """A metric's point figure and its confidence interval; any of them None where the day cannot define it."""

    value: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class PerformanceDay:
    """One scored day of one version and role: realized figures once its labels matured, the estimate from before."""

    ds: date
    rows_scored: int
    rows_labelled: int  # as the realized figures saw them; the estimate's count while none are written
    positives: int | None
    label_coverage: float | None  # rows_labelled / rows_scored: below 1 while labels are still maturing
    threshold: float | None  # the decision threshold precision, recall, f1 and positive_rate are at
    realized: dict[str, Figure]  # metric -> figure; empty while the day's labels mature
    estimated: dict[str, Figure]
    estimation_error: dict[str, float]  # metric -> estimate minus realized, for the metrics of a matured day

    @property
    def matured(self) -> bool:
        return bool(self.realized)


@dataclass(frozen=True)
class PerformanceSeries:
    model_version: int
    role: str
    days: list[PerformanceDay]  # oldest first

    def figures(self, source: str, metric: str, days: list[date]) -> list[Figure | None]:
        """The metric's figures of one source on `days` (a chart's shared axis); None where this series has none."""
        by_day = {day.ds: getattr(day, source).get(metric) for day in self.days}
        return [by_day.get(ds) for ds in days]


@dataclass(frozen=True)
class DatedFigure:
    ds: date
    model_version: int
    figure: Figure


@dataclass(frozen=True)
class ThresholdInForce:
    """The champion's decision threshold and the policy that chose it, as a sentence people can check."""

    model_version: int
    threshold: float | None  # None: registered before thresholds were stored; it scores at the spec's fixed threshold
    policy: dict[str, Any] | None  # {policy, target, threshold, validation: {precision, recall, ...}}
    description: str


@dataclass(frozen=True)
class PerformanceHistory:
    model_name: str
    since: date | None  # the first day of the range; None when nothing is stored
    series: list[PerformanceSeries]  # the champion role first (newest version first), then shadow
    threshold: ThresholdInForce | None  # None when the model has no champion
    # The champion role's ROC AUC at a glance: the latest matured day, the latest estimated day, and how far
    # estimates were from what the labels showed (mean |estimate - realized| over the matured days in range).
    latest_realized_auc: DatedFigure | None
    latest_estimated_auc: DatedFigure | None
    auc_estimation_mae: float | None
    auc_estimation_days: int

    @property
    def days(self) -> list[date]:
        """Every day any series has, oldest first: the shared axis of the page's chart."""
        return sorted({day.ds for series in self.series for day in series.days})

    @property
    def metrics(self) -> list[str]:
        """Every metric stored in range, in reading order (roc_auc first)."""
        stored = {metric for one in self.series for day in one.days for metric in (*day.realized, *day.estimated)}
        return sorted(stored, key=_metric_order)


@dataclass(frozen=True)
class VolumeDay:
    """One day of the volume and freshness check: its rows against the same weekday of the trailing weeks."""

    ds: date
    rows: int
    expected_rows: float | None  # median of the same weekday in the trailing weeks; None without enough history
    mad: float | None  # their median absolute deviation (unscaled)
    robust_z: float | None  # (rows - expected) / (1.4826 mad)
    relative_change: float | None  # (rows - expected) / expected
    rows_at_scoring: int | None  # rows the nightly run read; None when the day was not scored
    late_rows: int | None
    late_share: float | None
    verdict: str  # ok, low, high, missing, late, or why it could not be judged
    reason: str
    checked_at: datetime
    run_id: str

    @property
    def finding(self) -> bool:
        return self.verdict in VOLUME_FINDINGS

    def tolerated(self, max_robust_z: float, min_relative_change: float) -> tuple[float, float] | None:
        """The rows the day could have had and still be ok: expected ± the larger of max_robust_z scaled MADs and
        min_relative_change of the median, since the check needs both to flag a day."""
        if self.expected_rows is None:
            return None
        spread = max(max_robust_z * MAD_TO_SIGMA * (self.mad or 0.0), min_relative_change * self.expected_rows)
        return max(self.expected_rows - spread, 0.0), self.expected_rows + spread


@dataclass(frozen=True)
class ReleaseTest:
    """One comparison of a release's look: challenger (treatment) against champion (control), as promotion.canary judged it."""

    metric: str
    test: str  # two_proportion_z, welch_t, delong_unpaired, delong_paired
    role: str  # primary | guardrail
    control: float | None
    treatment: float | None
    difference: float | None  # treatment - control
    standard_error: float | None
    p_value: float | None  # fixed-sample, two-sided: for reference; the decision reads the always-valid interval
    cs_lower: float | None  # always-valid confidence sequence of the difference at this look
    cs_upper: float | None
    margin: float
    outcome: str  # superior, non_inferior, undecided, worse, breached, insufficient_data
    effect_size: float | None
    effect_name: str | None
    n_control: int | None
    n_treatment: int | None

    @property
    def tolerated(self) -> tuple[float | None, float | None]:
        """The differences the margin allows, (low, high), None for an open side: the challenger may be worse by the margin."""
        if self.metric in RELEASE_TWO_SIDED:
            return -self.margin, self.margin
        return (None, self.margin) if self.metric in RELEASE_LOWER_IS_BETTER else (-self.margin, None)


@dataclass(frozen=True)
class ReleaseLook:
    """One daily decision of a release (a release_decision event), with every test it made."""

    id: int  # the event's
    created_at: datetime
    actor: str
    release_id: int
    kind: str  # canary | guard
    version: int | None  # the challenger, or the new champion under guard
    baseline_version: int | None
    decided_on: date  # the first scored day a change applies to; the look saw the days before it
    verdict: str  # insufficient_data, hold, advance, promote, stop, pass
    reason: str
    applied: str | None  # what changed, e.g. "advanced to step 2: 25% of entities from ..."
    step: int | None  # 0-based
    share: float | None
    power: float | None  # to pass an equal challenger at this look
    required_n: int | None  # served rows per arm that power needs
    n_treatment: int  # served rows of the step's days (a guard: rows both versions scored, labelled)
    n_control: int
    tests: list[ReleaseTest]


@dataclass(frozen=True)
class RampStep:
    """One step of a canary's plan and how far it got."""

    step: int  # 0-based
    share: float
    state: str  # done, current, ended (the release ended in it), planned, not_reached
    effective_from: date | None  # the first scored day it served; None when not reached
    effective_until: date | None  # exclusive; None while in force
    days: int  # scored days it was judged on: to its end, or to its latest look
    looks: int
    last_verdict: str | None
    n_treatment: int | None  # served rows of its days, as its latest look counted them
    n_control: int | None


@dataclass(frozen=True)
class ReleaseArm:
    arm: str  # control (the champion serves) | treatment (the challenger serves)
    model_version: int
    share: float  # of entities now
    served_rows: int | None  # over the release's steps, as their latest looks counted them; None before the first look


@dataclass(frozen=True)
class Approval:
    """A person's answer to a canary awaiting approval (an approval event)."""

    created_at: datetime
    actor: str
    approved: bool
    reason: str


@dataclass(frozen=True)
class ReleaseSummary:
    id: int
    kind: str
    version: int
    baseline_version: int
    status: str
    started_on: date
    ends_on: date | None
    ended_at: datetime | None
    reason: str | None  # why it ended


@dataclass(frozen=True)
class ReleaseState:
    """The release under way, or the latest: a canary's arms and ramp, or a guard period after a promotion."""

    id: int
    kind: str  # canary | guard
    version: int  # the challenger under test, or the new champion under guard
    baseline_version: int  # the champion it is compared with, or the previous champion now in shadow
    status: str  # running, awaiting_approval, promoted, stopped, rejected, passed, rolled_back, cancelled
    active: bool
    started_on: date
    ends_on: date | None  # a guard's last day
    started_at: datetime
    ended_at: datetime | None
    actor: str
    reason: str | None  # why it ended
    step: int | None  # a canary's current step, 0-based
    share: float  # the challenger's share of entities now
    plan: list[float]  # a canary's shares, step by step; promotion follows the last
    primary_metric: str | None
    margin: float | None  # the canary's on the primary metric, or the guard's
    max_days_per_step: int | None
    needs_approval: bool
    guard_days: int | None
    ramp: list[RampStep]
    arms: list[ReleaseArm]
    days_in_step: int | None  # a canary's current step, or a guard: scored days judged by the latest look
    looks: int
    latest_look: ReleaseLook | None
    approval: Approval | None


@dataclass(frozen=True)
class ReleaseHistory:
    model_name: str
    current: ReleaseState | None  # under way, or the latest
    earlier: list[ReleaseSummary]  # newest first
    looks: list[ReleaseLook]  # the model's latest looks, newest first


@dataclass(frozen=True)
class DrillDetection:
    detector: str  # drift:<check>, prediction_drift:<test>, volume:<verdict>, performance:<source>:<metric>, reject_rate
    at: datetime
    delay_hours: float | None  # from the fault's start; None in the control


@dataclass(frozen=True)
class DrillFault:
    """What one sandbox of a chaos drill showed: the fault injected (none in the control) and each detector that fired."""

    fault: str
    start: datetime | None
    injected: dict[str, Any]  # what, where and how many rows changed
    expected: list[str]  # detector names (or their starts) that should fire
    caught: bool
    detections: list[DrillDetection]  # each detector the first time it fired, in order
    missed_expected: list[str]
    incidents: list[dict[str, Any]]  # kind, window_end, summary
    runs: dict[str, int]  # how many times each job ran in the sandbox


@dataclass(frozen=True)
class ChaosDrill:
    """The latest chaos drill of a model's monitors (drill_reports)."""

    id: int
    model_name: str
    run_id: str
    window_start: date
    window_end: date  # exclusive: the window is [window_start, window_end)
    last_day: date
    days: int
    status: str  # passed | failed
    faults: list[DrillFault]
    control: DrillFault | None
    unseen: list[str]  # faults no monitor fired on
    inconclusive: bool  # the control fired on clean data
    started_at: datetime
    finished_at: datetime


# --- helpers ----------------------------------------------------------------------------------


def _utc(value: Any) -> datetime | None:
    """Timestamps as aware UTC: SQLite gives naive UTC datetimes (or text through raw SQL), PostgreSQL aware ones."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _day(value: Any) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _number(value: Any) -> float | None:
    """A float JSON can carry: NaN and infinities (an effect size over a zero std) become None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --- the overview -----------------------------------------------------------------------------


def _version_summaries(engine: Engine, model_name: str) -> dict[str, VersionSummary]:
    query = sa.text(
        "SELECT a.alias, v.version, v.created_at, v.metrics FROM model_aliases a"
        " JOIN model_versions v ON v.model_name = a.model_name AND v.version = a.version WHERE a.model_name = :m"
    ).columns(created_at=TIMESTAMP, metrics=sa.JSON)
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name}).mappings().all()
    summaries = {}
    for row in rows:
        validation = row["metrics"].get("validation") or {}
        summaries[row["alias"]] = VersionSummary(
            row["version"], _utc(row["created_at"]), _number(validation.get("roc_auc")), _number(validation.get("brier"))
        )
    return summaries


def _days(engine: Engine, model_name: str, since: date | None) -> list[DailyVolume]:
    """Per-day counts by role, rejects, positive rate and champion score quantiles, newest last.

    Read from daily_scoring, which the nightly writer fills with each day's partition (migration 0005).
    """
    bound = "" if since is None else " AND ds >= :since"
    query = sa.text(
        f"SELECT ds, role, rows_scored, positives, rows_rejected, shards, {', '.join(QUANTILE_COLUMNS)} FROM daily_scoring"
        f" WHERE model_name = :m{bound} ORDER BY ds, role"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name, "since": since}).mappings().all()
    by_day: dict[date, list[Any]] = {}
    for row in rows:
        by_day.setdefault(_day(row["ds"]), []).append(row)
    volumes = []
    for ds, day_rows in by_day.items():
        roles = {row["role"]: row for row in day_rows}
        champion = roles.get("champion")
        scored = int(champion["rows_scored"]) if champion else 0
        rejected = int(day_rows[0]["rows_rejected"])
        quantiles = {}
        if champion and scored:
            quantiles = {str(q): float(champion[column]) for q, column in zip(SCORE_QUANTILES, QUANTILE_COLUMNS, strict=True)}
        volumes.append(
            DailyVolume(
                ds=ds,
                rows_by_role={role: int(row["rows_scored"]) for role, row in roles.items() if row["rows_scored"]},
                rows_scored=scored,
                rows_rejected=rejected,
                reject_rate=_rate(rejected, scored + rejected),
                positive_rate=_rate(int(champion["positives"]) if champion else 0, scored),
                score_quantiles=quantiles,
                shards=day_rows[0]["shards"],
            )
        )
    return volumes


def _latest_day(engine: Engine, model_name: str) -> date | None:
    with engine.connect() as connection:
        latest = connection.execute(sa.text("SELECT MAX(ds) FROM daily_scoring WHERE model_name = :m"), {"m": model_name}).scalar_one()
    return None if latest is None else _day(latest)


def model_overview(engine: Engine, model_name: str) -> ModelOverview:
    """Champion and challenger with their holdout metrics, open incidents, and the latest scored day."""
    summaries = _version_summaries(engine, model_name)
    with engine.connect() as connection:
        open_incidents = connection.execute(
            sa.text("SELECT COUNT(*) FROM alerts WHERE model_name = :m AND status = 'open'"), {"m": model_name}
        ).scalar_one()
    latest = _latest_day(engine, model_name)
    latest_day = None
    if latest is not None:
        [day] = [volume for volume in _days(engine, model_name, latest) if volume.ds == latest]
        latest_day = DayVolume(day.ds, day.rows_scored, day.rows_rejected, day.reject_rate, day.positive_rate)
    return ModelOverview(model_name, summaries.get("champion"), summaries.get("challenger"), int(open_incidents), latest_day)


def prediction_volume(engine: Engine, model_name: str, *, days: int = 30) -> list[DailyVolume]:
    """The last `days` scored days (counted back from the latest), oldest first."""
    latest = _latest_day(engine, model_name)
    if latest is None:
        return []
    return _days(engine, model_name, latest - timedelta(days=days - 1))


# --- drift ------------------------------------------------------------------------------------


def drift_heatmap(engine: Engine, model_name: str, *, days: int = 30, now: datetime | None = None) -> DriftHeatmap:
    """Every check (column x test) against every window that ended in the last `days` days before `now`.

    Thirty days of hourly windows are tens of thousands of rows a model. Fetched one by one they cost
    the driver ~100 ms of parsing, so the database packs each check into one string of
    `epoch:verdict:effect` items (string_agg on PostgreSQL, group_concat on SQLite) and index 0006
    serves them in check order; items carry their window, so the packing order does not matter.
    """
    since = (now or datetime.now(timezone.utc)).astimezone(timezone.utc) - timedelta(days=days)
    results = DRIFT_RESULTS.c
    epoch = sa.cast(sa.cast(sa.extract("epoch", results.window_end), sa.BigInteger), sa.Text)
    item = epoch + ":" + results.verdict + ":" + sa.func.coalesce(sa.cast(results.effect_size, sa.Text), "")
    query = (
        sa.select(results.column_name, results.test, sa.func.aggregate_strings(item, ","))
        .where(results.model_name == model_name, sa.text("window_end >= :since"))
        .group_by(results.column_name, results.test)
    )
    with engine.connect() as connection:
        # `since` is bound as given, as the writers bind window_end (SQLite compares the stored text).
        packed = connection.execute(query, {"since": since}).all()
    # Unpacked in two passes that keep no per-item containers: tens of thousands of live lists would
    # set off Python's full garbage collection of the API server's heap every few requests.
    epochs = sorted({int(item[: item.index(":")]) for _, _, items in packed for item in items.split(",")})
    position = {str(second): i for i, second in enumerate(epochs)}
    checks = []
    for column, test, items in packed:
        verdicts: list[str | None] = [None] * len(epochs)
        effect_sizes: list[float | None] = [None] * len(epochs)
        for item in items.split(","):
            second, verdict, effect = item.split(":")
            i = position[second]
            verdicts[i] = verdict
            effect_sizes[i] = _number(effect) if effect else None
        checks.append(DriftCheckRow(column, test, verdicts, effect_sizes))
    checks.sort(key=lambda check: (check.column == SCORE_COLUMN, check.column, check.test))
    windows = [datetime.fromtimestamp(second, timezone.utc) for second in epochs]
    return DriftHeatmap(model_name, _utc(since), windows, checks)


def drift_check(engine: Engine, model_name: str, *, window_end: datetime, column: str, test: str) -> DriftCheckDetail:
    """One stored test with the training reference of its column and the other tests of the column in that window."""
    query = sa.text(
        "SELECT * FROM drift_results WHERE model_name = :m AND window_end = :e AND column_name = :c ORDER BY test"
    ).columns(window_start=TIMESTAMP, window_end=TIMESTAMP, checked_at=TIMESTAMP, details=sa.JSON)
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name, "e": window_end.astimezone(timezone.utc), "c": column}).mappings().all()
        [row] = [row for row in rows if row["test"] == test] or [None]
        if row is None:
            raise NotFound(
                f"{model_name} has no drift test {test!r} of column {column!r} in the window ending {window_end.isoformat()}; "
                "the heatmap lists the stored checks and windows"
            )
        reference = connection.execute(
            sa.text(
                "SELECT profile FROM reference_profiles WHERE model_name = :m AND model_version = :v AND column_name = :c"
            ).columns(profile=sa.JSON),
            {"m": model_name, "v": row["model_version"], "c": column},
        ).scalar_one_or_none()
    siblings = [
        SiblingTest(other["test"], _number(other["statistic"]), _number(other["effect_size"]), _number(other["threshold"]), other["verdict"],
                    other["details"], other["n_current"])
        for other in rows if other["test"] != test
    ]
    return DriftCheckDetail(
        model_name=model_name,
        model_version=row["model_version"],
        window_start=_utc(row["window_start"]),
        window_end=_utc(row["window_end"]),
        column=column,
        test=test,
        statistic=_number(row["statistic"]),
        p_value=_number(row["p_value"]),
        p_adjusted=_number(row["p_adjusted"]),
        effect_size=_number(row["effect_size"]),
        threshold=_number(row["threshold"]),
        n_reference=row["n_reference"],
        n_current=row["n_current"],
        verdict=row["verdict"],
        details=row["details"],
        run_id=row["run_id"],
        checked_at=_utc(row["checked_at"]),
        reference=None if reference is None else {key: value for key, value in reference.items() if key != "sample"},
        siblings=siblings,
    )


# --- the registry -----------------------------------------------------------------------------


def versions(engine: Engine, model_name: str) -> list[VersionRow]:
    """Every version with its holdout metrics, lineage, current aliases and rollback mark, newest first."""
    query = sa.text(
        "SELECT version, created_at, parent_version, metrics, trained_on, sha256, rolled_back_at, rolled_back_reason"
        " FROM model_versions WHERE model_name = :m ORDER BY version DESC"
    ).columns(created_at=TIMESTAMP, rolled_back_at=TIMESTAMP, metrics=sa.JSON, trained_on=sa.JSON)
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name}).mappings().all()
        aliases = connection.execute(sa.text("SELECT version, alias FROM model_aliases WHERE model_name = :m ORDER BY alias"),
                                     {"m": model_name}).all()
    by_version: dict[int, list[str]] = {}
    for version, alias in aliases:
        by_version.setdefault(version, []).append(alias)
    return [
        VersionRow(
            version=row["version"],
            created_at=_utc(row["created_at"]),
            parent_version=row["parent_version"],
            aliases=by_version.get(row["version"], []),
            holdout_auc=_number((row["metrics"].get("validation") or {}).get("roc_auc")),
            holdout_brier=_number((row["metrics"].get("validation") or {}).get("brier")),
            metrics=row["metrics"],
            trained_on=row["trained_on"],
            sha256=row["sha256"],
            rolled_back_at=_utc(row["rolled_back_at"]),
            rolled_back_reason=row["rolled_back_reason"],
        )
        for row in rows
    ]


def _events(engine: Engine, model_name: str, kinds: tuple[str, ...] | None = None) -> list[Any]:
    where = "" if kinds is None else " AND event IN :kinds"
    query = sa.text(
        "SELECT id, created_at, event, version, previous_version, actor, reason, details FROM model_events"
        f" WHERE model_name = :m{where} ORDER BY id"
    ).columns(created_at=TIMESTAMP, details=sa.JSON)
    if kinds is not None:
        query = query.bindparams(sa.bindparam("kinds", expanding=True))
    with engine.connect() as connection:
        return list(connection.execute(query, {"m": model_name, **({} if kinds is None else {"kinds": list(kinds)})}).mappings())


def alias_history(engine: Engine, model_name: str) -> list[AliasEvent]:
    """The audit log, oldest first: who moved which alias to what, when and why (CLI rollbacks included). A release's daily
    looks have their own read model (release_decisions); the promotions, rollbacks and approvals they lead to stay here."""
    return [
        AliasEvent(row["id"], _utc(row["created_at"]), row["event"], ALIAS_OF_EVENT.get(row["event"]), row["version"],
                   row["previous_version"], row["actor"], row["reason"])
        for row in _events(engine, model_name) if row["event"] != RELEASE_DECISION
    ]


def promotion_decisions(engine: Engine, model_name: str) -> list[PromotionDecision]:
    """Each decision of the weekly retrain with every gate and its number, newest first."""
    decisions = []
    for row in reversed(_events(engine, model_name, DECISION_EVENTS)):
        details = row["details"] or {}
        gates = [Gate(g["name"], g.get("passed"), _number(g.get("value")), _number(g.get("threshold")), g.get("detail", ""))
                 for g in details.get("gates", [])]
        decisions.append(
            PromotionDecision(
                id=row["id"],
                created_at=_utc(row["created_at"]),
                decision=row["event"],
                version=row["version"],
                champion_version=row["previous_version"],
                actor=row["actor"],
                reason=row["reason"],
                failed_gates=list(details.get("failed_gates", [])),
                gates=gates,
            )
        )
    return decisions


# --- incidents --------------------------------------------------------------------------------


def incidents(engine: Engine, model_name: str) -> list[Incident]:
    """Open and resolved incidents, newest first, with what opened them, what grew them and when people were told."""
    stamps = ("opened_window_end", "last_drifted_window_end", "resolved_window_end", "opened_at", "resolved_at", "open_notified_at",
              "resolved_notified_at")
    query = sa.text(f"SELECT id, kind, status, model_version, drifted, checks, summary, run_id, {', '.join(stamps)} FROM alerts"
                    " WHERE model_name = :m ORDER BY id DESC").columns(drifted=sa.JSON, checks=sa.JSON, **dict.fromkeys(stamps, TIMESTAMP))
    grown = sa.text(
        "SELECT e.id, e.alert_id, e.window_end, e.new_checks, e.raised, e.drifted, e.created_at, e.notified_at, e.run_id"
        " FROM alert_escalations e JOIN alerts a ON a.id = e.alert_id WHERE a.model_name = :m ORDER BY e.id"
    ).columns(new_checks=sa.JSON, raised=sa.JSON, drifted=sa.JSON, window_end=TIMESTAMP, created_at=TIMESTAMP, notified_at=TIMESTAMP)
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name}).mappings().all()
        escalations: dict[int, list[Escalation]] = {}
        for row in connection.execute(grown, {"m": model_name}).mappings():
            checks = [EscalatedCheck(c["check"], c["band"], c.get("previous_band"), _number(c.get("ratio")))
                      for c in [*row["new_checks"], *row["raised"]]]
            escalations.setdefault(row["alert_id"], []).append(
                Escalation(row["id"], _utc(row["window_end"]), checks, list(row["drifted"]), _utc(row["created_at"]),
                           _utc(row["notified_at"]), row["run_id"])
            )
    return [
        Incident(id=row["id"], kind=row["kind"], status=row["status"], model_version=row["model_version"], drifted=list(row["drifted"]),
                 checks=row["checks"], escalations=escalations.get(row["id"], []), summary=row["summary"], run_id=row["run_id"],
                 **{name: _utc(row[name]) for name in stamps})
        for row in rows
    ]


# --- outcomes ---------------------------------------------------------------------------------


def _percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def describe_threshold(model_version: int, threshold: float | None, policy: dict[str, Any] | None, scored_at: float | None) -> str:
    """The threshold in force as one line, e.g. "alert_rate 1% → threshold 0.187, validation precision 0.41, recall 0.38".

    `scored_at` is the threshold the daily figures were computed at: for a version stored before thresholds
    were, the only record of the spec's fixed threshold it scores at.
    """
    if threshold is None:
        at = "" if scored_at is None else f"threshold {scored_at:.3g}, "
        return f"{at}the spec's fixed threshold (v{model_version} was stored before thresholds were)"
    policy = policy or {}
    name, target = str(policy.get("policy", "fixed")).lower().replace("_", ""), policy.get("target")
    if name == "alertrate" and target is not None:
        chosen = f"alert_rate {_percent(float(target))} → threshold {threshold:.3g}"
    elif name == "minprecision" and target is not None:
        chosen = f"min_precision {float(target):.3g} → threshold {threshold:.3g}"
    else:
        chosen = f"fixed threshold {threshold:.3g}"
    validation = policy.get("validation") or {}
    reached = [f"{metric} {float(validation[metric]):.2f}" for metric in ("precision", "recall") if validation.get(metric) is not None]
    if validation.get("positive_rate") is not None:
        reached.append(f"flagging {_percent(float(validation['positive_rate']))}")
    return chosen + (f", validation {', '.join(reached)}" if reached else "")


def _metric_order(metric: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), metric)


def _performance_day(ds: date, rows: list[Any]) -> PerformanceDay:
    """One day of one series from its stored rows (both sources, every metric)."""
    by_source: dict[str, dict[str, Figure]] = {"realized": {}, "estimated": {}}
    errors = {}
    for row in sorted(rows, key=lambda row: _metric_order(row["metric"])):
        by_source.setdefault(row["source"], {})[row["metric"]] = Figure(_number(row["value"]), _number(row["lower"]), _number(row["upper"]))
        error = _number(row["estimation_error"])
        if row["source"] == "estimated" and error is not None:
            errors[row["metric"]] = error
    # Counts are the same on every row of a source; the realized ones are rewritten as late labels arrive.
    counts = next((row for row in rows if row["source"] == "realized"), rows[0])
    scored, labelled = int(counts["rows_scored"]), int(counts["rows_labelled"])
    return PerformanceDay(
        ds=ds,
        rows_scored=scored,
        rows_labelled=labelled,
        positives=None if counts["positives"] is None else int(counts["positives"]),
        label_coverage=_rate(labelled, scored),
        threshold=_number(counts["threshold"]),
        realized=by_source["realized"],
        estimated=by_source["estimated"],
        estimation_error=errors,
    )


def performance(engine: Engine, model_name: str, *, days: int = 60) -> PerformanceHistory:
    """Realized and estimated figures per version and role over the last `days` days (counted back from the latest), with
    label coverage, estimation errors, the champion's AUC at a glance and the threshold in force."""
    # One row whatever exists: the latest stored day and the champion's threshold (NULLs when there is none).
    context = sa.text(
        "SELECT (SELECT MAX(ds) FROM performance_daily WHERE model_name = :m) AS latest, v.version, v.threshold, v.threshold_policy"
        " FROM (SELECT 1 AS one) AS one LEFT JOIN model_aliases a ON a.model_name = :m AND a.alias = 'champion'"
        " LEFT JOIN model_versions v ON v.model_name = a.model_name AND v.version = a.version"
    ).columns(threshold_policy=sa.JSON)
    stored = sa.text(
        "SELECT ds, model_version, role, source, metric, value, lower, upper, threshold, rows_scored, rows_labelled, positives,"
        " estimation_error FROM performance_daily WHERE model_name = :m AND ds >= :since ORDER BY model_version, role, ds"
    )
    with engine.connect() as connection:
        latest, champion, threshold, policy = connection.execute(context, {"m": model_name}).one()
        since = None if latest is None else _day(latest) - timedelta(days=days - 1)
        rows = [] if since is None else connection.execute(stored, {"m": model_name, "since": since}).mappings().all()

    grouped: dict[tuple[int, str], dict[date, list[Any]]] = {}
    for row in rows:
        grouped.setdefault((row["model_version"], row["role"]), {}).setdefault(_day(row["ds"]), []).append(row)
    series = [
        PerformanceSeries(version, role, [_performance_day(ds, day_rows) for ds, day_rows in sorted(by_day.items())])
        for (version, role), by_day in grouped.items()
    ]
    series.sort(key=lambda one: (one.role != "champion", one.role, -one.model_version))

    champion_days = sorted(
        ((day, one.model_version) for one in series if one.role == "champion" for day in one.days), key=lambda pair: pair[0].ds
    )
    realized = [(day, version) for day, version in champion_days if "roc_auc" in day.realized]
    estimated = [(day, version) for day, version in champion_days if "roc_auc" in day.estimated]
    errors = [abs(day.estimation_error["roc_auc"]) for day, _ in champion_days if "roc_auc" in day.estimation_error]
    in_force = None
    if champion is not None:
        scored_at = next((day.threshold for day, version in reversed(champion_days) if version == champion), None)
        in_force = ThresholdInForce(champion, _number(threshold), policy,
                                    describe_threshold(champion, _number(threshold), policy, scored_at))
    return PerformanceHistory(
        model_name=model_name,
        since=since,
        series=series,
        threshold=in_force,
        latest_realized_auc=DatedFigure(realized[-1][0].ds, realized[-1][1], realized[-1][0].realized["roc_auc"]) if realized else None,
        latest_estimated_auc=DatedFigure(estimated[-1][0].ds, estimated[-1][1], estimated[-1][0].estimated["roc_auc"]) if estimated else None,
        auc_estimation_mae=sum(errors) / len(errors) if errors else None,
        auc_estimation_days=len(errors),
    )


def volume_checks(engine: Engine, model_name: str, *, days: int = 60) -> list[VolumeDay]:
    """The daily volume and freshness verdicts of the last `days` days (counted back from the latest checked), oldest first."""
    columns = ("rows", "expected_rows", "mad", "robust_z", "relative_change", "rows_at_scoring", "late_rows", "late_share", "verdict",
               "reason", "checked_at", "run_id")
    with engine.connect() as connection:
        latest = connection.execute(sa.text("SELECT MAX(ds) FROM volume_daily WHERE model_name = :m"), {"m": model_name}).scalar_one()
        if latest is None:
            return []
        rows = connection.execute(
            sa.text(f"SELECT ds, {', '.join(columns)} FROM volume_daily WHERE model_name = :m AND ds >= :since ORDER BY ds")
            .columns(checked_at=TIMESTAMP),
            {"m": model_name, "since": _day(latest) - timedelta(days=days - 1)},
        ).mappings().all()
    return [
        VolumeDay(
            ds=_day(row["ds"]),
            rows=int(row["rows"]),
            expected_rows=_number(row["expected_rows"]),
            mad=_number(row["mad"]),
            robust_z=_number(row["robust_z"]),
            relative_change=_number(row["relative_change"]),
            rows_at_scoring=row["rows_at_scoring"],
            late_rows=row["late_rows"],
            late_share=_number(row["late_share"]),
            verdict=row["verdict"],
            reason=row["reason"],
            checked_at=_utc(row["checked_at"]),
            run_id=row["run_id"],
        )
        for row in rows
    ]


# --- releases ---------------------------------------------------------------------------------


def _release_test(test: dict[str, Any]) -> ReleaseTest:
    def count(key: str) -> int | None:
        return None if test.get(key) is None else int(test[key])

    return ReleaseTest(
        metric=test["metric"], test=test["test"], role=test.get("role", ""), control=_number(test.get("control")),
        treatment=_number(test.get("treatment")), difference=_number(test.get("difference")),
        standard_error=_number(test.get("standard_error")), p_value=_number(test.get("p_value")), cs_lower=_number(test.get("cs_lower")),
        cs_upper=_number(test.get("cs_upper")), margin=float(test["margin"]), outcome=test["outcome"],
        effect_size=_number(test.get("effect_size")), effect_name=test.get("effect_name"), n_control=count("n_control"),
        n_treatment=count("n_treatment"),
    )


def _release_look(row: Any) -> ReleaseLook:
    look = row["details"]
    return ReleaseLook(
        id=row["id"], created_at=_utc(row["created_at"]), actor=row["actor"], release_id=int(look["release_id"]), kind=look["kind"],
        version=row["version"], baseline_version=row["previous_version"], decided_on=_day(look["decided_on"]), verdict=look["verdict"],
        reason=look["reason"], applied=look.get("applied"), step=look.get("step"), share=_number(look.get("share")),
        power=_number(look.get("power")), required_n=look.get("required_n"), n_treatment=int(look.get("n_treatment") or 0),
        n_control=int(look.get("n_control") or 0), tests=[_release_test(test) for test in look.get("tests", [])],
    )


def _looks(connection: Connection, model_name: str, *, after_id: int = 0, limit: int | None = None) -> list[ReleaseLook]:
    """release_decision events after the event `after_id`, newest first: a year of daily looks is hundreds of JSON documents."""
    query = sa.text(
        "SELECT id, created_at, version, previous_version, actor, details FROM model_events"
        f" WHERE model_name = :m AND event = :e AND id > :after ORDER BY id DESC{'' if limit is None else ' LIMIT :n'}"
    ).columns(created_at=TIMESTAMP, details=sa.JSON)
    rows = connection.execute(query, {"m": model_name, "e": RELEASE_DECISION, "after": after_id, "n": limit}).mappings()
    return [_release_look(row) for row in rows]


def release_decisions(engine: Engine, model_name: str, *, limit: int = 20) -> list[ReleaseLook]:
    """The latest daily looks of the model's releases, newest first, each with its tests, power and what it changed."""
    with engine.connect() as connection:
        return _looks(connection, model_name, limit=limit)


def _ramp(plan: list[float], steps: list[Any], looks: list[ReleaseLook], active: bool, status: str) -> list[RampStep]:
    """Every planned step: done, current (or where the release stopped), or never reached; each with the days and served rows
    its latest look saw."""
    stored = {row["step"]: row for row in steps}
    reached = max(stored, default=-1)
    ramp = []
    for step, share in enumerate(plan):
        own = [look for look in looks if look.step == step]  # newest first
        row = stored.get(step)
        last = own[0] if own else None
        if row is None:
            ramp.append(RampStep(step, share, "planned" if active else "not_reached", None, None, 0, 0, None, None, None))
            continue
        start, until = _day(row["effective_from"]), None if row["effective_until"] is None else _day(row["effective_until"])
        if step < reached or status == "promoted":
            state = "done"
        else:
            state = "current" if active else "ended"
        end = until or (last.decided_on if last else start)
        ramp.append(RampStep(step, share, state, start, until, max((end - start).days, 0), len(own), last.verdict if last else None,
                             last.n_treatment if last else None, last.n_control if last else None))
    return ramp


def _release_state(connection: Connection, row: Any, looks: list[ReleaseLook]) -> ReleaseState:
    plan = row["plan"] or {}
    canary = plan.get("canary") or {}
    is_canary = row["kind"] == "canary"
    active = row["status"] in RELEASE_ACTIVE
    steps = connection.execute(
        sa.text("SELECT step, share, effective_from, effective_until FROM release_steps WHERE release_id = :r ORDER BY step"), {"r": row["id"]}
    ).mappings().all()
    approvals = connection.execute(
        sa.text("SELECT created_at, actor, reason, details FROM model_events WHERE model_name = :m AND event = 'approval' ORDER BY id DESC")
        .columns(created_at=TIMESTAMP, details=sa.JSON),
        {"m": row["model_name"]},
    ).mappings().all()
    approval = next((Approval(_utc(a["created_at"]), a["actor"], bool(a["details"].get("approved")), a["reason"])
                     for a in approvals if a["details"].get("release_id") == row["id"]), None)
    shares = [float(share) for share in canary.get("steps", [])] if is_canary else []
    step = row["step"]
    share = shares[step] if is_canary and step is not None and row["status"] in (*RELEASE_ACTIVE, "promoted") else 0.0
    ramp = _ramp(shares, steps, looks, active, row["status"]) if is_canary else []
    arms = []
    if is_canary:
        counted = [one for one in ramp if one.n_treatment is not None]
        served = {arm: sum(getattr(one, f"n_{arm}") for one in counted) if counted else None for arm in ("control", "treatment")}
        arms = [ReleaseArm("control", row["baseline_version"], 1 - share, served["control"]),
                ReleaseArm("treatment", row["version"], share, served["treatment"])]
    latest = looks[0] if looks else None
    current = next((one for one in ramp if one.state in ("current", "ended")), None)
    days_in_step = current.days if current else None
    if not is_canary:
        days_in_step = (latest.decided_on - _day(row["started_on"])).days if latest else 0
    return ReleaseState(
        id=row["id"], kind=row["kind"], version=row["version"], baseline_version=row["baseline_version"], status=row["status"],
        active=active, started_on=_day(row["started_on"]), ends_on=None if row["ends_on"] is None else _day(row["ends_on"]),
        started_at=_utc(row["started_at"]), ended_at=_utc(row["ended_at"]), actor=row["actor"], reason=row["reason"], step=step,
        # A guard compares the two champions' ROC AUC on the same rows (promotion.canary's guard look).
        share=share, plan=shares, primary_metric=canary.get("primary_metric") if is_canary else "roc_auc",
        margin=_number(canary.get("margin") if is_canary else plan.get("guard_margin")), max_days_per_step=canary.get("max_days_per_step"),
        needs_approval=bool(plan.get("approval")), guard_days=plan.get("guard_days"), ramp=ramp, arms=arms, days_in_step=days_in_step,
        looks=len(looks), latest_look=latest, approval=approval,
    )


def release_history(engine: Engine, model_name: str, *, looks: int = 20, earlier: int = 10) -> ReleaseHistory:
    """The release under way or the latest (a model has one at a time, so it is the newest), the ones before it, and the
    model's latest looks.

    Served rows per arm come from the looks, which count them from predictions.arm each morning: counting a month of
    canary rows on every page view would read millions of rows.
    """
    query = sa.text(
        "SELECT id, model_name, kind, version, baseline_version, status, plan, step, started_on, ends_on, started_at, ended_at, reason,"
        " actor FROM releases WHERE model_name = :m ORDER BY id DESC LIMIT :n"
    ).columns(plan=sa.JSON, started_at=TIMESTAMP, ended_at=TIMESTAMP)
    # The newest release started with the newest start event; its looks come after that (the canary's last look may
    # follow its guard's start: promotion starts the guard before the look is recorded, hence the filter by release).
    started = sa.text("SELECT MAX(id) FROM model_events WHERE model_name = :m AND event IN ('canary_started', 'guard_started')")
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name, "n": earlier + 1}).mappings().all()
        recent = _looks(connection, model_name, limit=looks)
        current = None
        if rows:
            since = connection.execute(started, {"m": model_name}).scalar() or 0
            own = [look for look in _looks(connection, model_name, after_id=since) if look.release_id == rows[0]["id"]]
            current = _release_state(connection, rows[0], own)
    return ReleaseHistory(
        model_name=model_name,
        current=current,
        earlier=[ReleaseSummary(row["id"], row["kind"], row["version"], row["baseline_version"], row["status"], _day(row["started_on"]),
                                None if row["ends_on"] is None else _day(row["ends_on"]), _utc(row["ended_at"]), row["reason"])
                 for row in rows[1:]],
        looks=recent,
    )


# --- the chaos drill --------------------------------------------------------------------------


def _drill_fault(entry: dict[str, Any]) -> DrillFault:
    return DrillFault(
        fault=entry["fault"], start=_utc(entry.get("start")), injected=entry.get("injected") or {}, expected=list(entry.get("expected", [])),
        caught=bool(entry.get("caught")),
        detections=[DrillDetection(d["detector"], _utc(d["at"]), _number(d.get("delay_hours"))) for d in entry.get("detections", [])],
        missed_expected=list(entry.get("missed_expected", [])), incidents=list(entry.get("incidents", [])), runs=dict(entry.get("runs", {})),
    )


def latest_drill(engine: Engine, model_name: str) -> ChaosDrill | None:
    """The model's last chaos drill: each fault with the detectors that caught it and how many hours after it began, and the
    control; None before the first drill."""
    query = sa.text(
        "SELECT id, run_id, window_start, window_end, status, faults, started_at, finished_at FROM drill_reports WHERE model_name = :m"
        " ORDER BY finished_at DESC, id DESC LIMIT 1"
    ).columns(faults=sa.JSON, started_at=TIMESTAMP, finished_at=TIMESTAMP)
    with engine.connect() as connection:
        row = connection.execute(query, {"m": model_name}).mappings().first()
    if row is None:
        return None
    results = [_drill_fault(entry) for entry in row["faults"]]
    faults = [result for result in results if result.fault != DRILL_CONTROL]
    control = next((result for result in results if result.fault == DRILL_CONTROL), None)
    start, end = _day(row["window_start"]), _day(row["window_end"])
    return ChaosDrill(
        id=row["id"], model_name=model_name, run_id=row["run_id"], window_start=start, window_end=end, last_day=end - timedelta(days=1),
        days=(end - start).days, status=row["status"], faults=faults, control=control, unseen=[fault.fault for fault in faults if not fault.caught],
        inconclusive=control is not None and control.caught, started_at=_utc(row["started_at"]), finished_at=_utc(row["finished_at"]),
    )
