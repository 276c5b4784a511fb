"""An index that serves the drift heatmap: one model's checks in check order, verdicts inside the index.

The page groups 30 days of hourly results (tens of thousands of rows a model) by check. With this
index PostgreSQL reads them in group order from the index alone (no sort, no heap); SQLite ignores
the INCLUDE columns and still gets the key order.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "drift_results_by_check",
        "drift_results",
        ["model_name", "column_name", "test", "window_end"],
        postgresql_include=["verdict", "effect_size"],
    )


def downgrade() -> None:
    op.drop_index("drift_results_by_check", table_name="drift_results")
