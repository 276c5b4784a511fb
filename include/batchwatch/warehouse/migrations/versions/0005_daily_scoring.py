"""Daily scoring summary: counts, rejects and score quantiles per model, day and role, backfilled.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

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
    for statement in _daily_scoring_statements(bind.dialect.name == "postgresql", "1 = 1"):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    op.drop_table("daily_scoring")


# Score quantiles kept per day and role in daily_scoring (score_p05 ... score_p95).
SUMMARY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SUMMARY_COLUMNS = ", ".join(f"score_p{round(q * 100):02d}" for q in SUMMARY_QUANTILES)


def _daily_scoring_statements(postgres: bool, where: str) -> list[str]:
    """SQL that fills daily_scoring for the (model, ds) pairs `where` selects, from the stored rows.

    A frozen copy of the nightly writer's statements as of this migration: a migration must not change
    when the live code does.
    Quantiles are exact, interpolated linearly as numpy's default: percentile_cont on PostgreSQL,
    the two ranked neighbours of each position on SQLite. A day with rejects but no predictions
    keeps one 'champion' row with rows_scored 0, so the page still shows its rejects.
    """
    if postgres:
        quantiles = ", ".join(f"q[{i}]" for i in range(1, len(SUMMARY_QUANTILES) + 1))
        array = ", ".join(map(str, SUMMARY_QUANTILES))
        scored = (
            f"SELECT model_name, ds, role, model_version, n, positives, {quantiles} FROM ("
            "SELECT model_name, ds, role, MAX(model_version) AS model_version, COUNT(*) AS n, SUM(predicted_label) AS positives,"
            f" percentile_cont(ARRAY[{array}]::double precision[]) WITHIN GROUP (ORDER BY score) AS q"
            f" FROM predictions WHERE {where} GROUP BY model_name, ds, role) grouped"
        )
    else:
        quantiles = ", ".join(
            f"MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END)"
            f" + ((n - 1) * {q} - CAST((n - 1) * {q} AS INTEGER))"
            f" * (COALESCE(MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) + 1 THEN score END),"
            f" MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END))"
            f" - MAX(CASE WHEN i = CAST((n - 1) * {q} AS INTEGER) THEN score END))"
            for q in SUMMARY_QUANTILES
        )
        scored = (
            f"SELECT model_name, ds, role, MAX(model_version), MAX(n), SUM(predicted_label), {quantiles} FROM ("
            "SELECT model_name, ds, role, model_version, score, predicted_label,"
            " ROW_NUMBER() OVER (PARTITION BY model_name, ds, role ORDER BY score) - 1 AS i,"
            f" COUNT(*) OVER (PARTITION BY model_name, ds, role) AS n FROM predictions WHERE {where}) ranked"
            " GROUP BY model_name, ds, role"
        )
    return [
        f"INSERT INTO daily_scoring (model_name, ds, role, model_version, rows_scored, positives, {SUMMARY_COLUMNS}) {scored}",
        "UPDATE daily_scoring SET rows_rejected = (SELECT COUNT(*) FROM rejected_rows r"
        f" WHERE r.model_name = daily_scoring.model_name AND r.ds = daily_scoring.ds) WHERE {where}",
        "INSERT INTO daily_scoring (model_name, ds, role, rows_scored, positives, rows_rejected)"
        " SELECT model_name, ds, 'champion', 0, 0, COUNT(*) FROM rejected_rows r"
        f" WHERE {where} AND NOT EXISTS (SELECT 1 FROM daily_scoring d WHERE d.model_name = r.model_name AND d.ds = r.ds)"
        " GROUP BY model_name, ds",
    ]
