"""Outcomes: the decision threshold and calibration stored with each version, daily realized and estimated
performance, daily volume, and incidents of more than one kind.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The threshold a version's policy chose on its validation set, the policy and what it reached there
    # ({policy, target, threshold, validation: {...}}), and its score calibration ({method, x, y, ece_raw, ...}).
    # NULL for versions registered before: they score at the spec's fixed threshold, uncalibrated.
    with op.batch_alter_table("model_versions") as versions:
        versions.add_column(sa.Column("threshold", sa.Double))
        versions.add_column(sa.Column("threshold_policy", JSON))
        versions.add_column(sa.Column("calibration", JSON))
    # One row per scored day, version, role, metric and source ('realized' from matured labels, 'estimated'
    # from calibrated scores before them), with its confidence interval; rewritten when late labels arrive.
    op.create_table(
        "performance_daily",
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("ds", sa.Date, primary_key=True),
        sa.Column("model_version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("role", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("metric", sa.Text, primary_key=True),
        sa.Column("value", sa.Double),
        sa.Column("lower", sa.Double),
        sa.Column("upper", sa.Double),
        sa.Column("threshold", sa.Double),  # the version's decision threshold the figure is at
        sa.Column("rows_scored", sa.BigInteger, nullable=False),
        sa.Column("rows_labelled", sa.BigInteger, nullable=False),
        sa.Column("positives", sa.BigInteger),
        # On an estimated row, estimate minus realized once the day's labels matured; NULL before.
        sa.Column("estimation_error", sa.Double),
        sa.Column("labels_as_of", TIMESTAMP),
        sa.Column("computed_at", TIMESTAMP, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.CheckConstraint("source IN ('realized', 'estimated')", name="ck_performance_daily_source"),
    )
    # The newest day per role and source (the page's glance figures, the /metrics scrape) without reading a model's whole history.
    op.create_index("ix_performance_daily_latest", "performance_daily", ["model_name", "role", "source", "ds"])
    # One row per model and day: rows against the same weekday of the trailing weeks, rows that came late, and the verdict.
    op.create_table(
        "volume_daily",
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("ds", sa.Date, primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("expected_rows", sa.Double),  # median of the same weekday in the trailing weeks
        sa.Column("mad", sa.Double),
        sa.Column("robust_z", sa.Double),
        sa.Column("relative_change", sa.Double),
        sa.Column("history", JSON, nullable=False),  # [{ds, rows}] the baseline was drawn from
        sa.Column("rows_at_scoring", sa.BigInteger),  # rows the nightly run read (daily_scoring), NULL when not scored
        sa.Column("late_rows", sa.BigInteger),
        sa.Column("late_share", sa.Double),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
    )
    # Incidents of a kind each: drift (the hourly check), performance and volume (the daily one); one open per model and kind.
    op.drop_index("uq_alerts_one_open", "alerts")
    with op.batch_alter_table("alerts") as alerts:
        alerts.add_column(sa.Column("kind", sa.Text, nullable=False, server_default="drift"))
    op.create_index(
        "uq_alerts_one_open", "alerts", ["model_name", "kind"], unique=True,
        postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("uq_alerts_one_open", "alerts")
    op.execute("DELETE FROM alerts WHERE kind <> 'drift'")
    # Dropped in place (SQLite 3.35+ can): recreating a table that others reference would trip their foreign keys.
    with op.batch_alter_table("alerts", recreate="never") as alerts:
        alerts.drop_column("kind")
    op.create_index(
        "uq_alerts_one_open", "alerts", ["model_name"], unique=True,
        postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"),
    )
    op.drop_table("volume_daily")
    op.drop_index("ix_performance_daily_latest", "performance_daily")
    op.drop_table("performance_daily")
    with op.batch_alter_table("model_versions", recreate="never") as versions:
        for column in ("calibration", "threshold_policy", "threshold"):
            versions.drop_column(column)
