"""Model specs: the one file a user edits to add a model.

A spec is YAML validated with pydantic. Unknown keys are errors, so a typo fails at load time
with the path of the offending field instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, FiniteFloat, Tag, ValidationError, ValidationInfo, field_validator, model_validator

from batchwatch.errors import PermanentError

# Lower case only: generated SQL quotes every name, so keywords are safe and case never folds.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
QUALIFIED_IDENTIFIER = re.compile(r"^([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*$")
DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# Each schedule's cron shape, and how an error names it.
CRON_SHAPES = {
    "nightly_predict": (re.compile(r"^([0-5]?[0-9]) +(1?[0-9]|2[0-3]) +\* +\* +\*$"), "a daily cron expression 'minute hour * * *'"),
    "hourly_drift": (re.compile(r"^([0-5]?[0-9]) +\* +\* +\* +\*$"), "an hourly cron expression 'minute * * * *'"),
    "daily_performance": (re.compile(r"^([0-5]?[0-9]) +(1?[0-9]|2[0-3]) +\* +\* +\*$"), "a daily cron expression 'minute hour * * *'"),
    "daily_release": (re.compile(r"^([0-5]?[0-9]) +(1?[0-9]|2[0-3]) +\* +\* +\*$"), "a daily cron expression 'minute hour * * *'"),
    "weekly_retrain": (re.compile(r"^([0-5]?[0-9]) +(1?[0-9]|2[0-3]) +\* +\* +[0-6]$"), "a weekly cron expression 'minute hour * * day-of-week'"),
}

DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[2] / "models"


class SpecError(PermanentError, ValueError):
    """A model spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain lower-case SQL identifier (a-z, 0-9, underscore)")
    return value


def _dotted_path(value: str) -> str:
    if not DOTTED_PATH.match(value):
        raise ValueError(f"{value!r} is not a dotted path like 'package.module.function'")
    return value


def missing_module(dotted_path: str) -> str | None:
    """The module of `package.module.name` if it cannot be found, found without importing it."""
    module = dotted_path.rsplit(".", 1)[0]
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    return module if found is None else None


def _importable_dotted_path(value: str) -> str:
    """Check the module exists without importing it, so loading a spec stays cheap at DAG parse."""
    module = missing_module(_dotted_path(value))
    if module is not None:
        raise ValueError(f"module {module!r} of {value!r} cannot be found on the Python path")
    return value


def quote(identifier: str) -> str:
    """An identifier for generated SQL; spec names are validated, so they never contain quotes."""
    return f'"{identifier}"'


def resolve(dotted_path: str, field: str) -> Callable[..., Any]:
    """Import the object a spec names, with an error that says which field named it."""
    module_name, attr = dotted_path.rsplit(".", 1)
    obj = getattr(importlib.import_module(module_name), attr, None)
    if not callable(obj):
        raise SpecError(f"{field}: {dotted_path!r} does not name a callable")
    return obj


class Source(_Strict):
    """Where the rows to score come from; `table` or `query` (a SELECT used as a subquery)."""

    table: str | None = None
    query: str | None = None
    entity_key: str
    event_time: str

    _check_key = field_validator("entity_key", "event_time")(_identifier)

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str | None) -> str | None:
        if value is not None and not QUALIFIED_IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lower-case table name (optionally schema.table)")
        return value

    @model_validator(mode="after")
    def _one_of_table_or_query(self) -> Source:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self

    @property
    def relation(self) -> str:
        return ".".join(map(quote, self.table.split("."))) if self.table else f"({self.query})"

    @property
    def field(self) -> str:
        """The spec field the rows' SQL comes from: what to correct when the database refuses that SQL."""
        return "source.query" if self.query is not None else "source.table"


