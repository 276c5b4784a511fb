"""fraud_hourly_drift end to end, through dag.test(), on PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring import drift, incidents
from batchwatch.spec import get_spec, parse_spec
from batchwatch_airflow import notifiers

from .conftest import FIRST_DAY, count

# Enough history that the champion does not learn each weekday's noise: a model that does moves its
# scores from one day to the next, and a 24-hour window rightly reports that as score drift.
HISTORY_START = FIRST_DAY - timedelta(days=14)
ROWS_PER_DAY = 4_000
DRIFT_DAY = FIRST_DAY + timedelta(days=2)  # two clean days come first
CLEAN_DAY = DRIFT_DAY + timedelta(days=1)


def run_hour(window_end: datetime):
    """One hourly run, whose data interval is the hour ending at `window_end`."""
    from tools.runs import load_dag, run_interval

    dag = load_dag("fraud_hourly_drift")
    for task in dag.tasks:
        task.retries = 0
    return run_interval(dag, window_end - timedelta(hours=1), window_end)


def results(engine, window_end: datetime) -> pd.DataFrame:
    with engine.connect() as connection:
        frame = pd.read_sql(
            sa.text("SELECT * FROM drift_results WHERE model_name = 'fraud' AND window_end = :e ORDER BY column_name, test"),
            connection,
            params={"e": window_end},
        )
    return frame


def alerts(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(sa.text("SELECT * FROM alerts WHERE model_name = 'fraud' ORDER BY id"), connection)


@pytest.fixture
def notified(monkeypatch):
    """What the spec's LogNotifier was asked to announce (dag.test runs the task in this process)."""
    calls: list[dict] = []
    original = notifiers.LogNotifier.notify

    def record(self, context):
        calls.append({"status": context["batchwatch_alert"]["status"], "message": self.message})
        original(self, context)

    monkeypatch.setattr(notifiers.LogNotifier, "notify", record)
    return calls


@pytest.fixture
def monitored_world(engine, airflow_db):
    """Two weeks of labelled history and a champion, then two clean days (1% malformed rows)."""
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=DRIFT_DAY, rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    version = bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=FIRST_DAY)
    return {"engine": engine, "champion": version}


@pytest.fixture
def drifting_world(monitored_world):
    """Then a day with a null burst and a new merchant category, then a clean day."""
    engine = monitored_world["engine"]
    scenarios = (Scenario("null_burst", DRIFT_DAY, "country", 0.5), Scenario("new_category", DRIFT_DAY, "merchant_category", 0.2))
    simulate_into(engine, start=DRIFT_DAY, end=CLEAN_DAY, rows_per_day=ROWS_PER_DAY, scenarios=scenarios, seed=8)
    simulate_into(engine, start=CLEAN_DAY, end=CLEAN_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, seed=9)
    return monitored_world


def test_a_clean_window_writes_every_test_and_no_alert(monitored_world, notified):
    engine = monitored_world["engine"]
    end = FIRST_DAY + timedelta(days=1)
    state, task_results = run_hour(end)
    assert state == "success"
    summary = task_results["check_drift"]
    assert summary["status"] == drift.OK and summary["drifted"] == [] and summary["incident"] is None
    assert summary["rows"] == count(engine, "transactions", "event_time >= :s AND event_time < :e", s=FIRST_DAY, e=end)
    assert summary["model_version"] == monitored_world["champion"]

    written = results(engine, end)
    assert len(written) == summary["tests"]
    # Every compared column has its distribution and null-rate tests; day_of_week is excluded in the spec.
    columns = set(written["column_name"])
    assert "day_of_week" not in columns and {"amount", "country", drift.SCORES, "__all__"} <= columns
    assert set(written.loc[written["column_name"] == "amount", "test"]) == {"ks", "psi", "wasserstein", "null_rate"}
    assert set(written.loc[written["column_name"] == "country", "test"]) == {"chi2", "jensen_shannon", "unseen_share", "null_rate"}
    assert set(written["verdict"]) == {"ok"}
    assert written.loc[written["test"] == "ks", "p_adjusted"].notna().all()
    assert count(engine, "alerts") == 0 and notified == []


def test_rerunning_a_window_replaces_its_results(monitored_world):
    engine = monitored_world["engine"]
    end = FIRST_DAY + timedelta(days=1, hours=6)
    run_hour(end)
    first = results(engine, end).drop(columns=["run_id", "checked_at"])
    run_hour(end)
    second = results(engine, end).drop(columns=["run_id", "checked_at"])
    assert len(second) == len(first) > 0
    pd.testing.assert_frame_equal(first, second)
    assert count(engine, "drift_results") == len(first)


