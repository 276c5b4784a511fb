"""BatchPredictOperator and the warehouse connection, called directly with a real warehouse."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException

from batchwatch_airflow.connections import warehouse_url
from batchwatch_airflow.operators import BatchPredictOperator

DAY = datetime(2026, 10, 11, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param("sqlite:////tmp/batchwatch/warehouse.db", "sqlite:////tmp/batchwatch/warehouse.db", id="sqlite-absolute-path"),
        pytest.param("postgresql://bw:s%40cret@db.internal:5433/wh", "postgresql+psycopg://bw:s%40cret@db.internal:5433/wh", id="postgres"),
        pytest.param(
            "postgres://bw@db.internal/wh?sslmode=require&cursor=dictcursor",
            "postgresql+psycopg://bw@db.internal/wh?sslmode=require",
            id="postgres-libpq-option-kept-hook-option-dropped",
        ),
    ],
)
def test_the_airflow_connection_becomes_a_warehouse_url(monkeypatch, uri, expected):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", uri)
    assert warehouse_url("warehouse") == expected


def test_the_engine_connects_with_the_connections_libpq_options(monkeypatch, postgres_database):
    """The postgres provider's hook builds the URL; a libpq option of the connection reaches the session."""
    from batchwatch_airflow.connections import warehouse_engine

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", f"{postgres_database}?application_name=batchwatch-warehouse")
    engine = warehouse_engine("warehouse")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW application_name").scalar_one() == "batchwatch-warehouse"
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_a_connection_of_another_type_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "mysql://u@h/db")
    with pytest.raises(ValueError, match="must be postgres or sqlite"):
        warehouse_url("warehouse")


def _operator(**kwargs) -> BatchPredictOperator:
    return BatchPredictOperator(
        task_id="predict",
        model_name="fraud",
        data_interval_start=DAY.isoformat(),
        data_interval_end=(DAY + timedelta(days=1)).isoformat(),
        **kwargs,
    )


def test_execute_scores_the_interval_and_returns_the_summary(warehouse_url):
    from batchwatch.demo.seed import simulate_into
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    engine = make_engine(warehouse_url)
    simulate_into(engine, start=DAY - timedelta(days=6), end=DAY + timedelta(days=1), rows_per_day=800, labels_as_of=DAY)
    version = bootstrap_champion(engine, get_spec("fraud"), start=DAY - timedelta(days=6), end=DAY)

    summary = _operator(chunk_size="250").execute({"run_id": "operator-test"})
    assert (summary["model_version"], summary["ds"], summary["rows_read"], summary["rows_scored"]) == (version, "2026-10-11", 800, 800)
    with engine.connect() as connection:
        run_ids = connection.exec_driver_sql("SELECT DISTINCT run_id FROM predictions").scalars().all()
    assert run_ids == ["operator-test"]
    engine.dispose()


def test_a_permanent_error_fails_without_retrying(warehouse_url):
    """No champion yet: retrying cannot help, so the task fails at once with what to do."""
    with pytest.raises(AirflowFailException, match=r"no champion; register one first \(bin/batchwatch bootstrap fraud\)"):
        _operator().execute({"run_id": "operator-test"})


def test_a_run_without_a_data_interval_fails_with_the_reason():
    """Airflow 3 lets a run be triggered with no logical date; the nightly job needs its day."""
    operator = BatchPredictOperator(task_id="predict", model_name="fraud", data_interval_start="None", data_interval_end="None")
    with pytest.raises(AirflowFailException, match="no data interval"):
        operator.execute({"run_id": "manual"})


def test_a_drift_check_without_a_data_interval_ends_its_window_at_run_after(warehouse_url):
    from types import SimpleNamespace

    import sqlalchemy as sa

    from batchwatch.demo.seed import simulate_into
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine
    from batchwatch_airflow.operators import DriftCheckOperator

    engine = make_engine(warehouse_url)
    simulate_into(engine, start=DAY - timedelta(days=8), end=DAY + timedelta(days=1), rows_per_day=800, labels_as_of=DAY)
    bootstrap_champion(engine, get_spec("fraud"), start=DAY - timedelta(days=8), end=DAY)
    run_after = DAY + timedelta(days=1, minutes=7)
    context = {"run_id": "manual", "dag_run": SimpleNamespace(run_after=run_after)}

    summary = DriftCheckOperator(task_id="check_drift", model_name="fraud", window_end="None").execute(context)
    with engine.connect() as connection:
        expected = connection.execute(
            sa.text("SELECT COUNT(*) FROM transactions WHERE event_time >= :s AND event_time < :e"),
            {"s": run_after - timedelta(hours=24), "e": run_after},
        ).scalar_one()
    assert summary["window_end"] == run_after.isoformat() and summary["rows"] == expected
    assert 0 < 800 - expected < 800, "the window is the 24 h before run_after, not the calendar day"
    engine.dispose()


def test_the_artifact_key_can_come_from_an_airflow_variable(warehouse_url, monkeypatch):
    """Kept as the Variable batchwatch_artifact_key (a secrets backend can serve it), the key reaches the core:
    an unsigned champion is refused at once with what to do, and scores once signed."""
    from batchwatch import registry
    from batchwatch.demo.seed import simulate_into
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    engine = make_engine(warehouse_url)
    simulate_into(engine, start=DAY - timedelta(days=6), end=DAY + timedelta(days=1), rows_per_day=800, labels_as_of=DAY)
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", "")  # no key in the environment; restored after the test
    bootstrap_champion(engine, get_spec("fraud"), start=DAY - timedelta(days=6), end=DAY)
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWATCH_ARTIFACT_KEY", "kept-in-a-secrets-backend")

    with pytest.raises(AirflowFailException, match=r"fraud v1 .* has no signature, and BATCHWATCH_ARTIFACT_KEY is set"):
        _operator().execute({"run_id": "unsigned"})
    assert registry.sign_versions(engine, "fraud") == [1]  # with the key the failed run put in the environment
    assert _operator().execute({"run_id": "signed"})["rows_scored"] == 800
    engine.dispose()