class Feature(_Strict):
    """A source column used as a model input, with what counts as a valid value."""

    name: str
    type: Literal["numeric", "integer", "categorical"]
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nulls: Literal["allow", "reject"] = "allow"
    unknown_categories: Literal["reject", "allow"] = "reject"

    _check_name = field_validator("name")(_identifier)

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs 'categories'")
            if self.min is not None or self.max is not None:
                raise ValueError(f"categorical feature {self.name!r} cannot have min/max")
        elif self.categories is not None:
            raise ValueError(f"{self.type} feature {self.name!r} cannot have 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is greater than max {self.max}")
        return self

    @property
    def is_categorical(self) -> bool:
        return self.type == "categorical"


class DerivedColumn(_Strict):
    name: str
    type: Literal["numeric", "categorical"] = "numeric"
    categories: tuple[str, ...] | None = None

    _check_name = field_validator("name")(_identifier)

    @model_validator(mode="after")
    def _categories_iff_categorical(self) -> DerivedColumn:
        if (self.type == "categorical") != bool(self.categories):
            raise ValueError(f"derived column {self.name!r}: 'categories' is required for categorical columns and only for them")
        return self


class DerivedFeatures(_Strict):
    """One function `f(frame) -> frame` computing the declared extra columns from source features."""

    function: str
    columns: tuple[DerivedColumn, ...] = Field(min_length=1)

    _check_function = field_validator("function")(_importable_dotted_path)


class Label(_Strict):
    """Ground truth that arrives `delay_days` after the event, in its own table."""

    table: str = "outcomes"
    entity_key: str = "entity_id"
    column: str = "label"
    observed_at: str = "observed_at"
    delay_days: float = Field(default=3, ge=0)

    _check_columns = field_validator("entity_key", "column", "observed_at")(_identifier)

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: str) -> str:
        if not QUALIFIED_IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a lower-case table name (optionally schema.table)")
        return value


class Estimator(_Strict):
    """A factory `f(spec, **params) -> sklearn Pipeline`; the pipeline is what gets registered."""

    factory: str = "batchwatch.training.hist_gradient_boosting"
    params: dict[str, Any] = Field(default_factory=dict)

    _check_factory = field_validator("factory")(_importable_dotted_path)


class AlertRate(_Strict):
    """Flag this share of rows: the threshold is the validation scores' (1 - alert_rate) quantile (a review queue's size)."""

    alert_rate: float = Field(gt=0, lt=1)


class MinPrecision(_Strict):
    """The lowest threshold whose validation precision reaches min_precision: the most recall at that precision."""

    min_precision: float = Field(gt=0, le=1)


