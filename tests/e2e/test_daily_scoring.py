"""daily_scoring, the page's per-day summary, against the rows the nightly run stored: SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from batchwatch.warehouse import migrate
from batchwatch.warehouse.engine import MIGRATIONS

from .conftest import DAY, count, run_day
from .test_nightly_predict import _fail_on_chunk

QUANTILES = {"score_p05": 0.05, "score_p25": 0.25, "score_p50": 0.5, "score_p75": 0.75, "score_p95": 0.95}


def summary(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        frame = pd.read_sql(sa.text("SELECT * FROM daily_scoring ORDER BY model_name, ds, role"), connection)
    frame["ds"] = frame["ds"].astype(str)
    return frame


def assert_matches_the_rows(engine, day) -> None:
    """Counts exact; quantiles equal numpy's linear interpolation over the stored scores (exact SQL, 1e-12)."""
    with engine.connect() as connection:
        rows = pd.read_sql(
            sa.text("SELECT role, model_version, score, predicted_label FROM predictions WHERE model_name = 'fraud' AND ds = :d"),
            connection, params={"d": day.date()},
        )
    stored = summary(engine).set_index(["ds", "role"])
    rejected = count(engine, "rejected_rows", "model_name = 'fraud' AND ds = :d", d=day.date())
    assert rejected > 0 and len(rows) > 0
    for role, group in rows.groupby("role"):
        row = stored.loc[(str(day.date()), role)]
        assert (row["rows_scored"], row["positives"], row["rows_rejected"]) == (len(group), group["predicted_label"].sum(), rejected)
        assert row["model_version"] == group["model_version"].max()
        for column, q in QUANTILES.items():
            assert row[column] == pytest.approx(np.quantile(group["score"], q), abs=1e-12)


def test_a_nightly_run_writes_the_summary_of_its_rows_and_a_rerun_replaces_it(fraud_world):
    engine = fraud_world["engine"]
    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    assert run_day("fraud_nightly_predict", DAY + timedelta(days=1))[0] == "success"
    assert_matches_the_rows(engine, DAY)
    assert_matches_the_rows(engine, DAY + timedelta(days=1))
    first = summary(engine)
    assert list(first["ds"]) == [str(DAY.date()), str((DAY + timedelta(days=1)).date())]

    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    pd.testing.assert_frame_equal(first, summary(engine))
    assert_matches_the_rows(engine, DAY)


def test_a_failed_run_leaves_the_summary_as_it_was(fraud_world, monkeypatch):
    engine = fraud_world["engine"]
    with monkeypatch.context() as patch:
        _fail_on_chunk(patch, k=2)
        assert run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})[0] == "failed"
    assert summary(engine).empty

    assert run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})[0] == "success"
    good = summary(engine)
    with monkeypatch.context() as patch:
        _fail_on_chunk(patch, k=2)
        assert run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})[0] == "failed"
    pd.testing.assert_frame_equal(good, summary(engine))
    assert_matches_the_rows(engine, DAY)


def test_the_migration_backfills_days_scored_before_it(fraud_world):
    engine = fraud_world["engine"]
    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    written = summary(engine)
    # Back to a warehouse at 0004 through the migrations' own downgrades, then up again: 0005 backfills.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "daily_scoring" not in sa.inspect(engine).get_table_names()
    migrate(engine)
    backfilled = summary(engine)
    assert set(written["shards"]) == {1} and backfilled["shards"].isna().all()  # how a day was scored is not in its rows
    pd.testing.assert_frame_equal(written.drop(columns="shards"), backfilled.drop(columns="shards"))


def test_a_day_of_rejects_only_stays_on_the_page(engine):
    """Every row rejected: no predictions, yet the day and its rejects show, with no roles and no quantiles."""
    from datetime import datetime, timezone

    from batchwatch import queries
    from batchwatch.warehouse import replace_interval

    with replace_interval(engine, "fraud", DAY.date(), "manual", datetime.now(timezone.utc)) as writer:
        writer.write_rejects(["a", None], ["amount is null or NaN", "transaction_id is missing"], [{}, {}])
    [day] = queries.prediction_volume(engine, "fraud")
    assert (day.ds, day.rows_by_role, day.rows_scored, day.rows_rejected) == (DAY.date(), {}, 0, 2)
    assert (day.reject_rate, day.positive_rate, day.score_quantiles) == (1.0, None, {})
    assert queries.model_overview(engine, "fraud").latest_day.rows_rejected == 2
