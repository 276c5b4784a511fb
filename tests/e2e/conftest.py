"""End-to-end helpers: a simulated fraud warehouse with a champion, and DAG runs through dag.test()."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine

HISTORY_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
FIRST_DAY = datetime(2026, 10, 11, tzinfo=timezone.utc)
DAY = FIRST_DAY
ROWS_PER_DAY = 1_500
SCORED_UNTIL = FIRST_DAY + timedelta(days=2)
MALFORMED_RATE = 0.01


@pytest.fixture
def engine(warehouse_url):
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


def build_fraud_world(engine) -> int:
    """Ten days of labelled history, a bootstrapped champion, and two days to score (1% malformed); the champion's version."""
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=SCORED_UNTIL, rows_per_day=ROWS_PER_DAY, malformed_rate=MALFORMED_RATE)
    return bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=FIRST_DAY)


@pytest.fixture
def fraud_world(engine, airflow_db):
    return {"engine": engine, "champion": build_fraud_world(engine)}


def run_day(dag_id: str, day: datetime, *, conf: dict | None = None):
    """Run one nightly interval [day, day + 1) through Airflow; return (state, task results).

    Retries are turned off: dag.test() would otherwise sit out each retry delay of a failing task.
    """
    from tools.runs import load_dag, run_interval

    dag = load_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    return run_interval(dag, day, day + timedelta(days=1), conf)


def predictions(engine, model: str = "fraud", ds=None) -> pd.DataFrame:
    query = "SELECT * FROM predictions WHERE model_name = :m" + (" AND ds = :ds" if ds else "") + " ORDER BY role, entity_id"
    with engine.connect() as connection:
        return pd.read_sql(sa.text(query), connection, params={"m": model, "ds": ds})


def count(engine, table: str, where: str = "1 = 1", **params) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE {where}"), params).scalar_one()