def _threshold_policy(value: Any) -> str | None:
    """Which policy a `scoring.threshold` value names: a number, {alert_rate: ...} or {min_precision: ...}."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "fixed"
    if isinstance(value, AlertRate | MinPrecision):
        return type(value).__name__
    if isinstance(value, dict) and len(value) == 1:
        return {"alert_rate": "AlertRate", "min_precision": "MinPrecision"}.get(next(iter(value)))
    return None


ThresholdPolicy = Annotated[
    Annotated[float, Tag("fixed")] | Annotated[AlertRate, Tag("AlertRate")] | Annotated[MinPrecision, Tag("MinPrecision")],
    Discriminator(
        _threshold_policy,
        custom_error_type="threshold_policy",
        custom_error_message="give a threshold between 0 and 1, {alert_rate: share flagged} or {min_precision: precision to reach}",
    ),
]


class Scoring(_Strict):
    threshold: ThresholdPolicy = Field(
        default=0.5,
        description=(
            "How a version's decision threshold (predicted_label = score >= threshold) is chosen when it is trained: a number "
            "is that threshold; {alert_rate: 0.01} flags the top 1% of the validation set's scores; {min_precision: 0.5} takes "
            "the lowest threshold with at least that precision on the validation set. The chosen threshold is stored with the "
            "version and used wherever the version scores or is judged."
        ),
    )
    chunk_size: int = Field(default=100_000, ge=1)
    max_reject_rate: float = Field(default=0.05, ge=0, le=1)
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "How many tasks score a night's rows in parallel (Airflow dynamic task mapping), each its share of the entities by a "
            "hash of the key, into a stage of its own; one publish task then makes them the day, atomically. 1 scores the day in one task."
        ),
    )


    @field_validator("threshold")
    @classmethod
    def _fixed_threshold_in_range(cls, value: float | AlertRate | MinPrecision) -> float | AlertRate | MinPrecision:
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError(f"a fixed threshold must lie strictly between 0 and 1, got {value}")
        return value


class Schedules(_Strict):
    # The nightly job scores one day per run: a daily cron "M H * * *" (UTC); the default
    # makes the data interval one UTC calendar day.
    nightly_predict: str = "0 0 * * *"
    # The drift check runs once an hour, "M * * * *" (UTC), over the trailing drift.window_hours.
    hourly_drift: str = "0 * * * *"
    # The retrain runs once a week, "M H * * D" (UTC); its data interval is that week.
    weekly_retrain: str = "0 3 * * 1"
    # The daily performance and volume check of the previous UTC day, "M H * * *": its run time is the day's
    # deadline (a day with no rows by then is reported missing), and it sees the labels observed by then.
    daily_performance: str = "0 6 * * *"
    # The daily release decision (canary ramp, guard after a promotion), "M H * * *": after the performance check,
    # so the labels it judges by are the ones that check saw.
    daily_release: str = "0 7 * * *"

    @field_validator("nightly_predict", "hourly_drift", "weekly_retrain", "daily_performance", "daily_release")
    @classmethod
    def _cadence(cls, value: str, info: ValidationInfo) -> str:
        pattern, shape = CRON_SHAPES[info.field_name]
        if not pattern.match(value.strip()):
            raise ValueError(f"{value!r} is not {shape}")
        return value


class Notifier(_Strict):
    """An Airflow notifier (a BaseNotifier subclass) called when a drift incident opens, grows or recovers."""

    class_: str = Field(alias="class")
    params: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    # Notifiers live on Airflow's side (plugins/), so whether they import is checked when the DAG is
    # built (dag_factory), not here: the core and its command line load specs without plugins/.
    _check_class = field_validator("class_")(_dotted_path)


class Multivariate(_Strict):
    """A domain classifier: can a model tell reference rows from current rows? AUC 0.5 means no."""

    enabled: bool = True
    sample_rows: int = Field(default=5_000, ge=100)
    folds: int = Field(default=3, ge=2, le=10)
    auc_threshold: float = Field(default=0.6, gt=0.5, le=1)


class Drift(_Strict):
    """Thresholds of the hourly drift check; the defaults are the ones DESIGN.md argues for.

    A feature is drifted only when its test is significant after Benjamini-Hochberg at `fdr`
    across all tests of one check, and its effect size passes the threshold of that test.
    """

    window_hours: int = Field(default=24, ge=1, le=24 * 31)
    # A bigger window is checked on a deterministic sample of this many rows (by a hash of the key):
    # KS power is bounded by the reference sample anyway (10k values: effective n 9,091 at 100k
    # current rows against 9,901 at 1M), and time and memory stop growing with the window.
    # null: always every row.
    max_rows: int | None = Field(default=100_000, ge=1_000)
    min_rows: int = Field(
        default=50, ge=10,
        description=(
            "The fewest values any test is computed on. Above it, each test decides for itself: a significant, "
            "large effect is drifted however few the rows; an 'ok' needs the power to see a threshold-sized effect "
            "(80%), else the check says insufficient_data."
        ),
    )
    min_window_coverage: float = Field(
        default=0.95, ge=0, le=1,
        description=(
            "Share of the window that must lie between its first and last row, else the check reports insufficient_data. "
            "A window whose data began late or stopped early has a skewed time-of-day mix that looks like drift "
            "(in the simulator three missing night hours of 24 flag is_night); 0.95 tolerates about an hour of lag in 24 h. "
            "Lower it for a source that is quiet for part of every window (e.g. business hours only); 0 turns it off."
        ),
    )
    # Under no drift BH controls the chance that anything in the window is significant at this level, so it
    # bounds the false incidents per window: 0.01 keeps an hourly job under one false alarm in four days.
    fdr: float = Field(default=0.01, gt=0, lt=1)
    reference_sample_size: int = Field(default=10_000, ge=100)
    psi_threshold: float = Field(default=0.2, gt=0)
    wasserstein_threshold: float = Field(default=0.1, gt=0)  # in reference standard deviations
    jensen_shannon_threshold: float = Field(default=0.1, gt=0, le=1)
    unseen_share_threshold: float = Field(default=0.01, gt=0, le=1)
    null_rate_h_threshold: float = Field(default=0.1, gt=0)  # Cohen's h of the null rates
    positive_rate_h_threshold: float = Field(default=0.1, gt=0)  # Cohen's h of the positive rates
    exclude: tuple[str, ...] = ()  # columns not compared, e.g. ones with a known weekly cycle
    severity_bands: tuple[FiniteFloat, ...] = Field(
        default=(2.0, 4.0),
        description=(
            "Multiples of a test's threshold that start the severity bands of a drifted check: band 0 is over the threshold, "
            "band i from the i-th multiple on (with the default, band 1 from 2x, band 2 from 4x). A check is as severe as the "
            "largest effect/threshold ratio among its tests. An open incident is announced again when a check's band rises "
            "above the highest it has reached in the incident. Ascending, each over 1; [] leaves only new checks to announce."
        ),
    )
    multivariate: Multivariate = Multivariate()
    # Called when an incident opens, grows and recovers; with none, the task log and `alerts` hold it.
    notifiers: tuple[Notifier, ...] = ()
    # The Airflow UI's address that alerts link to (`<this>/batchwatch/models/<model>`); unset, Airflow's
    # [api] base_url. Set it when the address people open differs from the one Airflow is configured with.
    alert_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")

    @field_validator("severity_bands")
    @classmethod
    def _bands_ascend_over_one(cls, bands: tuple[float, ...]) -> tuple[float, ...]:
        if any(band <= 1 for band in bands):
            raise ValueError(f"severity bands are multiples of the threshold, each over 1 (band 0 is over the threshold itself): got {list(bands)}")
        if any(upper <= lower for lower, upper in itertools.pairwise(bands)):
            raise ValueError(f"severity bands must ascend strictly: got {list(bands)}")
        return bands

    @model_validator(mode="after")
    def _multivariate_can_decide(self) -> Drift:
        if self.multivariate.enabled and self.multivariate.sample_rows < self.min_rows:
            raise ValueError(
                f"multivariate.sample_rows ({self.multivariate.sample_rows}) is below min_rows ({self.min_rows}): "
                "the multivariate check could never reach a verdict"
            )
        return self


PERFORMANCE_METRICS = ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece")
# Metrics where lower is better: a floor on them is a ceiling.
LOWER_IS_BETTER = ("brier", "ece")


class Performance(_Strict):
    """The daily performance check: realized figures once labels mature, estimated ones before, and when to alert."""

    lookback_days: int = Field(
        default=14, ge=1, le=366,
        description="Matured days re-evaluated by every run, so that labels arriving late update the days they belong to.",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Level of the confidence interval on every figure.")
    bootstrap_samples: int = Field(default=200, ge=50, description="Poisson bootstrap replicates behind the intervals.")
    min_positives: int = Field(
        default=10, ge=1,
        description="Fewest labelled positives (and negatives) a day needs before its ranking metrics are computed and judged.",
    )
    floors: dict[Literal["roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece"], float] = Field(
        default_factory=dict,
        description=(
            "Absolute limits per metric: degraded when the whole confidence interval is below the floor (above it for brier and "
            "ece, where lower is better)."
        ),
    )
    max_drop: dict[Literal["roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece"], float] = Field(
        default_factory=lambda: {"roc_auc": 0.05},
        description=(
            "Largest tolerated loss against the version's own validation figure: degraded when the whole confidence interval "
            "is more than this below it (above it for brier and ece)."
        ),
    )
    estimated_alerts: bool = Field(
        default=True,
        description="Let the estimate (before labels mature) raise an early warning, labelled as estimated, by the same limits.",
    )

    @field_validator("floors", "max_drop")
    @classmethod
    def _finite_non_negative(cls, limits: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        for metric, limit in limits.items():
            if not 0 <= limit <= 1:
                raise ValueError(f"{info.field_name}.{metric}: {limit} is not between 0 and 1")
        return limits


class Volume(_Strict):
    """The daily volume and freshness check: a day's rows against the same weekday of the trailing weeks."""

    trailing_weeks: int = Field(default=4, ge=2, le=26, description="Same weekdays the baseline median and MAD are drawn from.")
    min_history: int = Field(default=2, ge=2, description="Fewest of those weekdays with rows before a day can be judged.")
    max_robust_z: float = Field(
        default=4.0, gt=0,
        description="Largest tolerated |rows - median| / (1.4826 MAD) before a day is too low or too high.",
    )
    min_relative_change: float = Field(
        default=0.2, ge=0, le=1,
        description="And the change must be at least this share of the median: a perfectly regular feed (MAD 0) does not alert on noise.",
    )
    max_late_share: float = Field(
        default=0.01, ge=0, le=1,
        description="Largest tolerated share of a day's rows that arrived after the nightly run scored it.",
    )
    late_days: int = Field(default=7, ge=1, le=31, description="Scored days re-counted by every run for rows that arrived late.")


