"""Drift monitoring: reference profiles per model version, drift results per window, alerts.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per profiled column of a registered version (plus its scores and a joint sample),
    # written in the transaction that registers the version.
    op.create_table(
        "reference_profiles",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("column_name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("profile", JSON, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "model_version", "column_name"),
        sa.ForeignKeyConstraint(["model_name", "model_version"], ["model_versions.model_name", "model_versions.version"]),
        sa.CheckConstraint("kind IN ('numeric', 'categorical', 'score', 'joint')", name="ck_reference_profiles_kind"),
    )
    # One row per column x test of one check; a rerun of a window replaces that window's rows.
    op.create_table(
        "drift_results",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("window_start", TIMESTAMP, nullable=False),
        sa.Column("window_end", TIMESTAMP, nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("column_name", sa.Text, nullable=False),
        sa.Column("test", sa.Text, nullable=False),
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
        sa.PrimaryKeyConstraint("model_name", "window_end", "column_name", "test"),
        sa.CheckConstraint("verdict IN ('drifted', 'ok', 'insufficient_data')", name="ck_drift_results_verdict"),
    )
    # An incident: opened by the first drifted window, updated while it lasts, resolved by the
    # first clean window after it. At most one open incident per model.
    op.create_table(
        "alerts",
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
        # Claimed before the notifiers are called (and released if one fails): a change is announced
        # once, also when two runs or a retry see it.
        sa.Column("open_notified_at", TIMESTAMP),
        sa.Column("resolved_notified_at", TIMESTAMP),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('open', 'resolved')", name="ck_alerts_status"),
    )
    op.create_index(
        "uq_alerts_one_open", "alerts", ["model_name"], unique=True,
        postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("uq_alerts_one_open", "alerts")
    for table in ("alerts", "drift_results", "reference_profiles"):
        op.drop_table(table)
