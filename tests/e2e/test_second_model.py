"""A second model is a spec file and nothing else: tests/specs/churn.yaml over its own tables."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import sqlalchemy as sa

from batchwatch.modeling.training import bootstrap_champion
from batchwatch.spec import get_spec
from batchwatch.warehouse import load_frame

from .conftest import count, predictions, run_day

START = datetime(2026, 9, 1, tzinfo=timezone.utc)
SCORING_DAY = datetime(2026, 9, 8, tzinfo=timezone.utc)
PLANS = ("basic", "plus", "pro")


def churn_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The user's own tables: a text entity key, and spend stored as text as it arrives."""
    subscriptions = sa.Table(
        "subscriptions",
        metadata,
        sa.Column("account_key", sa.Text, primary_key=True),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenure_months", sa.Double),
        sa.Column("monthly_spend", sa.Text),
        sa.Column("user", sa.Text),
    )
    labels = sa.Table(
        "churn_labels",
        metadata,
        sa.Column("account_key", sa.Text, primary_key=True),
        sa.Column("churned", sa.Integer, nullable=False),
        sa.Column("known_at", sa.DateTime(timezone=True), nullable=False),
    )
    return subscriptions, labels


def simulate_accounts(days: int, per_day: int, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n = days * per_day
    tenure = rng.integers(0, 60, n).astype(float)
    spend = rng.gamma(2.0, 20.0, n).round(2)
    plan = rng.choice(PLANS, n, p=[0.5, 0.3, 0.2])
    churn_logit = -1.0 - 0.05 * tenure + 0.02 * spend + np.select([plan == "basic", plan == "pro"], [0.8, -0.8], 0.0)
    churned = (rng.random(n) < 1 / (1 + np.exp(-churn_logit))).astype(int)
    snapshot = (
        pd.to_datetime(START)
        + pd.to_timedelta(np.repeat(np.arange(days), per_day), unit="D")
        + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    )
    keys = [f"acct-{i:06d}" for i in range(n)]
    spend_text = spend.astype(str).astype(object)
    spend_text[-per_day:][:10] = "n/a"  # malformed text in the scoring day
    subscriptions = pd.DataFrame({"account_key": keys, "snapshot_at": snapshot, "tenure_months": tenure, "monthly_spend": spend_text, "user": plan})
    labels = pd.DataFrame({"account_key": keys, "churned": churned, "known_at": snapshot + pd.Timedelta(days=1)})
    return subscriptions, labels


def test_a_spec_file_alone_gives_a_working_nightly_job(engine, airflow_db):
    metadata = sa.MetaData()
    subscriptions, labels = churn_tables(metadata)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    try:
        accounts, outcomes = simulate_accounts(days=8, per_day=800)
        load_frame(engine, "subscriptions", accounts)
        load_frame(engine, "churn_labels", outcomes[outcomes["known_at"] <= SCORING_DAY])
        spec = get_spec("churn")
        version = bootstrap_champion(engine, spec, start=START, end=SCORING_DAY)

        state, results = run_day("churn_nightly_predict", SCORING_DAY)
        assert state == "success"
        summary = results["predict"]
        written = predictions(engine, model="churn")
        assert summary["rows_read"] == 800 and summary["rows_rejected"] == 10
        assert len(written) == 790 == summary["rows_scored"]
        assert set(written["model_version"]) == {version}
        assert written["entity_id"].str.startswith("acct-").all()
        assert count(engine, "rejected_rows", "model_name = 'churn' AND reason = :r", r="monthly_spend is not a number (wrong type)") == 10
        assert count(engine, "predictions", "model_name = 'fraud'") == 0
    finally:
        metadata.drop_all(engine)