class Gates(_Strict):
    """What a retrained challenger must show on the out-of-time holdout before it replaces the champion."""

    min_roc_auc: float = Field(default=0.7, ge=0, le=1)
    max_brier: float = Field(default=0.1, gt=0, le=1)
    # Non-inferiority: the lower 95% bound of AUC(challenger) - AUC(champion) must exceed -margin.
    non_inferiority_margin: float = Field(default=0.01, ge=0, le=1)
    bootstrap_samples: int = Field(default=500, ge=50)
    positive_rate_min: float = Field(default=0.0, ge=0, le=1)
    positive_rate_max: float = Field(default=0.2, ge=0, le=1)
    # No slice (one value of a categorical feature) may lose more than this much AUC.
    slice_margin: float = Field(default=0.05, ge=0, le=1)
    slice_min_rows: int = Field(default=500, ge=1)
    slice_min_positives: int = Field(default=20, ge=1)
    # When the challenger shadowed nightly runs: share of rows where both models agree on the label.
    shadow_min_agreement: float = Field(default=0.95, ge=0, le=1)
    shadow_min_rows: int = Field(default=1_000, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> Gates:
        if self.positive_rate_min > self.positive_rate_max:
            raise ValueError("positive_rate_min is greater than positive_rate_max")
        return self


class Retrain(_Strict):
    training_window_days: int = Field(default=28, ge=1)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)  # the most recent slice of the labelled window
    gates: Gates = Gates()


