"""scoring_stages: the shards of a sharded nightly run, each scored into stage tables of its own until one publish;
daily_scoring.shards: how many shards scored the day (NULL for days scored before); on PostgreSQL, scoring_shard_hash.

scoring_shard_hash holds no row: it is an empty table partitioned by HASH (entity_id), whose only use is
satisfies_hash_partition('scoring_shard_hash'::regclass, N, k, key), PostgreSQL's own hash partitioning of a key.
Shard k of a sharded run scores exactly the keys of remainder k, so the publish attaches the shards, as they are,
as the hash partitions of the day: no row is copied and the shards' unique keys are adopted as built.

A shard commits its stage tables and its row here together, so a retried shard replaces only its own, and the
publish finds every shard of its run (and their tallies) with one query. A row whose run never publishes (a run
abandoned half-way) is how the next publish finds the stage tables to drop.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
PIPELINE = "batchwatch_pipeline"
SHARD_HASH_TABLE = "scoring_shard_hash"


def upgrade() -> None:
    op.create_table(
        "scoring_stages",
        sa.Column("model_name", sa.Text, primary_key=True),
        sa.Column("ds", sa.Date, primary_key=True),
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("shards", sa.Integer, nullable=False),
        sa.Column("predictions_stage", sa.Text, nullable=False),
        sa.Column("rejects_stage", sa.Text, nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("staged_at", sa.DateTime(timezone=True), nullable=False),
        # Set by the publish; the row stays a day, so that a retry of a publish that committed returns at once.
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("shard >= 0 AND shard < shards", name="ck_scoring_stages_shard"),
    )
    # Nullable, no default: adding it rewrites nothing.
    op.add_column("daily_scoring", sa.Column("shards", sa.Integer))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON scoring_stages TO {PIPELINE}")
        op.execute(f"CREATE TABLE {SHARD_HASH_TABLE} (entity_id text) PARTITION BY HASH (entity_id)")


def downgrade() -> None:
    # Dropped in place (SQLite 3.35+ can).
    with op.batch_alter_table("daily_scoring", recreate="never") as batch:
        batch.drop_column("shards")
    op.drop_table("scoring_stages")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TABLE {SHARD_HASH_TABLE}")
