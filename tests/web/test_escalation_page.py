"""An incident that grew, on the Batchwatch page's Alerts panel and in the JSON API, inside Airflow's real API app.

The module's own warehouse (SQLite and PostgreSQL): two features drift on one day, a third joins them the
next, then a clean day; real drift checks write it, and the spec's notifiers (none: the task log) announce
each change as the hourly task does.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta

import pytest

from batchwatch import queries

from . import test_api
from .conftest import DRIFT_DAY, FIRST_DAY, HISTORY_START, ROWS_PER_DAY, filled_warehouse

# Airflow's API app with its auth manager and users, over this module's warehouse.
client = test_api.client
THREE_DAY = DRIFT_DAY + timedelta(days=1)  # the day a third feature joins the two
AFTER_DAY = THREE_DAY + timedelta(days=1)  # clean


def _fill(engine) -> dict:
    from batchwatch.demo.seed import simulate_into
    from batchwatch.demo.simulate import Scenario
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.monitoring.drift import check_window
    from batchwatch.monitoring.incidents import announce
    from batchwatch.spec import get_spec

    spec = get_spec("fraud")
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=DRIFT_DAY, rows_per_day=ROWS_PER_DAY)
    two = (Scenario("null_burst", DRIFT_DAY, "country", 0.5), Scenario("new_category", DRIFT_DAY, "merchant_category", 0.2))
    simulate_into(engine, start=DRIFT_DAY, end=THREE_DAY, rows_per_day=ROWS_PER_DAY, scenarios=two, seed=8)
    three = (*(Scenario(s.kind, THREE_DAY, s.feature, s.magnitude) for s in two), Scenario("mean_shift", THREE_DAY, "amount", 1.0))
    simulate_into(engine, start=THREE_DAY, end=AFTER_DAY, rows_per_day=ROWS_PER_DAY, scenarios=three, seed=9)
    # A busier clean day: the incident resolves only once a window can judge every check it saw drifted,
    # and the score check compares with a validation set of a few thousand rows.
    simulate_into(engine, start=AFTER_DAY, end=AFTER_DAY + timedelta(days=1), rows_per_day=4 * ROWS_PER_DAY, seed=10)
    bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    windows = [day + timedelta(days=1) for day in (DRIFT_DAY, THREE_DAY, AFTER_DAY)]
    changes = []
    for end in windows:
        changes.append(check_window(engine, spec, window_end=end, run_id=f"scheduled__{end:%FT%H}")["incident"])
        announce(engine, spec.name, {}, run_id=f"scheduled__{end:%FT%H}")
    return {"windows": windows, "changes": changes}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with filled_warehouse(request.param, tmp_path_factory.mktemp(f"grown-{request.param}"), _fill) as filled:
        yield filled


def test_the_read_model_lists_what_grew_the_incident_and_when_people_were_told(world):
    opened, grew, resolved = world["changes"]
    assert (opened["status"], grew["status"], resolved["status"]) == ("open", "escalated", "resolved")
    [incident] = queries.incidents(world["engine"], "fraud")
    [escalation] = incident.escalations
    assert escalation.id == grew["escalation_id"] and escalation.window_end == world["windows"][1]
    assert [check.check for check in escalation.checks if check.previous_band is None] == grew["new_checks"]
    amount = next(check for check in escalation.checks if check.check == "distribution:amount")
    assert amount.previous_band is None and amount.band >= 0 and amount.ratio >= 1
    assert escalation.notified_at is not None and escalation.notified_at >= escalation.created_at
    assert escalation.run_id == f"scheduled__{world['windows'][1]:%FT%H}"
    assert set(incident.checks) >= {"null_rate:country", "unseen:merchant_category", "distribution:amount"}


def test_the_api_serves_the_escalations_with_the_incident(client, world):
    [incident] = test_api._get(client, "/models/fraud/incidents", "admin").json()
    [escalation] = incident["escalations"]
    [expected] = queries.incidents(world["engine"], "fraud")[0].escalations
    assert datetime.fromisoformat(escalation["window_end"].replace("Z", "+00:00")) == world["windows"][1]
    assert escalation["checks"] == [dataclasses.asdict(check) for check in expected.checks]
    assert escalation["drifted"] == expected.drifted and escalation["notified_at"] is not None
    amount = next(check for check in escalation["checks"] if check["check"] == "distribution:amount")
    assert amount["previous_band"] is None and incident["checks"]["distribution:amount"] == amount["band"]


def test_the_alerts_panel_shows_when_the_incident_grew_with_what_and_when_it_was_announced(client, world):
    page = test_api._page(client, "/models/fraud", "admin")
    assert page.status_code == 200
    [item] = re.findall(r'<li class="escalation">(.*?)</li>', page.text, re.S)
    grown_end = world["windows"][1]
    [escalation] = queries.incidents(world["engine"], "fraud")[0].escalations
    assert f'title="{grown_end.isoformat()}">{grown_end:%Y-%m-%d %H:%M}</span>' in item
    amount = next(check for check in escalation.checks if check.check == "distribution:amount")
    assert f"new <strong>distribution:amount</strong> (band {amount.band}, {amount.ratio:.3g}× its threshold)" in item
    assert f"/batchwatch/models/fraud/reports/drift/{grown_end:%Y%m%dT%H%MZ}" in item
    assert f"notified: <span title=\"{escalation.notified_at.isoformat()}\">{escalation.notified_at:%Y-%m-%d %H:%M}</span>" in item
    assert f"/dags/fraud_hourly_drift/runs/{escalation.run_id}" in item
