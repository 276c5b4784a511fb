"""Rollbacks stick: a version records when it was rolled back from, so a retrain does not promote it again.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Set when a rollback takes the version out of service, cleared when someone deliberately makes it
    # (or a byte-identical version) champion again; model_events keeps the history of both.
    op.add_column("model_versions", sa.Column("rolled_back_at", TIMESTAMP))
    op.add_column("model_versions", sa.Column("rolled_back_reason", sa.Text))
    # Registration and validation look versions up by their artifact's checksum.
    op.create_index("ix_model_versions_sha256", "model_versions", ["model_name", "sha256"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_sha256", "model_versions")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("rolled_back_reason")
        batch.drop_column("rolled_back_at")
