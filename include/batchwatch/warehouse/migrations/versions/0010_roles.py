"""Least-privilege group roles (batchwatch_pipeline writes what the jobs write, batchwatch_analyst reads the results),
and model_versions.signature: an HMAC of the artifact under a key the warehouse does not hold.

Both are NOLOGIN groups with fixed names (roles are cluster-wide; one set serves every warehouse database on
a server). A deployment grants them to its login users: `GRANT batchwatch_pipeline TO airflow_jobs;`.
SQLite has no roles: nothing happens there.

The nightly swap creates a stage table, then detaches and drops the day's old partition and attaches the stage:
PostgreSQL allows ATTACH/DETACH/DROP only to the owner of `predictions` and of the partition. So the pipeline
role owns `predictions` and its partitions (the writer hands each new stage to the owner of `predictions`), and
may create tables in the schema. That is narrower than a SECURITY DEFINER function over the swap, which would run
as the migration owner with every right it holds; ownership gives the pipeline full control of one table only.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PIPELINE = "batchwatch_pipeline"
ANALYST = "batchwatch_analyst"

# What the jobs write (scoring, drift, daily checks, retrain and promotion, releases, drills); `predictions` is owned.
PIPELINE_WRITES = (
    "rejected_rows",
    "daily_scoring",
    "drift_results",
    "alerts",
    "alert_escalations",
    "alert_deliveries",
    "model_versions",
    "model_aliases",
    "model_events",
    "reference_profiles",
    "performance_daily",
    "volume_daily",
    "releases",
    "release_steps",
    "drill_reports",
)

# Results an analyst reads. Not rejected_rows (its payload is the raw source row), reference_profiles (samples of
# training data), predictions itself (shadow rows and every version: the views are the served answer), nor the
# source and label tables (transactions, outcomes), which belong to the deployment.
ANALYST_READS = (
    "served_predictions",
    "champion_latest_predictions",
    "daily_scoring",
    "drift_results",
    "performance_daily",
    "volume_daily",
    "alerts",
    "model_versions",
    "model_aliases",
    "model_events",
    "releases",
    "release_steps",
)

PARTITIONS = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'predictions'::regclass"


def _create_role(name: str) -> None:
    # Another warehouse on the same server may have created it, maybe at this very moment.
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$
        """
    )


def _drop_role(name: str) -> None:
    # Privileges are per database, the role per server: keep it while another warehouse still uses it.
    op.execute(
        f"""
        DO $$ BEGIN
            DROP ROLE IF EXISTS {name};
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role {name} is still used by another database; kept';
        END $$
        """
    )


def _schema() -> str:
    return op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()


def upgrade() -> None:
    # Nullable: versions registered before, or without a key, have none (registry.sign_versions signs them).
    op.add_column("model_versions", sa.Column("signature", sa.String(64)))
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    _create_role(PIPELINE)
    _create_role(ANALYST)
    # A migration owner that is not a superuser can hand `predictions` to the pipeline, and alter it in later
    # migrations, only as a member of the pipeline role.
    op.execute(
        f"""
        DO $$ BEGIN
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE 'GRANT {PIPELINE} TO ' || quote_ident(current_user);
            END IF;
        END $$
        """
    )
    op.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {PIPELINE}")
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {ANALYST}")
    op.execute(f"ALTER TABLE predictions OWNER TO {PIPELINE}")
    for (partition,) in op.get_bind().exec_driver_sql(PARTITIONS):
        op.execute(f"ALTER TABLE {partition} OWNER TO {PIPELINE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(PIPELINE_WRITES)} TO {PIPELINE}")
    # The drill compares a sandbox's schema version with the warehouse's.
    op.execute(f"GRANT SELECT ON alembic_version TO {PIPELINE}")
    # Serial ids of alerts, escalations, model_events, releases and drill reports; tables added later get theirs in their migration.
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {PIPELINE}")
    op.execute(f"GRANT SELECT ON {', '.join(ANALYST_READS)} TO {ANALYST}")


def downgrade() -> None:
    # Dropped in place (SQLite 3.35+ can): recreating a table that others reference would trip their foreign keys.
    with op.batch_alter_table("model_versions", recreate="never") as batch:
        batch.drop_column("signature")
    if op.get_bind().dialect.name != "postgresql":
        return
    schema = _schema()
    # Back to the user running the downgrade, the owner before 0010.
    owner = op.get_bind().exec_driver_sql("SELECT quote_ident(current_user)").scalar_one()
    op.execute(f"ALTER TABLE predictions OWNER TO {owner}")
    for (partition,) in op.get_bind().exec_driver_sql(PARTITIONS):
        op.execute(f"ALTER TABLE {partition} OWNER TO {owner}")
    op.execute(f"REVOKE ALL ON {', '.join(ANALYST_READS)} FROM {ANALYST}")
    op.execute(f"REVOKE ALL ON {', '.join(PIPELINE_WRITES)}, alembic_version FROM {PIPELINE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {PIPELINE}")
    op.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {PIPELINE}, {ANALYST}")
    _drop_role(ANALYST)
    _drop_role(PIPELINE)
