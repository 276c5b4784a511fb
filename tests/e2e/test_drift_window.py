"""A drift window that holds only part of its time span reports insufficient_data, on PostgreSQL and on SQLite.

The demo fills days up to midnight; the first scheduled hourly check the next evening saw only the
last hour of demo data (more rows than drift.min_rows, all from one hour of the day) and opened a
false incident. Here a day holds only its 10:00-11:00 hour, busy enough to pass drift.min_rows.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring import drift
from batchwatch.spec import get_spec, parse_spec

from .conftest import FIRST_DAY, count

HISTORY_START = FIRST_DAY - timedelta(days=14)
ROWS_PER_DAY = 4_000
PARTIAL_DAY = FIRST_DAY + timedelta(days=2)  # after two empty days, so its windows hold no history
ONLY_HOUR = PARTIAL_DAY + timedelta(hours=10)  # the one hour of PARTIAL_DAY whose rows arrived
FULL_DAY = PARTIAL_DAY + timedelta(days=2)  # a whole clean day, after an empty one
WINDOW_ENDS = {
    "only-its-last-hour": ONLY_HOUR + timedelta(hours=1),
    "only-its-first-hour": ONLY_HOUR + timedelta(hours=24),
}


def run_hour(window_end):
    from tools.runs import load_dag, run_interval

    dag = load_dag("fraud_hourly_drift")
    for task in dag.tasks:
        task.retries = 0
    return run_interval(dag, window_end - timedelta(hours=1), window_end)


def verdicts(engine, window_end) -> pd.DataFrame:
    query = sa.text("SELECT verdict, details FROM drift_results WHERE model_name = 'fraud' AND window_end = :e").columns(details=sa.JSON)
    with engine.connect() as connection:
        return pd.DataFrame(connection.execute(query, {"e": window_end}).mappings().all(), columns=["verdict", "details"])


def open_alert(engine) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM alerts WHERE model_name = 'fraud' AND status = 'open'")).mappings().first()
    return None if row is None else dict(row)


@pytest.fixture
def partial_world(engine, airflow_db):
    """Two weeks of history and a champion; two empty days; a busy day of which only one hour arrived; an empty day; a whole day."""
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=FIRST_DAY)
    simulate_into(engine, start=PARTIAL_DAY, end=PARTIAL_DAY + timedelta(days=1), rows_per_day=24_000, seed=11)
    with engine.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM transactions WHERE event_time >= :s AND event_time < :e AND NOT (event_time >= :h AND event_time < :h1)"),
            {"s": PARTIAL_DAY, "e": PARTIAL_DAY + timedelta(days=1), "h": ONLY_HOUR, "h1": ONLY_HOUR + timedelta(hours=1)},
        )
    simulate_into(engine, start=FULL_DAY, end=FULL_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, seed=12)
    return engine


@pytest.mark.parametrize("window", list(WINDOW_ENDS))
def test_a_window_holding_one_hour_of_its_day_reports_insufficient_data_and_no_alert(partial_world, window):
    engine, end = partial_world, WINDOW_ENDS[window]
    state, task_results = run_hour(end)
    summary = task_results["check_drift"]
    assert state == "success"
    assert summary["rows"] > get_spec("fraud").drift.min_rows, "enough rows: only their time span makes the window insufficient"
    assert summary["status"] == drift.INSUFFICIENT and summary["drifted"] == [] and summary["incident"] is None
    assert summary["coverage"] < 1 / 24
    assert "drift.min_window_coverage" in summary["reason"] and "stopped arriving" in summary["reason"]

    written = verdicts(engine, end)
    assert len(written) == summary["tests"] > 0
    assert set(written["verdict"]) == {drift.INSUFFICIENT}
    assert {details["insufficient_data"] for details in written["details"]} == {summary["reason"]}
    assert count(engine, "alerts") == 0


def test_a_partial_window_neither_extends_nor_resolves_an_open_incident_and_a_whole_one_gets_a_verdict(partial_world):
    engine, spec = partial_world, get_spec("fraud")
    # Without the coverage rule the one-hour window is judged, and its hour-of-day mix reads as drift.
    data = spec.model_dump(by_alias=True)
    data["drift"]["min_window_coverage"] = 0
    judged = drift.check_window(engine, parse_spec(data), window_end=WINDOW_ENDS["only-its-last-hour"], run_id="no-coverage-rule")
    assert judged["status"] == drift.DRIFTED and judged["incident"]["status"] == "open"
    opened = open_alert(engine)

    later = drift.check_window(engine, spec, window_end=WINDOW_ENDS["only-its-first-hour"], run_id="partial")
    assert later["status"] == drift.INSUFFICIENT and later["incident"] is None
    assert open_alert(engine) == opened, "not extended to the partial window, not resolved by it"

    whole = drift.check_window(engine, spec, window_end=FULL_DAY + timedelta(days=1), run_id="whole")
    assert whole["coverage"] > 0.99 and whole["reason"] is None
    assert whole["status"] == drift.OK and whole["incident"]["status"] == "resolved"
    assert open_alert(engine) is None and count(engine, "alerts") == 1
