"""Faults a retry cannot fix fail the task on its first try, through Airflow's own machinery."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch import scoring
from batchwatch.data.validation import MAX_KEY_LENGTH
from batchwatch.errors import PermanentError
from batchwatch.modeling import training
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring import drift
from batchwatch.spec import get_spec
from batchwatch.warehouse import QueryRefused, load_frame

from . import test_second_model as churn
from .conftest import DAY, HISTORY_START, ROWS_PER_DAY, predictions, run_day

WEEK_END = datetime(2026, 9, 21, 3, tzinfo=timezone.utc)  # a Monday 03:00: the end of a weekly interval


def run_with_retries(dag_id: str, until: datetime, retries: int = 1, *, mapped: bool = False) -> tuple[str, dict]:
    """Run the DAG's last interval ending by `until` with `retries` retries and no delay between tries.

    Returns the run's state and each task's (state, try_number), by task id, or by (task id, map index) when `mapped`.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tools.runs import load_dag

    dag = load_dag(dag_id)
    for task in dag.tasks:
        task.retries, task.retry_delay = retries, timedelta(0)
    moment = until + timedelta(minutes=1)
    run = dag.test(logical_date=moment, run_after=moment)
    with create_session() as session:
        instances = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)).all()
        return str(run.state), {((ti.task_id, ti.map_index) if mapped else ti.task_id): (str(ti.state), ti.try_number) for ti in instances}


def test_a_nightly_run_with_no_champion_fails_on_its_first_try(engine, airflow_db):
    state, tasks = run_with_retries("fraud_nightly_predict", DAY + timedelta(days=1))
    assert state == "failed"
    assert tasks["predict"] == ("failed", 1)


def test_a_retrain_with_no_labelled_data_fails_on_its_first_try(engine, airflow_db):
    """Too little labelled data was a ValueError, retried with backoff; the same rows come back on every try."""
    state, tasks = run_with_retries("fraud_weekly_retrain", WEEK_END)
    assert state == "failed"
    assert tasks["train"] == ("failed", 1)


def test_an_error_a_retry_may_fix_is_retried(engine, airflow_db, monkeypatch):
    """The control: the same nightly run with a transient error uses its retry."""

    def lose_the_connection(*args, **kwargs):
        raise ConnectionError("injected: the warehouse went away")

    monkeypatch.setattr(scoring, "predict_interval", lose_the_connection)
    state, tasks = run_with_retries("fraud_nightly_predict", DAY + timedelta(days=1))
    assert state == "failed"
    assert tasks["predict"] == ("failed", 2)


# --- texts that spell a NULL marker (point 6) and over-long keys (point 7), through the nightly DAG --

LOOKS_NULL = ["\\N", "NULL", ""]


def insert_rows(engine, table: str, rows: list[dict]) -> None:
    """Plain INSERTs with bound values: the rows arrive exactly as given, whatever a bulk loader would make of them."""
    with engine.begin() as connection:
        connection.execute(sa.Table(table, sa.MetaData(), autoload_with=connection).insert(), rows)


def rejects(engine, model: str) -> pd.DataFrame:
    with engine.connect() as connection:
        frame = pd.read_sql(sa.text("SELECT entity_id, reason, payload FROM rejected_rows WHERE model_name = :m"), connection, params={"m": model})
    frame["payload"] = frame["payload"].map(lambda payload: payload if isinstance(payload, dict) else json.loads(payload))  # JSONB or text
    return frame.set_index("entity_id")


def a_valid_transaction(transaction_id: int, **changes) -> dict:
    row = {
        "transaction_id": transaction_id, "card_id": 1, "event_time": DAY + timedelta(hours=12), "amount": 25.0, "hour": 12.0,
        "day_of_week": 3.0, "txn_count_30d": 4.0, "avg_amount_7d": 30.0, "merchant_category": "grocery", "country": "US", "channel": "pos",
    }  # fmt: skip
    return {**row, **changes}


def test_category_texts_that_spell_null_are_unknown_categories(fraud_world):
    """`\\N`, 'NULL' and '' in a nullable (country) and a non-null (merchant_category) category column are
    texts outside the category list: rejected as unknown, the value kept in the stored reject."""
    engine = fraud_world["engine"]
    first_id = 9_000_000_000
    nullable = {first_id + n: text for n, text in enumerate(LOOKS_NULL)}
    not_null = {first_id + 10 + n: text for n, text in enumerate(LOOKS_NULL)}
    insert_rows(engine, "transactions", [a_valid_transaction(key, country=text) for key, text in nullable.items()]
                + [a_valid_transaction(key, merchant_category=text) for key, text in not_null.items()])  # fmt: skip

    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success"
    assert results["predict"]["rows_read"] == ROWS_PER_DAY + 6
    stored = rejects(engine, "fraud")
    for key, text in nullable.items():
        assert stored.loc[str(key), "reason"] == "country has an unknown category"
        assert stored.loc[str(key), "payload"]["country"] == text
    for key, text in not_null.items():
        assert stored.loc[str(key), "reason"] == "merchant_category has an unknown category"
        assert stored.loc[str(key), "payload"]["merchant_category"] == text
    assert not predictions(engine, ds=DAY.date())["entity_id"].isin([str(key) for key in [*nullable, *not_null]]).any()


