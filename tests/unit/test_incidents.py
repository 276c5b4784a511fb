"""An open incident grows: checks new to it, or more severe than before, escalate it once per window, on SQLite and PostgreSQL.

The findings here are written by hand, so each rule is tested on exact bands; tests/e2e/test_escalations.py
drives the same rules through real drift checks and real notifiers.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from batchwatch import queries
from batchwatch.monitoring import drift, incidents
from batchwatch.monitoring.incidents import Finding
from batchwatch.warehouse import make_engine

OPENED = datetime(2026, 10, 14, tzinfo=timezone.utc)
NULLS = ("null_rate:country", Finding(2, 13.8, (("country", "null_rate"),)))
UNSEEN = ("unseen:merchant_category", Finding(2, 19.5, (("merchant_category", "unseen_share"),)))
AMOUNT = "distribution:amount"
AMOUNT_TESTS = (("amount", "ks"), ("amount", "psi"), ("amount", "wasserstein"))


def amount(band: int) -> tuple[str, Finding]:
    return AMOUNT, Finding(band, 1.5 + 2 * band, AMOUNT_TESTS)


@pytest.fixture
def engine(warehouse_url):
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


def check(engine, hours: int, *found: tuple[str, Finding]) -> dict | None:
    """What update_incident makes of a window `hours` after the opening one with these drifted checks (none: a clean window)."""
    end = OPENED + timedelta(hours=hours)
    with engine.begin() as connection:
        return incidents.update_incident(
            connection, "fraud", 1, found=bool(found), window_end=end, drifted=[f"{name}: ..." for name, _ in found],
            findings=dict(found), run_id=f"scheduled__{end:%dT%H}",
        )


def known_checks(engine) -> dict[str, int] | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT checks FROM alerts").columns(checks=sa.JSON)).scalar_one()


def escalations(engine) -> list[dict]:
    query = sa.text("SELECT id, window_end, new_checks, raised, notified_at FROM alert_escalations ORDER BY id").columns(
        new_checks=sa.JSON, raised=sa.JSON
    )
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def test_a_new_check_or_a_higher_band_escalates_the_open_incident_once_per_window(engine):
    assert check(engine, 0, NULLS, UNSEEN)["status"] == "open"
    assert known_checks(engine) == {"null_rate:country": 2, "unseen:merchant_category": 2}
    assert check(engine, 1, NULLS, UNSEEN) is None, "the same checks extend it silently"

    grown = check(engine, 2, NULLS, UNSEEN, amount(1))
    assert {k: grown[k] for k in ("status", "alert_id", "new_checks", "raised")} == {
        "status": "escalated", "alert_id": 1, "new_checks": [AMOUNT], "raised": {}
    }
    assert grown["summary"] == "new: distribution:amount"
    assert check(engine, 2, NULLS, UNSEEN, amount(1)) is None, "a rerun of the window finds nothing new"
    assert check(engine, 3, NULLS, UNSEEN, amount(1)) is None, "nor does a later window with the same checks"
    assert check(engine, 4, NULLS, amount(1)) is None, "nor one with fewer"

    raised = check(engine, 5, NULLS, UNSEEN, amount(2))
    assert (raised["new_checks"], raised["raised"]) == ([], {AMOUNT: [1, 2]})
    assert raised["summary"] == "more severe: distribution:amount (band 1 -> 2)"
    assert check(engine, 6, NULLS, UNSEEN, amount(1)) is None, "falling back to a lower band is no news"
    assert known_checks(engine) == {"null_rate:country": 2, "unseen:merchant_category": 2, AMOUNT: 2}

    # A rerun of a window that grew the incident records what it finds, but the window has had its escalation.
    assert check(engine, 2, NULLS, UNSEEN, amount(1), ("multivariate", Finding(0, 1.3, (("__all__", "domain_classifier"),)))) is None
    assert known_checks(engine)["multivariate"] == 0

    stored = escalations(engine)
    assert [e["id"] for e in stored] == [grown["escalation_id"], raised["escalation_id"]]
    assert stored[0]["new_checks"] == [{"check": AMOUNT, "band": 1, "ratio": 3.5, "tests": [list(pair) for pair in AMOUNT_TESTS]}]
    assert stored[0]["raised"] == [] and stored[1]["new_checks"] == []
    assert stored[1]["raised"] == [{"check": AMOUNT, "band": 2, "previous_band": 1, "ratio": 5.5, "tests": [list(p) for p in AMOUNT_TESTS]}]

    # The read model of the page and the API.
    [incident] = queries.incidents(engine, "fraud")
    assert incident.checks == known_checks(engine)
    assert [(e.window_end, e.notified_at, e.run_id) for e in incident.escalations] == [
        (OPENED + timedelta(hours=2), None, "scheduled__14T02"), (OPENED + timedelta(hours=5), None, "scheduled__14T05"),
    ]
    assert incident.escalations[0].checks == [queries.EscalatedCheck(AMOUNT, 1, None, 3.5)]
    assert incident.escalations[1].checks == [queries.EscalatedCheck(AMOUNT, 2, 1, 5.5)]
    assert incident.escalations[0].drifted == ["null_rate:country: ...", "unseen:merchant_category: ...", "distribution:amount: ..."]


def test_escalations_are_announced_in_order_each_claimed_once_and_released_on_failure(engine):
    check(engine, 0, NULLS)
    first = check(engine, 1, NULLS, amount(0))["escalation_id"]
    second = check(engine, 2, NULLS, amount(1))["escalation_id"]
    pending = incidents.pending_notifications(engine, "fraud")
    assert [p["change"] for p in pending] == ["open", f"escalated:{first}", f"escalated:{second}"]
    assert pending[1]["new_checks"] == [{"check": AMOUNT, "band": 0, "ratio": 1.5}] and pending[1]["raised"] == []
    assert pending[1]["window_end"] == (OPENED + timedelta(hours=1)).isoformat()

    sent: list[str] = []

    def refuses_the_second_escalation(alert: dict) -> None:
        if alert["change"] == f"escalated:{second}":
            raise ConnectionError("receiver unavailable")
        sent.append(alert["change"])

    with pytest.raises(ConnectionError):
        incidents.announce(engine, "fraud", {"log": lambda alert: None, "webhook": refuses_the_second_escalation}, run_id="first try")
    assert sent == ["open", f"escalated:{first}"]
    assert [p["change"] for p in incidents.pending_notifications(engine, "fraud")] == [f"escalated:{second}"]
    assert incidents.deliveries(engine, 1, f"escalated:{second}") == {"log"}, "the notifier that delivered is not asked again"

    assert incidents.claim_notification(engine, 1, f"escalated:{second}") is True
    assert incidents.claim_notification(engine, 1, f"escalated:{second}") is False, "a second run or a retry does not announce it again"
    assert incidents.pending_notifications(engine, "fraud") == []
    incidents.release_notification(engine, 1, f"escalated:{second}")

    assert incidents.announce(engine, "fraud", {"log": lambda alert: None, "webhook": lambda alert: sent.append(alert["change"])},
                              run_id="retry") == 1
    assert sent == ["open", f"escalated:{first}", f"escalated:{second}"]
    assert all(e["notified_at"] is not None for e in escalations(engine))
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT status, notifier, run_id FROM alert_deliveries ORDER BY status, notifier")).all()
    assert [tuple(row) for row in rows] == [
        (f"escalated:{first}", "log", "first try"), (f"escalated:{first}", "webhook", "first try"),
        (f"escalated:{second}", "log", "first try"), (f"escalated:{second}", "webhook", "retry"),
        ("open", "log", "first try"), ("open", "webhook", "first try"),
    ]

    assert check(engine, 3)["status"] == "resolved"
    assert [p["change"] for p in incidents.pending_notifications(engine, "fraud")] == ["resolved"]


def test_an_incident_that_grew_and_recovered_before_anyone_was_told_is_announced_once(engine):
    check(engine, 0, NULLS)
    check(engine, 1, NULLS, UNSEEN)
    check(engine, 2)
    assert [p["change"] for p in incidents.pending_notifications(engine, "fraud")] == ["resolved"]
    assert incidents.claim_notification(engine, 1, "resolved") is True
    assert incidents.pending_notifications(engine, "fraud") == []
    assert [e["notified_at"] is not None for e in escalations(engine)] == [True]


def test_an_incident_opened_before_its_checks_were_recorded_takes_the_next_window_as_its_baseline(engine):
    """Migration 0007 leaves `checks` NULL on an open incident: what it had seen, and announced, is unknown."""
    check(engine, 0, NULLS)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alerts SET checks = NULL"))
    assert check(engine, 1, NULLS, UNSEEN) is None
    assert known_checks(engine) == {"null_rate:country": 2, "unseen:merchant_category": 2}
    assert check(engine, 2, NULLS, UNSEEN, amount(0))["new_checks"] == [AMOUNT]


def _result(check_name: str, test: str, effect: float | None, threshold: float | None, verdict: str = drift.DRIFTED) -> drift.TestResult:
    column = check_name.split(":")[-1]
    return drift.TestResult(column, test, check_name, statistic=effect or 0.0, effect_size=effect, threshold=threshold, verdict=verdict)


def test_a_checks_band_is_its_largest_effect_over_threshold_placed_among_the_bands():
    results = [
        _result("distribution:amount", "ks", None, None),
        _result("distribution:amount", "psi", 0.5, 0.2),  # 2.5x
        _result("distribution:amount", "wasserstein", 0.45, 0.1),  # 4.5x: the check's ratio
        _result("null_rate:country", "null_rate", 0.15, 0.1),  # 1.5x
        _result("unseen:merchant_category", "unseen_share", 0.02, 0.01),  # exactly 2x: band 1 starts there
        _result("score_distribution:__score__", "score_wasserstein", float("inf"), 0.1),
        _result("positive_rate:__score__", "positive_rate", 0.05, 0.1, verdict=drift.OK),
        _result("distribution:channel", "chi2", None, None),  # no effect to measure: over its threshold, band 0
    ]
    found = drift.findings(results, (2.0, 4.0))
    assert {name: (f.band, f.ratio) for name, f in found.items()} == {
        "distribution:amount": (2, pytest.approx(4.5)),
        "null_rate:country": (0, pytest.approx(1.5)),
        "unseen:merchant_category": (1, pytest.approx(2.0)),
        "score_distribution:__score__": (2, float("inf")),
        "distribution:channel": (0, None),
    }
    assert found["distribution:amount"].tests == AMOUNT_TESTS
    assert found["score_distribution:__score__"].stored("s")["ratio"] is None, "JSONB has no infinity"
    assert {f.band for f in drift.findings(results, ()).values()} == {0}, "with no bands, every drifted check is in band 0"


def test_incidents_of_each_kind_open_and_resolve_on_their_own(engine):
    """A model has a drift incident and a performance incident at once: a clean day resolves its own kind only."""
    assert check(engine, 0, NULLS)["status"] == "open"
    day_end = OPENED + timedelta(days=1)
    line = "realized roc_auc 0.612 [0.580, 0.650] on 2026-10-14 (champion v1, 3,000 rows): upper bound 0.650 < 0.830"
    with engine.begin() as connection:
        opened = incidents.update_incident(connection, "fraud", 1, kind="performance", found=True, window_end=day_end, drifted=[line],
                                           findings={"realized:roc_auc": Finding(0, None)}, run_id="daily")
        assert opened["status"] == "open" and opened["kind"] == "performance"
        resolved = incidents.update_incident(connection, "fraud", 1, kind="performance", found=False, window_end=day_end + timedelta(days=1),
                                             drifted=[], findings={}, run_id="daily-2")
        assert resolved["status"] == "resolved" and resolved["summary"] == "no performance finding in this window"
    with engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT kind, status FROM alerts ORDER BY id")).all()
    assert [tuple(row) for row in kinds] == [("drift", "open"), ("performance", "resolved")]
    pending = {change["kind"]: change for change in incidents.pending_notifications(engine, "fraud")}
    assert pending["performance"]["status"] == "resolved" and pending["performance"]["checks"] == []
    assert pending["performance"]["drifted"] == [line], "a daily incident's announcement carries its finding lines"
    assert pending["drift"]["status"] == "open" and pending["drift"]["checks"] == []  # no drift_results were written by hand here
