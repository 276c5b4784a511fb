"""The warehouse's tables as SQLAlchemy Core objects: one place that names every table and column.

The migrations create the schema and stay frozen; these definitions describe what they created, so
queries can be composed with SQLAlchemy instead of spelling column lists by hand. A test compares
them with a migrated database on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

metadata = sa.MetaData()

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("transaction_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("card_id", sa.BigInteger, nullable=False),
    sa.Column("event_time", TIMESTAMP, nullable=False),
    sa.Column("amount", sa.Double),
    sa.Column("hour", sa.Double),
    sa.Column("day_of_week", sa.Double),
    sa.Column("txn_count_30d", sa.Double),
    sa.Column("avg_amount_7d", sa.Double),
    sa.Column("merchant_category", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("channel", sa.Text),
)

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("observed_at", TIMESTAMP, nullable=False),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("entity_id", sa.Text, nullable=False),
    sa.Column("ds", sa.Date, nullable=False),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("predicted_label", sa.SmallInteger, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("scored_at", TIMESTAMP, nullable=False),
    # The entity's canary arm that day, on both models' rows: 'control' (the champion served) or 'treatment'
    # (the challenger served); NULL on a day without a canary (0009).
    sa.Column("arm", sa.Text),
)

rejected_rows = sa.Table(
    "rejected_rows",
    metadata,
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("ds", sa.Date, nullable=False),
    sa.Column("entity_id", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("rejected_at", TIMESTAMP, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("metrics", JSON, nullable=False),
    sa.Column("params", JSON, nullable=False),
    sa.Column("features", JSON, nullable=False),
    sa.Column("pipeline_steps", JSON, nullable=False),
    sa.Column("trained_on", JSON, nullable=False),
    sa.Column("parent_version", sa.Integer),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    # Set by a rollback from this version, cleared when it is deliberately made champion again (0003).
    sa.Column("rolled_back_at", TIMESTAMP),
    sa.Column("rolled_back_reason", sa.Text),
    # The threshold its policy chose on the validation set, the policy, and its score calibration (0008);
    # NULL for versions registered before: they score at the spec's fixed threshold, uncalibrated.
    sa.Column("threshold", sa.Double),
    sa.Column("threshold_policy", JSON),  # {policy, target, threshold, validation: {precision, recall, positive_rate, ...}}
    sa.Column("calibration", JSON),  # {method: isotonic | none, x, y, ece_raw, ece_calibrated, ...}
    # HMAC-SHA256 of the artifact's bytes under BATCHWATCH_ARTIFACT_KEY, which the warehouse never holds (0010);
    # NULL when registered without a key.
    sa.Column("signature", sa.String(64)),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("alias", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)

model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("previous_version", sa.Integer),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", JSON, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("created_at", TIMESTAMP, nullable=False),
)

reference_profiles = sa.Table(
    "reference_profiles",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("model_version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("column_name", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("profile", JSON, nullable=False),
)

drift_results = sa.Table(
    "drift_results",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("window_start", TIMESTAMP, nullable=False),
    sa.Column("window_end", TIMESTAMP, primary_key=True),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("column_name", sa.Text, primary_key=True),
    sa.Column("test", sa.Text, primary_key=True),
    sa.Column("statistic", sa.Double),
    sa.Column("p_value", sa.Double),
    sa.Column("p_adjusted", sa.Double),
    sa.Column("effect_size", sa.Double),
    sa.Column("threshold", sa.Double),
    sa.Column("n_reference", sa.BigInteger),
    sa.Column("n_current", sa.BigInteger),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("details", JSON, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("checked_at", TIMESTAMP, nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("opened_window_end", TIMESTAMP, nullable=False),
    sa.Column("last_drifted_window_end", TIMESTAMP, nullable=False),
    sa.Column("resolved_window_end", TIMESTAMP),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("drifted", JSON, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("opened_at", TIMESTAMP, nullable=False),
    sa.Column("resolved_at", TIMESTAMP),
    sa.Column("open_notified_at", TIMESTAMP),
    sa.Column("resolved_notified_at", TIMESTAMP),
    sa.Column("run_id", sa.Text, nullable=False),
    # Every check the incident has seen drifted and the highest severity band it reached, {check: band} (0007);
    # NULL for an incident opened before 0007 until a window extends it.
    sa.Column("checks", JSON),
    # drift (the hourly check), performance or volume (the daily one); one open incident per model and kind (0008).
    sa.Column("kind", sa.Text, nullable=False, server_default="drift"),
)

# One row per window that grew an open incident (0007): claimed in notified_at before it is announced.
alert_escalations = sa.Table(
    "alert_escalations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("window_end", TIMESTAMP, nullable=False),
    sa.Column("new_checks", JSON, nullable=False),  # [{check, band, ratio, tests: [[column, test], ...]}]
    sa.Column("raised", JSON, nullable=False),  # [{check, previous_band, band, ratio, tests}]
    sa.Column("drifted", JSON, nullable=False),  # the window's drifted checks, one line each
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("notified_at", TIMESTAMP),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.UniqueConstraint("alert_id", "window_end", name="uq_alert_escalations_window"),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("status", sa.Text, primary_key=True),
    sa.Column("notifier", sa.Text, primary_key=True),
    sa.Column("delivered_at", TIMESTAMP, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

# One row per scored day and role, written with the day's partition (0005): the page reads this, not 30M rows.
daily_scoring = sa.Table(
    "daily_scoring",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("ds", sa.Date, primary_key=True),
    sa.Column("role", sa.Text, primary_key=True),
    sa.Column("model_version", sa.Integer),
    sa.Column("rows_scored", sa.BigInteger, nullable=False),
    sa.Column("positives", sa.BigInteger, nullable=False),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("score_p05", sa.Double),
    sa.Column("score_p25", sa.Double),
    sa.Column("score_p50", sa.Double),
    sa.Column("score_p75", sa.Double),
    sa.Column("score_p95", sa.Double),
    # How many shards scored the day (1: one task); NULL for days scored before migration 0011.
    sa.Column("shards", sa.Integer),
)

# One row per scored day, version, role, source and metric (0008): realized from matured labels, estimated before them.
performance_daily = sa.Table(
    "performance_daily",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("ds", sa.Date, primary_key=True),
    sa.Column("model_version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("role", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),  # realized | estimated
    sa.Column("metric", sa.Text, primary_key=True),
    sa.Column("value", sa.Double),
    sa.Column("lower", sa.Double),
    sa.Column("upper", sa.Double),
    sa.Column("threshold", sa.Double),
    sa.Column("rows_scored", sa.BigInteger, nullable=False),
    sa.Column("rows_labelled", sa.BigInteger, nullable=False),
    sa.Column("positives", sa.BigInteger),
    sa.Column("estimation_error", sa.Double),  # estimated rows: estimate minus realized, once labels matured
    sa.Column("labels_as_of", TIMESTAMP),
    sa.Column("computed_at", TIMESTAMP, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)

# One row per model and day (0008): its rows against the same weekday of the trailing weeks, late rows, verdict.
volume_daily = sa.Table(
    "volume_daily",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("ds", sa.Date, primary_key=True),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("expected_rows", sa.Double),
    sa.Column("mad", sa.Double),
    sa.Column("robust_z", sa.Double),
    sa.Column("relative_change", sa.Double),
    sa.Column("history", JSON, nullable=False),
    sa.Column("rows_at_scoring", sa.BigInteger),
    sa.Column("late_rows", sa.BigInteger),
    sa.Column("late_share", sa.Double),
    sa.Column("verdict", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("checked_at", TIMESTAMP, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
)


releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),  # canary | guard
    sa.Column("version", sa.Integer, nullable=False),  # the challenger (canary) or the new champion (guard)
    sa.Column("baseline_version", sa.Integer, nullable=False),  # the champion, or the previous champion (guard)
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("plan", JSON, nullable=False),
    sa.Column("salt", sa.Text),
    sa.Column("step", sa.Integer),
    sa.Column("started_on", sa.Date, nullable=False),
    sa.Column("ends_on", sa.Date),
    sa.Column("started_at", TIMESTAMP, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
    sa.Column("ended_at", TIMESTAMP),
    sa.Column("reason", sa.Text),
    sa.Column("actor", sa.Text, nullable=False),
)

release_steps = sa.Table(
    "release_steps",
    metadata,
    sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True, autoincrement=False),
    sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("share", sa.Double, nullable=False),
    sa.Column("effective_from", sa.Date, nullable=False),
    sa.Column("effective_until", sa.Date),
)

drill_reports = sa.Table(
    "drill_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("window_end", sa.Date, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("faults", JSON, nullable=False),
    sa.Column("started_at", TIMESTAMP, nullable=False),
    sa.Column("finished_at", TIMESTAMP, nullable=False),
)

scoring_stages = sa.Table(
    "scoring_stages",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("ds", sa.Date, primary_key=True),
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("shards", sa.Integer, nullable=False),
    sa.Column("predictions_stage", sa.Text, nullable=False),
    sa.Column("rejects_stage", sa.Text, nullable=False),
    sa.Column("summary", JSON, nullable=False),
    sa.Column("staged_at", TIMESTAMP, nullable=False),
    sa.Column("published_at", TIMESTAMP),
    sa.CheckConstraint("shard >= 0 AND shard < shards", name="ck_scoring_stages_shard"),
)
