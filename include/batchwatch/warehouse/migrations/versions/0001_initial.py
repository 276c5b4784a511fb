"""The spine: demo source, outcomes, predictions, rejects and the model registry.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

# Latest prediction per entity made in the champion role: what the business acted on.
CHAMPION_LATEST_VIEW = """
CREATE VIEW champion_latest_predictions AS
SELECT model_name, model_version, entity_id, ds, score, predicted_label, run_id, scored_at
FROM (
    SELECT p.*, ROW_NUMBER() OVER (
        PARTITION BY p.model_name, p.entity_id ORDER BY p.ds DESC, p.scored_at DESC
    ) AS recency
    FROM predictions p
    WHERE p.role = 'champion'
) ranked
WHERE recency = 1
"""


def upgrade() -> None:
    op.create_table(
        "transactions",
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
    op.create_index("ix_transactions_event_time", "transactions", ["event_time"])

    op.create_table(
        "outcomes",
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_outcomes_observed_at", "outcomes", ["observed_at"])

    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "predictions",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("ds", sa.Date, nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("predicted_label", sa.SmallInteger, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("scored_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("role IN ('champion', 'shadow')", name="ck_predictions_role"),
        sa.CheckConstraint("score >= 0 AND score <= 1", name="ck_predictions_score"),
        # Leading (model_name, entity_id) also answers "latest prediction of entity X".
        sa.UniqueConstraint("model_name", "entity_id", "ds", "model_version", name="uq_predictions"),
        # PostgreSQL: one partition per (model, day), so a nightly run swaps in a freshly built
        # partition instead of deleting and re-inserting rows through the index.
        postgresql_partition_by="RANGE (model_name, ds)" if postgres else None,
    )
    if not postgres:
        op.create_index("ix_predictions_model_ds", "predictions", ["model_name", "ds"])

    op.create_table(
        "rejected_rows",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("ds", sa.Date, nullable=False),
        sa.Column("entity_id", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("rejected_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_rejected_rows_model_ds", "rejected_rows", ["model_name", "ds"])

    op.create_table(
        "model_versions",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("pipeline_steps", JSON, nullable=False),
        sa.Column("trained_on", JSON, nullable=False),
        sa.Column("parent_version", sa.Integer),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "version"),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "alias"),
        sa.ForeignKeyConstraint(["model_name", "version"], ["model_versions.model_name", "model_versions.version"]),
        sa.CheckConstraint("alias IN ('champion', 'challenger')", name="ck_model_aliases_alias"),
    )
    op.create_table(
        "model_events",
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
    op.create_index("ix_model_events_model", "model_events", ["model_name", "created_at"])
    op.execute(CHAMPION_LATEST_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW champion_latest_predictions")
    for table in ("model_events", "model_aliases", "model_versions", "rejected_rows", "predictions", "outcomes", "transactions"):
        op.drop_table(table)