@pytest.fixture
def churn_world(engine, airflow_db):
    """tests/specs/churn.yaml over its own tables (a text key, a nullable category), with a champion; dropped after."""
    metadata = sa.MetaData()
    churn.churn_tables(metadata)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    if engine.dialect.name == "postgresql":  # a source need not index its key, and one that does refuses a key over ~2.7 kB itself
        with engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_pkey")
    accounts, outcomes = churn.simulate_accounts(days=8, per_day=800)
    load_frame(engine, "subscriptions", accounts[accounts["snapshot_at"] < churn.SCORING_DAY])
    load_frame(engine, "churn_labels", outcomes[outcomes["known_at"] <= churn.SCORING_DAY])
    bootstrap_champion(engine, get_spec("churn"), start=churn.START, end=churn.SCORING_DAY)
    # The scoring day goes in with bound INSERTs: what is stored is exactly what the test says.
    day = accounts[accounts["snapshot_at"] >= churn.SCORING_DAY].iloc[10:110]  # 100 valid rows: the first ten spend "n/a"
    insert_rows(engine, "subscriptions", [{**row, "snapshot_at": row["snapshot_at"].to_pydatetime()} for row in day.to_dict(orient="records")])
    yield engine
    metadata.drop_all(engine)


def a_valid_account(key: str, **changes) -> dict:
    row = {"account_key": key, "snapshot_at": churn.SCORING_DAY + timedelta(hours=6), "tenure_months": 12.0, "monthly_spend": "30.5", "user": "plus"}
    return {**row, **changes}


def test_keys_that_spell_null_are_scored_as_keys(churn_world):
    engine = churn_world
    insert_rows(engine, "subscriptions", [a_valid_account(key) for key in LOOKS_NULL] + [a_valid_account("account-with-null-user", user=None)])
    insert_rows(engine, "subscriptions", [a_valid_account(f"user-{n}", user=text) for n, text in enumerate(LOOKS_NULL)])

    state, results = run_day("churn_nightly_predict", churn.SCORING_DAY)
    assert state == "success"
    scored = set(predictions(engine, model="churn")["entity_id"])
    assert {*LOOKS_NULL, "account-with-null-user"} <= scored
    stored = rejects(engine, "churn")
    assert None not in set(stored.index) and not stored["reason"].str.contains("is null").any()
    for n, text in enumerate(LOOKS_NULL):
        assert stored.loc[f"user-{n}", "reason"] == "user has an unknown category"
        assert stored.loc[f"user-{n}", "payload"]["user"] == text
    assert results["predict"]["rows_scored"] == 100 + len(LOOKS_NULL) + 1


def test_an_over_long_key_is_rejected_and_the_rest_of_the_day_scores(churn_world):
    """A 3,000-character key once failed the whole day on PostgreSQL (`index row size … exceeds`)."""
    engine = churn_world
    # Hex digests, which PostgreSQL cannot compress into its index as it would "kkk…".
    long_key = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(47))[:3_000]
    longest = "".join(chr(0x1F600 + n % 80) for n in range(MAX_KEY_LENGTH))  # 4 bytes a character in UTF-8, the most there is
    insert_rows(engine, "subscriptions", [a_valid_account(long_key), a_valid_account(longest)])

    state, results = run_day("churn_nightly_predict", churn.SCORING_DAY)
    assert state == "success"
    assert results["predict"]["rows_scored"] == 101 and results["predict"]["rows_rejected"] == 1
    assert results["predict"]["rejects_by_reason"] == {f"account_key longer than {MAX_KEY_LENGTH} characters": 1}
    stored = rejects(engine, "churn")
    assert stored.loc[long_key, "reason"] == "account_key longer than 256 characters"
    assert longest in set(predictions(engine, model="churn")["entity_id"])


# --- a damaged reference profile and a source query the database refuses (point 8) -------------------


def reference_rows(engine, version: int) -> list[dict]:
    query = sa.text("SELECT * FROM reference_profiles WHERE model_name = 'fraud' AND model_version = :v").columns(profile=sa.JSON)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query, {"v": version}).mappings()]


