"""Daily scoring summary: counts, rejects and score quantiles per model, day and role, backfilled.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from batchwatch.warehouse.write import daily_scoring_statements

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The web page read per-day aggregates from `predictions` (seconds at 30M rows); the nightly
    # writer now keeps them here, in the transaction that swaps the day in.
    op.create_table(
        "daily_scoring",
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
    )
    # Days scored before this migration keep their place on the page: summarise every stored day once.
    bind = op.get_bind()
    for statement in daily_scoring_statements(bind.dialect.name == "postgresql", "1 = 1"):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    op.drop_table("daily_scoring")
