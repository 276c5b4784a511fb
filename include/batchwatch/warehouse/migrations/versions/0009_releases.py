"""Releases: the arm that served each prediction, canary and guard releases with their ramp steps, and chaos drill reports.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
ARM_CHECK = "arm IN ('control', 'treatment')"
ACTIVE = "status IN ('running', 'awaiting_approval')"
# Per entity and day, the prediction that was acted on: the champion's, or the challenger's for the treatment arm.
SERVED_VIEW = """
CREATE VIEW served_predictions AS
SELECT model_name, ds, entity_id, model_version, role, COALESCE(arm, 'control') AS arm, arm IS NOT NULL AS canary,
       score, predicted_label, run_id, scored_at
FROM predictions
WHERE (role = 'champion' AND (arm IS NULL OR arm = 'control')) OR (role = 'shadow' AND arm = 'treatment')
"""


def upgrade() -> None:
    # The canary arm of the entity on that day ('control': the champion's prediction is served, 'treatment': the
    # challenger's), on both models' rows; NULL on a day no canary ran (the champion served). Nullable, no default:
    # adding it rewrites nothing on a large table.
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("predictions", sa.Column("arm", sa.Text))
        op.create_check_constraint("ck_predictions_arm", "predictions", ARM_CHECK)
    else:  # SQLite cannot add a constraint to a table, but takes one in the column it adds
        op.execute(f"ALTER TABLE predictions ADD COLUMN arm TEXT CONSTRAINT ck_predictions_arm CHECK ({ARM_CHECK})")
    op.execute(SERVED_VIEW)
    # A release under way or done: a canary (the challenger serves a growing share of entities until promoted or stopped)
    # or a guard (after a promotion the previous champion scores in shadow; a worse new champion is rolled back).
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),  # the challenger (canary) or the new champion (guard)
        sa.Column("baseline_version", sa.Integer, nullable=False),  # the champion it is compared with, or the previous champion
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("plan", JSON, nullable=False),  # the spec's release settings when it started: steps, metric, margins
        sa.Column("salt", sa.Text),  # a canary's arm salt (hashing.canary_salt)
        sa.Column("step", sa.Integer),  # a canary's current step, 0-based into plan.steps
        sa.Column("started_on", sa.Date, nullable=False),  # first scored day it applies to
        sa.Column("ends_on", sa.Date),  # a guard's last day
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP),
        sa.Column("reason", sa.Text),  # why it ended
        sa.Column("actor", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('canary', 'guard')", name="ck_releases_kind"),
        sa.CheckConstraint(
            "status IN ('running', 'awaiting_approval', 'promoted', 'stopped', 'rejected', 'passed', 'rolled_back', 'cancelled')",
            name="ck_releases_status",
        ),
    )
    # One release under way per model: a canary and a guard never overlap, so the challenger alias has one meaning.
    op.create_index(
        "uq_releases_one_active", "releases", ["model_name"], unique=True,
        postgresql_where=sa.text(ACTIVE), sqlite_where=sa.text(ACTIVE),
    )
    # A canary's ramp: the share of entities the challenger served from which scored day until which.
    op.create_table(
        "release_steps",
        sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True, autoincrement=False),
        sa.Column("step", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("share", sa.Double, nullable=False),
        sa.Column("effective_from", sa.Date, nullable=False),
        sa.Column("effective_until", sa.Date),  # exclusive; NULL while in force
        sa.CheckConstraint("share >= 0 AND share <= 1", name="ck_release_steps_share"),
    )
    # One chaos drill of the monitors: which injected fault each detector caught, and how fast.
    op.create_table(
        "drill_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("window_start", sa.Date, nullable=False),
        sa.Column("window_end", sa.Date, nullable=False),
        sa.Column("status", sa.Text, nullable=False),  # passed: every fault caught; failed: at least one unseen
        sa.Column("faults", JSON, nullable=False),  # [{fault, injected, caught_by: [...], detection_hours, ...}]
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("status IN ('passed', 'failed')", name="ck_drill_reports_status"),
    )
    op.create_index("ix_drill_reports_model", "drill_reports", ["model_name", "finished_at"])



def downgrade() -> None:
    op.drop_index("ix_drill_reports_model", "drill_reports")
    op.drop_table("drill_reports")
    op.drop_table("release_steps")
    op.drop_index("uq_releases_one_active", "releases")
    op.drop_table("releases")
    op.execute("DROP VIEW served_predictions")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("ck_predictions_arm", "predictions", type_="check")
    op.drop_column("predictions", "arm")