def store_reference(engine, version: int, rows: list[dict]) -> None:
    table = sa.Table("reference_profiles", sa.MetaData(), sa.Column("profile", sa.JSON), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM reference_profiles WHERE model_name = 'fraud' AND model_version = :v"), {"v": version})
        connection.execute(table.insert(), rows)


def without_field(rows: list[dict], column: str, name: str) -> list[dict]:
    return [
        {**row, "profile": {key: value for key, value in row["profile"].items() if key != name}} if row["column_name"] == column else row
        for row in rows
    ]


def with_field(rows: list[dict], column: str, name: str, value) -> list[dict]:
    return [{**row, "profile": {**row["profile"], name: value}} if row["column_name"] == column else row for row in rows]


DAMAGES = {
    "no profile of feature 'amount'": lambda rows: [row for row in rows if row["column_name"] != "amount"],
    "no score row (__score__)": lambda rows: [row for row in rows if row["kind"] != "score"],
    "no joint row (__joint__)": lambda rows: [row for row in rows if row["kind"] != "joint"],
    "the categorical profile of 'country' has no 'rows'": lambda rows: without_field(rows, "country", "rows"),
    "the score profile of '__score__' has no 'positives'": lambda rows: without_field(rows, "__score__", "positives"),
    "a value cannot be read": lambda rows: with_field(rows, "hour", "sample", "not a list of numbers"),
}


def test_a_damaged_reference_profile_is_a_permanent_error_naming_the_version_and_what_is_missing(fraud_world):
    """Each damage was a bare KeyError ('amount', 'score', 'joint', 'rows') that Airflow retried."""
    engine, version = fraud_world["engine"], fraud_world["champion"]
    intact = reference_rows(engine, version)
    spec = get_spec("fraud")
    for missing, damage in DAMAGES.items():
        store_reference(engine, version, damage(intact))
        with pytest.raises(drift.DamagedReference, match=rf"^fraud v{version}'s reference profile .* is damaged: .*{re.escape(missing)}") as raised:
            drift.check_window(engine, spec, window_end=DAY + timedelta(days=1), run_id="damaged")
        assert isinstance(raised.value, PermanentError) and "Register a new version" in str(raised.value)

    store_reference(engine, version, DAMAGES["no profile of feature 'amount'"](intact))
    state, tasks = run_with_retries("fraud_hourly_drift", DAY + timedelta(days=1))
    assert (state, tasks["check_drift"]) == ("failed", ("failed", 1))

    store_reference(engine, version, intact)
    assert drift.check_window(engine, spec, window_end=DAY + timedelta(days=1), run_id="restored")["model_version"] == version


BROKEN_QUERIES = {
    "syntax error": "SELECT * FORM transactions",
    "unknown table": "SELECT * FROM no_such_transactions",
    "unknown column": "SELECT transaction_id, event_time, amount, hour, day_of_week, txn_count_30d, avg_amount_7d,"
    " merchant_category, country, channel, no_such_column FROM transactions",
}
DATABASE_SAYS = {  # what each database says, in part
    ("postgresql", "syntax error"): 'syntax error at or near "FORM"',
    ("postgresql", "unknown table"): 'relation "no_such_transactions" does not exist',
    ("postgresql", "unknown column"): 'column "no_such_column" does not exist',
    ("sqlite", "syntax error"): 'near "FORM": syntax error',
    ("sqlite", "unknown table"): "no such table: no_such_transactions",
    ("sqlite", "unknown column"): "no such column: no_such_column",
}


@pytest.mark.parametrize("fault", list(BROKEN_QUERIES))
def test_a_source_query_the_database_refuses_is_a_permanent_error_naming_source_query(fraud_world, fault: str):
    """On every read of the source: nightly scoring, the drift check and training."""
    engine = fraud_world["engine"]
    fraud = get_spec("fraud")
    spec = fraud.model_copy(update={"source": fraud.source.model_copy(update={"table": None, "query": BROKEN_QUERIES[fault]})})
    says = re.escape(DATABASE_SAYS[(engine.dialect.name, fault)])
    reads = {
        "nightly": lambda: scoring.predict_interval(engine, spec, start=DAY, end=DAY + timedelta(days=1), run_id="broken"),
        "drift": lambda: drift.check_window(engine, spec, window_end=DAY + timedelta(days=1), run_id="broken"),
        "training": lambda: training.read_labelled(engine, spec, HISTORY_START, DAY, DAY),
    }
    for read in reads.values():
        with pytest.raises(QueryRefused, match=rf"^model spec fraud: source\.query.*: the database refused the query: .*{says}") as raised:
            read()
        assert isinstance(raised.value, PermanentError)


def test_a_rejected_row_keeps_a_key_that_spells_null(churn_world):
    """The stored reject's entity_id is the key as it was, not NULL; tabs, line breaks and backslashes too."""
    engine = churn_world
    keys = [*LOOKS_NULL, "tab\there", "two\nlines\r", "back\\slash"]
    insert_rows(engine, "subscriptions", [a_valid_account(key, user=f"enterprise\t{key}") for key in keys])
    assert run_day("churn_nightly_predict", churn.SCORING_DAY)[0] == "success"
    stored = rejects(engine, "churn")
    assert sorted(stored.index) == sorted(keys)
    assert set(stored["reason"]) == {"user has an unknown category"}
    assert [stored.loc[key, "payload"]["user"] for key in keys] == [f"enterprise\t{key}" for key in keys]
