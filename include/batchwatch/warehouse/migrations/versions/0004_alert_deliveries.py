"""Alert deliveries: which notifier delivered which incident change, and when.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per notifier that delivered a change ('open' or 'resolved'): when one of a spec's notifiers
    # fails, the retry sends to that one only, not again to those that already delivered.
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("status", sa.Text, primary_key=True),
        sa.Column("notifier", sa.Text, primary_key=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_deliveries")
