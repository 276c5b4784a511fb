"""The warehouse password never reaches a task's log, summary or error."""

from __future__ import annotations

import json
import socket
import traceback
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from batchwatch_airflow.operators import BatchPredictOperator, DriftCheckOperator

DAY = datetime(2026, 10, 11, tzinfo=timezone.utc)
PASSWORD = "pw-Zq81-never-shown"


def _with_password(url: str, **parts) -> str:
    # The test server trusts local connections, so the password is carried but not checked.
    return sa.make_url(url).set(username="postgres", password=PASSWORD, **parts).render_as_string(hide_password=False)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _predict() -> BatchPredictOperator:
    return BatchPredictOperator(
        task_id="predict", model_name="fraud", data_interval_start=DAY.isoformat(), data_interval_end=(DAY + timedelta(days=1)).isoformat()
    )


def test_a_failing_connection_does_not_show_the_password(monkeypatch, caplog, capsys, postgres_server_database):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", _with_password(postgres_server_database(), port=_closed_port()))
    with pytest.raises(Exception) as raised:
        _predict().execute({"run_id": "secret-test"})
    shown = "".join(traceback.format_exception(raised.value)) + caplog.text + "".join(capsys.readouterr())
    assert "Connection refused" in shown
    assert PASSWORD not in shown


def test_operator_summaries_and_logs_do_not_show_the_password(monkeypatch, caplog, capsys, postgres_server_database):
    from types import SimpleNamespace

    from batchwatch.demo.seed import simulate_into
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine, migrate

    url = _with_password(postgres_server_database())
    engine = make_engine(url)
    migrate(engine)
    simulate_into(engine, start=DAY - timedelta(days=8), end=DAY + timedelta(days=1), rows_per_day=800, labels_as_of=DAY)
    bootstrap_champion(engine, get_spec("fraud"), start=DAY - timedelta(days=8), end=DAY)
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", url)
    caplog.set_level("INFO")

    scored = _predict().execute({"run_id": "secret-test"})
    context = {"run_id": "secret-test", "dag_run": SimpleNamespace(run_after=DAY + timedelta(days=1))}
    checked = DriftCheckOperator(task_id="check_drift", model_name="fraud", window_end="None").execute(context)

    shown = json.dumps([scored, checked], default=str) + caplog.text + "".join(capsys.readouterr())
    assert scored["rows_scored"] == 800 and checked["rows"] > 0
    assert "Scored 800 of 800 rows" in shown, "the operators' log lines are captured"
    assert PASSWORD not in shown