def test_an_incident_is_alerted_once_and_its_recovery_recorded(drifting_world, notified):
    engine = drifting_world["engine"]
    drifted_end = DRIFT_DAY + timedelta(days=1)  # the window is exactly the drifted day

    state, task_results = run_hour(drifted_end)
    summary = task_results["check_drift"]
    assert state == "success", "drift is a finding, not a failure"
    assert summary["status"] == drift.DRIFTED and summary["incident"]["status"] == "open"
    flagged = set(
        results(engine, drifted_end).query("verdict == 'drifted'")["test"]
        + ":"
        + results(engine, drifted_end).query("verdict == 'drifted'")["column_name"]
    )
    assert {"null_rate:country", "unseen_share:merchant_category"} <= flagged
    assert [call["status"] for call in notified] == ["open"]
    assert "country" in notified[0]["message"]

    # The incident lasts: later drifted windows and a rerun of the first do not alert again.
    for end in (drifted_end + timedelta(hours=1), drifted_end + timedelta(hours=2), drifted_end):
        assert run_hour(end)[1]["check_drift"]["status"] == drift.DRIFTED
    assert len(alerts(engine)) == 1 and [call["status"] for call in notified] == ["open"]

    # The first window holding only clean rows resolves it, once.
    clean_end = CLEAN_DAY + timedelta(days=1)
    summary = run_hour(clean_end)[1]["check_drift"]
    assert summary["status"] == drift.OK and summary["incident"]["status"] == "resolved"
    run_hour(clean_end)
    incident = alerts(engine).iloc[0]
    assert len(alerts(engine)) == 1 and incident["status"] == "resolved"
    assert pd.Timestamp(incident["resolved_window_end"]).tz_localize(None) == pd.Timestamp(clean_end).tz_localize(None)
    assert pd.Timestamp(incident["last_drifted_window_end"]).tz_localize(None) == pd.Timestamp(drifted_end + timedelta(hours=2)).tz_localize(None)
    assert incident["open_notified_at"] is not None and incident["resolved_notified_at"] is not None
    assert [call["status"] for call in notified] == ["open", "resolved"]


def test_no_reference_fails_the_task_with_the_reason(monitored_world):
    engine = monitored_world["engine"]
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM reference_profiles"))
    state, _ = run_hour(FIRST_DAY + timedelta(days=1))
    assert state == "failed"
    assert count(engine, "drift_results") == 0


def test_a_big_window_is_checked_on_the_same_sample_every_time(monitored_world):
    """Over drift.max_rows, a hash of the key picks the rows: about max_rows of them, the same ones on a rerun."""
    engine = monitored_world["engine"]
    data = get_spec("fraud").model_dump(by_alias=True)
    data["drift"]["max_rows"] = 1_000
    spec = parse_spec(data)
    end = FIRST_DAY + timedelta(days=1)

    first = drift.check_window(engine, spec, window_end=end, run_id="sampled")
    written = results(engine, end).drop(columns=["run_id", "checked_at"])
    again = drift.check_window(engine, spec, window_end=end, run_id="sampled")
    assert first["rows_in_window"] == count(engine, "transactions", "event_time >= :s AND event_time < :e", s=FIRST_DAY, e=end)
    assert first["sample_fraction"] == pytest.approx(1_000 / first["rows_in_window"])
    assert 800 <= first["rows"] <= 1_200 and again["rows"] == first["rows"]
    pd.testing.assert_frame_equal(results(engine, end).drop(columns=["run_id", "checked_at"]), written)
    assert set(written.loc[written["test"] == "null_rate", "n_current"]) == {first["rows"]}


def test_an_incident_change_is_claimed_once_and_released_when_a_notifier_fails(drifting_world):
    engine = drifting_world["engine"]
    summary = drift.check_window(engine, get_spec("fraud"), window_end=DRIFT_DAY + timedelta(days=1), run_id="direct")
    assert summary["incident"]["status"] == "open"
    (pending,) = incidents.pending_notifications(engine, "fraud")
    alert_id = pending["alert_id"]

    assert incidents.claim_notification(engine, alert_id, "open") is True
    assert incidents.claim_notification(engine, alert_id, "open") is False, "a second run or a retry does not announce it again"
    assert incidents.pending_notifications(engine, "fraud") == []
    incidents.release_notification(engine, alert_id, "open")  # what the operator does when a notifier raises
    assert [p["alert_id"] for p in incidents.pending_notifications(engine, "fraud")] == [alert_id]


def test_a_drifted_window_leaves_its_report_and_a_link_to_it(drifting_world):
    """The run writes the window's self-contained report under the artifact store; its task links to it."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from batchwatch.registry import artifact_root
    from tests.e2e.test_page_links import stored_link

    drifted_end = DRIFT_DAY + timedelta(days=1)
    state, task_results = run_hour(drifted_end)
    assert state == "success"
    path = artifact_root() / "reports" / "fraud" / "drift" / f"{drifted_end:%Y%m%dT%H%MZ}.html"
    assert task_results["check_drift"]["report"] == str(path)
    page = path.read_text()
    assert 'class="status drifted"' in page
    drifted = results(drifting_world["engine"], drifted_end).query("verdict == 'drifted'")
    assert page.count('<tr class="drifted">') == len(drifted) > 0
    for line in task_results["check_drift"]["drifted"]:
        assert line.split(":")[0] in page
    assert "country: reference (filled)" not in page  # categorical: a table of shares, not a histogram
    assert "<table><tr><th>category</th><th>reference share</th><th>current share</th></tr>" in page

    with create_session() as session:
        run_id = session.query(DagRun).filter_by(dag_id="fraud_hourly_drift", data_interval_end=drifted_end).one().run_id
    from airflow.models.xcom import XComModel

    with create_session() as session:
        query = XComModel.get_many(run_id=run_id, dag_ids="fraud_hourly_drift", task_ids="check_drift", key="_link_DriftReportLink")
        (row,) = session.scalars(query).all()
        link = XComModel.deserialize_value(row)
    assert link.endswith(f"/batchwatch/models/fraud/reports/drift/{drifted_end:%Y%m%dT%H%MZ}")
    assert stored_link("fraud_hourly_drift", "check_drift", run_id).startswith("/batchwatch/models/fraud?")

    path.write_text("stale")
    assert run_hour(drifted_end)[0] == "success"
    assert 'class="status drifted"' in path.read_text(), "a rerun of the window replaces its report"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left behind"