class Canary(_Strict):
    """A canary release: the challenger serves a hash-chosen share of entities, ramped up step by step as the statistics allow.

    Every day the served predictions of each arm whose labels have matured are compared: the treatment arm (the challenger
    served it) against the control arm (the champion did). A step is passed when the challenger is non-inferior on the primary
    metric (superior, with require_superiority) and on every guardrail, judged by always-valid confidence sequences so that
    looking every day does not inflate the error; it is stopped, its share back to 0, as soon as it is significantly worse on the
    primary metric or beyond a guardrail's margin.
    """

    enabled: bool = Field(default=False, description="Start a canary with the weekly retrain's validated challenger instead of promoting it at once.")
    steps: tuple[float, ...] = Field(
        default=(0.05, 0.25, 0.5),
        description="Shares of entities the challenger serves, one step after another; passing the last one promotes it. Ascending, in (0, 1).",
    )
    primary_metric: Literal["roc_auc", "precision", "recall", "brier"] = Field(
        default="roc_auc",
        description=(
            "Judged on matured labels: roc_auc by DeLong's test, precision and recall (at each model's threshold) by a two-proportion "
            "z-test on the risk difference, brier by Welch's t-test."
        ),
    )
    design: Literal["arms", "paired"] = Field(
        default="arms",
        description=(
            "arms: compare what each model achieved on the entities it served (unpaired; right when serving changes outcomes). "
            "paired: compare both models on the same rows of the treatment arm, where both scored (more power; only when labels "
            "do not depend on which prediction was served)."
        ),
    )
    margin: float = Field(default=0.01, gt=0, le=1, description="Non-inferiority margin of the primary metric, in its own units.")
    require_superiority: bool = Field(
        default=False, description="Advance only when the challenger is significantly better, not merely non-inferior.",
    )
    guardrails: dict[Literal["positive_rate", "brier", "reject_rate"], float] = Field(
        default_factory=lambda: {"positive_rate": 0.01, "brier": 0.005, "reject_rate": 0.01},
        description=(
            "Metrics that must not degrade beyond their margin (absolute): the served positive rate (either way: a review queue "
            "that grows or dries up), the Brier score (calibration), and the share of rows quarantined."
        ),
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Error rate of every decision, whatever the number of daily looks.")
    power: float = Field(
        default=0.8, gt=0.5, lt=1,
        description="No step passes before the data give this chance of passing an equal challenger (a sample-size check).",
    )
    min_positives: int = Field(default=20, ge=1, description="Fewest labelled positives (and negatives) in each arm before any verdict.")
    max_days_per_step: int = Field(
        default=21, ge=1, description="A step that reaches no verdict in this many days stops the canary as inconclusive.",
    )


class Release(_Strict):
    """How a new model reaches production: a canary ramp, a person's approval, and a guard period after the promotion."""

    canary: Canary = Canary()
    approval: bool = Field(default=False, description="A promotion the canary earned waits for a person to approve it in the Airflow UI.")
    guard_days: int = Field(
        default=7, ge=0, le=90,
        description=(
            "After a promotion, days during which the previous champion keeps scoring in shadow; a new champion worse beyond "
            "guard_margin on the primary metric is rolled back automatically. 0: no guard."
        ),
    )
    guard_margin: float = Field(default=0.02, gt=0, le=1, description="How much worse than the previous champion a new one may be.")


class Retention(_Strict):
    """How long a model's predictions are kept in the warehouse."""

    predictions_days: int | None = Field(
        default=None, ge=1,
        description=(
            "Scored days of predictions (and their quarantined rows) kept; older days are dropped by the nightly run, a PostgreSQL "
            "partition at a time, and audited in model_events. null: keep everything."
        ),
    )


class ModelSpec(_Strict):
    # Short enough to name PostgreSQL objects after it (predictions_<name>_<yyyymmdd>_next <= 63).
    name: str = Field(max_length=32)
    description: str = ""
    owner: str = "batchwatch"
    source: Source
    features: tuple[Feature, ...] = Field(min_length=1)
    derived_features: DerivedFeatures | None = None
    label: Label = Label()
    estimator: Estimator = Estimator()
    scoring: Scoring = Scoring()
    schedules: Schedules = Schedules()
    drift: Drift = Drift()
    retrain: Retrain = Retrain()
    performance: Performance = Performance()
    volume: Volume = Volume()
    release: Release = Release()
    retention: Retention = Retention()
    tags: tuple[str, ...] = ()

    _check_name = field_validator("name")(_identifier)

    @model_validator(mode="after")
    def _unique_columns(self) -> ModelSpec:
        names = [f.name for f in self.features]
        if self.derived_features:
            names += [c.name for c in self.derived_features.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique; repeated: {duplicates}")
        reserved = {self.source.entity_key, self.source.event_time} & set(names)
        if reserved:
            raise ValueError(f"entity key / event time cannot also be features: {sorted(reserved)}")
        kept = self.retention.predictions_days
        needed = self.performance.lookback_days + math.ceil(self.label.delay_days) + 1
        if kept is not None and kept < needed:
            raise ValueError(
                f"retention.predictions_days ({kept}) is shorter than the performance check reads back: performance.lookback_days "
                f"({self.performance.lookback_days}) plus label.delay_days ({self.label.delay_days:g}) plus the day being scored; keep at "
                f"least {needed}"
            )
        unknown = sorted(set(self.drift.exclude) - set(names))
        if unknown:
            raise ValueError(f"drift.exclude names columns that are not features: {unknown}")
        return self

    @property
    def source_columns(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def text_columns(self) -> list[str]:
        """Source columns read as text: the entity key (any type becomes a string id) and categoricals."""
        return [self.source.entity_key, *(f.name for f in self.features if f.is_categorical)]

    @property
    def model_features(self) -> list[str]:
        """Columns the estimator sees, in order: source features then derived ones."""
        return [c.name for c in self.all_columns]

    @property
    def all_columns(self) -> tuple[Feature | DerivedColumn, ...]:
        return self.features + (self.derived_features.columns if self.derived_features else ())

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.all_columns if c.type == "categorical"]

    @property
    def drift_columns(self) -> list[str]:
        """Model features the drift check compares: all but `drift.exclude`."""
        return [name for name in self.model_features if name not in self.drift.exclude]

    def categories_of(self, name: str) -> tuple[str, ...]:
        return next(c.categories for c in self.all_columns if c.name == name)


def _describe(error: ValidationError, path: Path | str) -> str:
    lines = [f"invalid model spec {path}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any], origin: Path | str = "<memory>") -> ModelSpec:
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, origin)) from None


def load_spec(path: Path | str) -> ModelSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"invalid model spec {path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"invalid model spec {path}: expected a mapping at the top level")
    spec = parse_spec(data, path)
    if spec.name != path.stem:
        raise SpecError(f"invalid model spec {path}: name: {spec.name!r} must match the file name {path.stem!r}")
    return spec


def spec_dirs() -> list[Path]:
    """Spec folders: BATCHWATCH_SPEC_DIRS (os.pathsep-separated) or the project's include/models."""
    configured = os.environ.get("BATCHWATCH_SPEC_DIRS")
    if not configured:
        return [DEFAULT_SPEC_DIR]
    return [Path(p) for p in configured.split(os.pathsep) if p]


def load_specs(dirs: list[Path] | None = None) -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for directory in dirs if dirs is not None else spec_dirs():
        for path in sorted(Path(directory).glob("*.yaml")):
            spec = load_spec(path)
            if spec.name in specs:
                raise SpecError(f"model {spec.name!r} is defined twice (second time in {path})")
            specs[spec.name] = spec
    return specs


def load_specs_and_errors(dirs: list[Path] | None = None) -> tuple[dict[str, ModelSpec], dict[Path, str]]:
    """Every spec that loads, by model name, and each file that does not with its SpecError message.

    For the DAG file: one broken spec must not unschedule the healthy models beside it.
    """
    specs: dict[str, ModelSpec] = {}
    errors: dict[Path, str] = {}
    for directory in dirs if dirs is not None else spec_dirs():
        for path in sorted(Path(directory).glob("*.yaml")):
            try:
                spec = load_spec(path)
                if spec.name in specs:
                    raise SpecError(f"invalid model spec {path}: name: model {spec.name!r} is already defined by another spec file")
            except SpecError as error:
                errors[path] = str(error)
                continue
            specs[spec.name] = spec
    return specs, errors


def get_spec(name: str) -> ModelSpec:
    """One model's spec, loading only its file: another model's broken spec does not stop this one."""
    for directory in spec_dirs():
        path = Path(directory) / f"{name}.yaml"
        if path.exists():
            return load_spec(path)
    raise SpecError(f"no model spec named {name!r} in {', '.join(map(str, spec_dirs()))}")
