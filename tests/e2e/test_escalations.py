"""A drift incident that grows is announced again, once: a feature that starts drifting during an open incident,
or a check drifting further past its threshold, reaches people through Airflow's own notifiers.

The hourly drift DAG runs through Airflow (tools/runs.py) over simulated days: two features drift, then a
third joins them, then the three go on, then a clean day. Messages land in the real local receivers of
test_notifiers (an SMTP sink and an HTTP server standing in for the Slack webhook and a generic endpoint).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.monitoring import drift, incidents
from batchwatch.monitoring.messages import check_line
from batchwatch.spec import get_spec

from . import test_hourly_drift, test_notifiers
from .test_hourly_drift import DRIFT_DAY, ROWS_PER_DAY, run_hour
from .test_notifiers import PAGE, delivered, drift_rows

# The drift e2e world (two weeks of history, a champion, two clean days) and the local receivers, shared.
monitored_world = test_hourly_drift.monitored_world
smtp_sink = test_notifiers.smtp_sink
http_receiver = test_notifiers.http_receiver
alerting_spec = test_notifiers.alerting_spec

TWO_DAY = DRIFT_DAY  # country nulls and a new merchant category
THREE_DAY = TWO_DAY + timedelta(days=1)  # the same two, and amounts shifted
LATER_DAY = THREE_DAY + timedelta(days=1)  # the same three
CLEAN_DAY = LATER_DAY + timedelta(days=1)
SLACK = "/slack/T000/B000/XXXX"


def end_of(day: datetime) -> datetime:
    """The window that is exactly this day."""
    return day + timedelta(days=1)


def two_features(day: datetime) -> tuple[Scenario, ...]:
    return Scenario("null_burst", day, "country", 0.5), Scenario("new_category", day, "merchant_category", 0.2)


def three_features(day: datetime) -> tuple[Scenario, ...]:
    return *two_features(day), Scenario("mean_shift", day, "amount", 1.0)


def simulate_days(engine, *days: tuple[Scenario, ...]) -> None:
    """One simulated day per entry, from the first drifted day on, with those scenarios."""
    for offset, scenarios in enumerate(days):
        day = TWO_DAY + timedelta(days=offset)
        simulate_into(engine, start=day, end=day + timedelta(days=1), rows_per_day=ROWS_PER_DAY, scenarios=scenarios, seed=8 + offset)


@pytest.fixture
def growing_world(monitored_world):
    simulate_days(monitored_world["engine"], two_features(TWO_DAY), three_features(THREE_DAY), three_features(LATER_DAY), ())
    return monitored_world


def known_checks(engine) -> dict[str, int]:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT checks FROM alerts WHERE model_name = 'fraud'").columns(checks=sa.JSON)).scalar_one()


def escalations(engine) -> list[dict]:
    query = sa.text("SELECT * FROM alert_escalations ORDER BY id").columns(new_checks=sa.JSON, raised=sa.JSON, drifted=sa.JSON)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def grown_tests(escalation: dict) -> set[tuple[str, str]]:
    """The (column, test) pairs of the checks that grew the incident."""
    return {tuple(pair) for check in [*escalation["new_checks"], *escalation["raised"]] for pair in check["tests"]}


def test_a_feature_that_starts_drifting_later_grows_the_incident_with_one_message_per_channel(
    growing_world, alerting_spec, smtp_sink, http_receiver
):
    engine = growing_world["engine"]
    sink, _ = smtp_sink
    posts, _ = http_receiver

    state, task_results = run_hour(end_of(TWO_DAY))
    assert state == "success" and task_results["check_drift"]["incident"]["status"] == "open"
    assert delivered(sink, posts) == (1, 1, 1)
    opened = known_checks(engine)
    assert {"null_rate:country", "unseen:merchant_category"} <= set(opened) and not any("amount" in name for name in opened)

    # Amounts start drifting while the incident is open: one escalation, one message per channel.
    state, task_results = run_hour(end_of(THREE_DAY))
    change = task_results["check_drift"]["incident"]
    assert state == "success" and change["status"] == "escalated" and change["alert_id"] == 1
    assert "distribution:amount" in change["new_checks"] and not set(change["new_checks"]) & set(opened)
    [escalation] = escalations(engine)
    assert escalation["id"] == change["escalation_id"] and escalation["notified_at"] is not None
    assert [check["check"] for check in escalation["new_checks"]] == change["new_checks"]
    assert escalation["drifted"] == task_results["check_drift"]["drifted"]
    assert delivered(sink, posts) == (2, 2, 2)
    grown = [row for row in drift_rows(engine, end_of(THREE_DAY)) if (row["column_name"], row["test"]) in grown_tests(escalation)]
    amount = [row for row in grown if row["column_name"] == "amount"]
    assert {row["test"] for row in amount} == {"ks", "psi", "wasserstein"} and {row["verdict"] for row in grown} == {"drifted"}

    # The email names what grew in its subject, and quotes each of its tests with the numbers and n.
    email = sink.messages[1]
    names = [*change["new_checks"], *change["raised"]]
    assert email["Subject"] == f"[Batchwatch] fraud: drift incident #1 grew: {', '.join(names)}"
    body = email.get_body(("html",)).get_content()
    assert f'href="{PAGE}"' in body and "<li>new: distribution:amount (band " in body
    for row in amount:
        numbers = (row[name] for name in ("statistic", "p_adjusted", "effect_size", "threshold"))
        cells = ("amount", row["test"], *("n/a" if number is None else f"{number:.3g}" for number in numbers), row["n_current"])
        assert "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>" in body

    # Slack: the same text; the generic endpoint: the document with the numbers as numbers.
    text = posts.to(SLACK)[1]["text"]
    assert text.startswith("Drift incident #1 of model fraud (champion v1) is still open and grew in this window:")
    assert "- new: distribution:amount (band " in text and text.endswith(f"Batchwatch page: {PAGE}")
    assert all(f"- {check_line(row, with_rows=True)}" in text for row in grown)
    document = posts.to("/incidents")[1]
    assert {k: document[k] for k in ("event", "alert_id", "escalation_id", "status", "link")} == {
        "event": "batchwatch.drift_incident.escalated", "alert_id": 1, "escalation_id": escalation["id"], "status": "escalated", "link": PAGE,
    }
    assert {(c["column_name"], c["test"]) for c in document["checks"]} == grown_tests(escalation)
    ks = next(c for c in document["checks"] if (c["column_name"], c["test"]) == ("amount", "ks"))
    expected = next(row for row in amount if row["test"] == "ks")
    assert ks["p_adjusted"] == pytest.approx(expected["p_adjusted"]) and ks["n_current"] == expected["n_current"]
    assert [c["check"] for c in document["new_checks"]] == change["new_checks"] and document["text"] == text

    # A rerun of that window, and a later day with the same three features, add nothing: no escalation, no message.
    for end in (end_of(THREE_DAY), end_of(LATER_DAY)):
        state, task_results = run_hour(end)
        assert state == "success" and task_results["check_drift"]["status"] == drift.DRIFTED and task_results["check_drift"]["incident"] is None
    assert len(escalations(engine)) == 1 and delivered(sink, posts) == (2, 2, 2)

    # The first clean day resolves it with one recovery message per channel.
    state, task_results = run_hour(end_of(CLEAN_DAY))
    assert state == "success" and task_results["check_drift"]["incident"]["status"] == "resolved"
    assert delivered(sink, posts) == (3, 3, 3)
    assert sink.messages[2]["Subject"] == "[Batchwatch] fraud: drift incident #1 resolved"
    assert posts.to("/incidents")[2]["event"] == "batchwatch.drift_incident.resolved"


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_a_refused_escalation_is_sent_by_the_next_run_once_to_the_receiver_that_missed_it(
    growing_world, alerting_spec, smtp_sink, http_receiver
):
    engine = growing_world["engine"]
    sink, _ = smtp_sink
    posts, _ = http_receiver
    assert run_hour(end_of(TWO_DAY))[0] == "success"

    posts.refuse.add("/incidents")
    state, _ = run_hour(end_of(THREE_DAY))
    assert state == "failed"
    assert delivered(sink, posts) == (2, 2, 1)
    [escalation] = escalations(engine)
    assert escalation["notified_at"] is None, "the escalation stays pending"
    with engine.connect() as connection:
        recorded = connection.execute(
            sa.text("SELECT notifier FROM alert_deliveries WHERE status = :s ORDER BY notifier"), {"s": f"escalated:{escalation['id']}"}
        ).scalars().all()
    assert recorded == [
        "0:airflow.providers.smtp.notifications.smtp.SmtpNotifier", "1:airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier"
    ]

    posts.refuse.clear()
    state, task_results = run_hour(end_of(THREE_DAY) + timedelta(hours=1))  # the next hourly run
    assert state == "success" and task_results["check_drift"]["incident"] is None
    assert delivered(sink, posts) == (2, 2, 2), "each receiver has the escalation once"
    assert posts.to("/incidents")[1]["event"] == "batchwatch.drift_incident.escalated"
    assert escalations(engine)[0]["notified_at"] is not None
    run_hour(end_of(THREE_DAY) + timedelta(hours=2))
    assert delivered(sink, posts) == (2, 2, 2)


def test_a_check_drifting_into_a_higher_severity_band_escalates_the_incident(monitored_world):
    """Country nulls go from 6% (a few times the threshold of Cohen's h) to half the rows (over 4x it): the same check, more severe."""
    engine, spec = monitored_world["engine"], get_spec("fraud")
    simulate_days(engine, (Scenario("null_burst", TWO_DAY, "country", 0.05),), (Scenario("null_burst", THREE_DAY, "country", 0.5),))

    opened = drift.check_window(engine, spec, window_end=end_of(TWO_DAY), run_id="first")
    assert opened["incident"]["status"] == "open" and "null_rate:country" in known_checks(engine)
    before = known_checks(engine)["null_rate:country"]

    grew = drift.check_window(engine, spec, window_end=end_of(THREE_DAY), run_id="second")["incident"]
    assert grew["status"] == "escalated" and grew["raised"]["null_rate:country"] == [before, 2] and before < 2
    assert drift.check_window(engine, spec, window_end=end_of(THREE_DAY), run_id="rerun")["incident"] is None
    [escalation] = escalations(engine)
    [raised] = [check for check in escalation["raised"] if check["check"] == "null_rate:country"]
    assert (raised["previous_band"], raised["band"], raised["tests"]) == (before, 2, [["country", "null_rate"]])
    assert raised["ratio"] >= spec.drift.severity_bands[1]

    [pending] = [p for p in incidents.pending_notifications(engine, "fraud") if p["status"] == "escalated"]
    assert pending["change"] == f"escalated:{escalation['id']}" and pending["window_end"] == end_of(THREE_DAY).isoformat()
    assert ("country", "null_rate") in {(c["column_name"], c["test"]) for c in pending["checks"]}
    assert {c["verdict"] for c in pending["checks"]} == {"drifted"}
