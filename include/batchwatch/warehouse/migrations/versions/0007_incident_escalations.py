"""Incident escalations: an open incident remembers its drifted checks and is announced again when it grows.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Every check the incident has seen drifted, with the highest severity band it reached: {check: band}.
    # NULL for an incident opened before this migration: the first window that extends it records them.
    op.add_column("alerts", sa.Column("checks", JSON))
    # One row per window that grew an open incident: checks new to it, checks whose band rose. A window
    # grows an incident once (a rerun finds nothing new); the row is claimed before it is announced.
    op.create_table(
        "alert_escalations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("window_end", TIMESTAMP, nullable=False),
        sa.Column("new_checks", JSON, nullable=False),  # [{check, band, ratio, tests: [[column, test], ...]}]
        sa.Column("raised", JSON, nullable=False),  # [{check, previous_band, band, ratio, tests}]
        sa.Column("drifted", JSON, nullable=False),  # every drifted check of the window, one line each
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("notified_at", TIMESTAMP),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.UniqueConstraint("alert_id", "window_end", name="uq_alert_escalations_window"),
    )


def downgrade() -> None:
    op.drop_table("alert_escalations")
    with op.batch_alter_table("alerts") as alerts:
        alerts.drop_column("checks")
