"""Releases and the chaos drill on the Batchwatch page and in the JSON API, inside Airflow's real API app.

The module's warehouse (SQLite and PostgreSQL) holds what the core records (tests/web/releases.py): for fraud, a canary a
person stopped, then a canary of v3 ramped 5% -> 25% -> 50% by daily looks judged by promotion.canary on synthetic served
rows, now awaiting approval, and two chaos drills, the latest failed (flipped labels went unseen); for churn, a canary
approved through canary.resolve_approval, so a guard runs with one look. Empty states are checked in test_api's world,
which has no release and no drill.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
from markupsafe import escape
from pydantic import TypeAdapter
from sklearn.metrics import roc_auc_score

from batchwatch import queries
from batchwatch.promotion import canary
from batchwatch.promotion.releases import start_canary
from batchwatch.spec import LOWER_IS_BETTER

from . import releases, test_api
from .conftest import filled_warehouse

# Airflow's API app with its auth manager and users, over this module's warehouse.
client = test_api.client
START = date(2026, 10, 1)
DRILL_END = date(2026, 10, 20)
DRILLED_AT = datetime(2026, 10, 20, 9, 30, tzinfo=timezone.utc)
STOP_REASON = "flags twice as many grocery purchases"
APPROVAL_REASON = "the ramp held at every step"


def _fill(engine) -> dict:
    fraud, churn = releases.release_spec("fraud"), releases.release_spec("churn")
    releases.register_versions(engine, "fraud", range(1, 4))
    # A first canary a person stops before any look, then one that ramps.
    first = start_canary(engine, fraud, 2, starts_on=START - timedelta(days=9), actor="cli by tester", reason="retrained on September")
    canary.stop_canary(engine, fraud, reason=STOP_REASON, actor="cli by tester", today=START - timedelta(days=7))
    ramped = releases.run_canary(engine, fraud, 3, starts_on=START, reason="retrained on October")

    releases.register_versions(engine, "churn", range(1, 3))
    approved = releases.run_canary(engine, churn, 2, starts_on=START, reason="retrained on October")
    approved_on = approved.looks[-1].decided_on + timedelta(days=1)
    canary.resolve_approval(engine, churn, approved=True, reason=APPROVAL_REASON, actor=f"{releases.morning_actor(churn, approved_on)} by alice",
                            today=approved_on)
    guard_look = releases.guard_look(engine, churn, approved_on + timedelta(days=3))

    releases.insert_drill(engine, "fraud", DRILL_END - timedelta(days=7), days=7, finished_at=DRILLED_AT - timedelta(days=7),
                          flipped_labels_caught=True)
    releases.insert_drill(engine, "fraud", DRILL_END, days=7, finished_at=DRILLED_AT, flipped_labels_caught=False)
    return {"stopped": first.id, "ramped": ramped, "approved": approved, "approved_on": approved_on, "guard_look": guard_look}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with filled_warehouse(request.param, tmp_path_factory.mktemp(f"releases-{request.param}"), _fill) as filled:
        yield filled


def _section(html: str, key: str) -> str:
    [section] = re.findall(rf'<section id="{key}">(.*?)</section>', html, re.S)
    return section


def test_the_page_reads_differences_the_way_the_canary_judges_them():
    assert set(queries.RELEASE_LOWER_IS_BETTER) == {*LOWER_IS_BETTER, "reject_rate"}
    assert queries.RELEASE_TWO_SIDED == canary.TWO_SIDED


def test_the_release_under_way_has_its_ramp_arms_and_latest_look(world):
    ramped = world["ramped"]
    history = queries.release_history(world["engine"], "fraud")
    state = history.current
    assert (state.id, state.kind, state.version, state.baseline_version, state.status) == (ramped.release_id, "canary", 3, 1, "awaiting_approval")
    assert state.active and state.plan == releases.STEPS and (state.step, state.share) == (2, 0.5)
    assert (state.primary_metric, state.margin, state.needs_approval, state.guard_days) == ("roc_auc", releases.MARGIN, True, releases.GUARD_DAYS)
    verdicts = [look.verdict for look in ramped.looks]
    assert verdicts.count("advance") == 2 and verdicts[-1] == "promote" and "stop" not in verdicts
    advanced_on = [look.decided_on for look in ramped.looks if look.verdict == "advance"]
    assert [step.effective_from for step in state.ramp] == [START, *advanced_on]
    assert [step.effective_until for step in state.ramp] == [*advanced_on, None]
    assert [step.state for step in state.ramp] == ["done", "done", "current"]
    last_of_step = [[look for look in ramped.looks if look.step == step][-1] for step in range(3)]
    assert [step.days for step in state.ramp] == [(advanced_on[0] - START).days, (advanced_on[1] - advanced_on[0]).days,
                                                  (ramped.looks[-1].decided_on - advanced_on[1]).days]
    assert [step.looks for step in state.ramp] == [sum(look.step == step for look in ramped.looks) for step in range(3)]
    assert [(step.n_treatment, step.n_control) for step in state.ramp] == [(look.n_treatment, look.n_control) for look in last_of_step]
    assert state.days_in_step == state.ramp[-1].days
    control, treatment = state.arms
    assert (control.arm, control.model_version, control.share) == ("control", 1, 0.5)
    assert (treatment.arm, treatment.model_version, treatment.share) == ("treatment", 3, 0.5)
    assert treatment.served_rows == sum(look.n_treatment for look in last_of_step)
    assert control.served_rows == sum(look.n_control for look in last_of_step)
    # every served row of the synthetic days, each counted once
    assert control.served_rows + treatment.served_rows == releases.ROWS_PER_DAY * (ramped.looks[-1].decided_on - START).days
    assert state.looks == len(ramped.looks) and state.latest_look.verdict == "promote" and state.approval is None
    [earlier] = history.earlier
    assert (earlier.id, earlier.status, earlier.version) == (world["stopped"], "cancelled", 2) and STOP_REASON in earlier.reason
    assert [look.decided_on for look in history.looks] == [look.decided_on for look in reversed(ramped.looks)]


def test_a_look_keeps_the_numbers_the_canary_decided_on(world):
    ramped = world["ramped"]
    promoted = ramped.looks[-1]
    [look] = [one for one in queries.release_decisions(world["engine"], "fraud") if one.decided_on == promoted.decided_on]
    assert (look.release_id, look.kind, look.verdict, look.step, look.share) == (ramped.release_id, "canary", "promote", 2, 0.5)
    assert look.applied == "awaiting approval: the promotion waits for a person in the Airflow UI"
    assert look.actor == releases.morning_actor(releases.release_spec("fraud"), promoted.decided_on)
    assert look.power == pytest.approx(promoted.power, rel=1e-12) and look.required_n == promoted.required_n
    assert [test.metric for test in look.tests] == ["roc_auc", "positive_rate", "brier", "reject_rate"]
    for shown, judged in zip(look.tests, promoted.tests, strict=True):
        assert (shown.cs_lower, shown.cs_upper, shown.outcome, shown.margin) == pytest.approx(
            (judged.lower, judged.upper, judged.outcome, judged.margin))
    # The AUCs are scikit-learn's on each arm's served rows whose labels matured by that morning.
    frame = ramped.frames[promoted.decided_on]
    labelled = frame[frame["matured"]]
    primary = look.tests[0]
    for arm, value in (("control", primary.control), ("treatment", primary.treatment)):
        rows = labelled[labelled["arm"] == arm]
        assert value == pytest.approx(roc_auc_score(rows["label"], rows["score"]), rel=1e-9)
    assert primary.tolerated == (-releases.MARGIN, None)
    assert look.tests[1].tolerated == (-0.01, 0.01) and look.tests[2].tolerated == (None, look.tests[2].margin)


def test_the_release_panel_shows_the_arms_the_ramp_and_where_to_approve(client, world):
    page = test_api._page(client, "/models/fraud", "admin")
    assert page.status_code == 200
    section = _section(page.text, "release")
    state = queries.release_history(world["engine"], "fraud").current
    look = state.latest_look
    assert "v3 passed its last step and awaits approval</strong> (decided on " + str(look.decided_on) in section
    assert 'href="/dags/fraud_release/required_actions" target="_top" data-testid="required-actions">fraud_release · approve</a>' in section
    assert f'href="/dags/fraud_release/runs/scheduled__{look.decided_on:%Y-%m-%d}T07%3A00%3A00%2B00%3A00/required_actions"' in section
    assert 'href="/required_actions?response_received=false"' in section
    assert '<div class="value">v3 <span class="muted">against</span> v1</div>' in section
    assert '<div class="value">50%</div>' in section and "step 3 of 3" in section
    assert f'<div class="value">{state.days_in_step}</div>' in section and "at most 21 (release.canary.max_days_per_step)" in section
    steps = re.findall(r'<li class="ramp-step ([\w ]+)" data-share="([\d.]+)" data-state="(\w+)">(.*?)</li>', section, re.S)
    assert [(css, share) for css, share, _, _ in steps] == [("done", "0.05"), ("done", "0.25"), ("current", "0.5")]
    assert f"from {START} to {state.ramp[1].effective_from}" in steps[0][3] and f"{state.ramp[0].days} days" in steps[0][3]
    assert "last: advance" in steps[0][3] and "last: promote" in steps[2][3]
    assert re.search(r'<li class="ramp-step promote awaiting" data-state="awaiting"><strong>promote</strong>\s*'
                     r'<span class="state">awaiting approval</span>\s*<span class="muted">then a 7-day guard</span>', section)
    arms = dict(re.findall(r'<tr class="arm arm-(\w+)">(.*?)</tr>', section, re.S))
    for arm in state.arms:
        assert f'<td class="num">{arm.served_rows:,}</td>' in arms[arm.arm] and f"v{arm.model_version} " in arms[arm.arm]
    assert "badge champion" in arms["control"] and "badge challenger" in arms["treatment"]
    earlier = re.findall(r'<tr class="earlier-release">(.*?)</tr>', section, re.S)
    assert len(earlier) == 1 and "cancelled" in earlier[0] and STOP_REASON in earlier[0]


def test_the_decisions_panel_lists_each_look_newest_first_with_its_tests(client, world):
    ramped = world["ramped"]
    section = _section(test_api._page(client, "/models/fraud", "admin").text, "release_decisions")
    opened = re.findall(r'<details class="look" data-verdict="(\w+)" data-release="(\d+)"( open)?>', section)
    assert [verdict for verdict, _, _ in opened] == [look.verdict for look in reversed(ramped.looks)]
    assert [bool(is_open) for _, _, is_open in opened] == [True] + [False] * (len(opened) - 1)
    newest = section.split('<details class="look"')[1]
    promoted = ramped.looks[-1]
    assert f"{promoted.decided_on} · canary #{ramped.release_id} of v3 against v1 · step 3 (50%):" in newest
    assert '<strong class="verdict-promote">promote</strong> · awaiting approval' in newest
    assert f"Power {promoted.power:.0%} to pass an equal challenger; about\n    {promoted.required_n:,} served rows per arm needed" in newest
    assert f"{promoted.n_treatment:,} by the challenger, {promoted.n_control:,} by the champion" in newest
    assert '<th class="num">v3 (challenger)</th><th class="num">v1 (champion)</th>' in newest
    rows = dict(re.findall(r'<tr class="release-test \w+" data-metric="(\w+)" data-outcome="\w+">(.*?)</tr>', newest, re.S))
    assert list(rows) == ["roc_auc", "positive_rate", "brier", "reject_rate"]
    primary = promoted.tests[0]
    auc = rows["roc_auc"]
    assert f"{primary.comparison.treatment:.4g}" in auc and f"{primary.comparison.control:.4g}" in auc
    assert f"[{primary.lower:+.4f}, {primary.upper:+.4f}]" in auc and f"{primary.comparison.difference:+.4f}" in auc
    assert primary.outcome in ("superior", "non_inferior")
    assert f'<td class="outcome-{primary.outcome}">{primary.outcome.replace("_", " ")}</td>' in auc
    # The interval is drawn on its own axis with the margin's harm side shaded: below -margin for the AUC, beyond both sides for
    # the positive rate, above +margin for the Brier score.
    assert auc.count('<rect class="harm"') == 1 and "margin -0.05<" in auc
    assert rows["positive_rate"].count('<rect class="harm"') == 2 and rows["brier"].count('<rect class="harm"') == 1
    assert f"margin {promoted.tests[2].margin:+g}<" in rows["brier"]
    harm = re.search(r'<rect class="harm" x="([\d.]+)" y="11" height="[\d.]+" width="([\d.]+)"', auc)
    zero = re.search(r'<line class="zero" x1="([\d.]+)"', auc)
    assert float(harm.group(1)) == 6 and float(harm.group(1)) + float(harm.group(2)) < float(zero.group(1))
    first = section.split('<details class="look"')[-1]
    assert "no verdict on roc_auc yet" in first and "release-test" in first  # the guardrails were judged before any label matured


def test_a_guard_after_an_approved_canary(client, world):
    history = queries.release_history(world["engine"], "churn")
    guard = history.current
    approved_on = world["approved_on"]
    assert (guard.kind, guard.status, guard.version, guard.baseline_version) == ("guard", "running", 2, 1)
    assert (guard.started_on, guard.ends_on) == (approved_on, approved_on + timedelta(days=releases.GUARD_DAYS - 1))
    assert guard.arms == [] and guard.ramp == [] and guard.days_in_step == 3 and guard.margin == releases.GUARD_MARGIN
    assert guard.latest_look.kind == "guard" and guard.latest_look.tests[0].test == "delong_paired"
    [promoted] = history.earlier
    assert (promoted.kind, promoted.status) == ("canary", "promoted") and APPROVAL_REASON in promoted.reason
    assert queries.release_history(world["engine"], "churn", earlier=0).earlier == []

    section = _section(test_api._page(client, "/models/churn", "admin").text, "release")
    assert f"Guard period of v2 until <strong>{guard.ends_on}</strong>: the previous champion\n    v1 keeps scoring in shadow" in section
    assert "by more than 0.02" in section and '<div class="value">3 of 7</div>' in section
    look = world["guard_look"]
    assert escape(look.reason) in section and f"{look.n_treatment:,} rows both versions scored, labelled" in section
    assert '<th class="num">v2 (new champion)</th><th class="num">v1 (previous)</th>' in section
    [row] = re.findall(r'<tr class="release-test primary" data-metric="roc_auc" data-outcome="(\w+)">', section)
    assert row == look.tests[0].outcome
    assert re.search(r'<tr class="earlier-release"><td>\d+</td><td>canary</td><td>v2 against v1</td>\s*<td class="release-promoted">promoted</td>',
                     section)


def test_the_drill_panel_names_what_caught_each_fault_and_what_went_unseen(client, world):
    drill = queries.latest_drill(world["engine"], "fraud")
    assert (drill.status, drill.unseen, drill.inconclusive) == ("failed", ["flipped_labels"], False)
    assert (drill.window_start, drill.window_end, drill.last_day, drill.days) == (DRILL_END - timedelta(days=7), DRILL_END,
                                                                                   DRILL_END - timedelta(days=1), 7)
    assert [fault.fault for fault in drill.faults] == ["shifted_feature", "null_burst", "corrupted_scores", "flipped_labels", "missing_day"]
    shifted = drill.faults[0]
    assert [(d.detector, d.delay_hours) for d in shifted.detections] == [("drift:distribution:amount", 1.08), ("prediction_drift:ks", 3.08)]
    assert drill.faults[3].missed_expected == ["performance:realized"] and drill.control.caught is False
    assert queries.latest_drill(world["engine"], "churn") is None

    section = _section(test_api._page(client, "/models/fraud", "admin").text, "chaos_drill")
    assert ("Drill <strong>failed</strong>:\n  <strong>flipped_labels</strong> went unseen: no monitor fired on it.") in section
    assert f"Window {DRILL_END - timedelta(days=7)} – {DRILL_END - timedelta(days=1)} (7 days)" in section
    assert f"/dags/fraud_chaos_drill/runs/{drill.run_id.replace(':', '%3A').replace('+', '%2B')}" in section
    rows = dict(re.findall(r'<tr class="drill-fault [\w ]+" data-fault="(\w+)">(.*?)</tr>', section, re.S))
    assert list(rows) == ["shifted_feature", "null_burst", "corrupted_scores", "flipped_labels", "missing_day", "control"]
    assert "<code>drift:distribution:amount</code> after <strong>1.08 h</strong>" in rows["shifted_feature"]
    assert "<code>prediction_drift:ks</code> after <strong>3.08 h</strong>" in rows["shifted_feature"]
    assert "<code>amount</code> · 1,504 rows" in rows["shifted_feature"]
    assert "<code>volume:missing</code> after <strong>30 h</strong>" in rows["missing_day"]
    assert '<strong class="passed-false">UNSEEN</strong>' in rows["flipped_labels"] and "performance:realized" in rows["flipped_labels"]
    assert '<span class="passed-true">quiet</span>' in rows["control"] and "6 daily, 24 drift, 3 nightly" in rows["control"]
    assert "No chaos drill yet" in _section(test_api._page(client, "/models/churn", "admin").text, "chaos_drill")


def test_the_api_serves_releases_and_the_latest_drill(client, world):
    engine = world["engine"]
    response = test_api._get(client, "/models/fraud/releases", "admin")
    assert response.status_code == 200
    assert response.json() == TypeAdapter(queries.ReleaseHistory).dump_python(queries.release_history(engine, "fraud"), mode="json")
    body = response.json()
    assert body["current"]["status"] == "awaiting_approval" and [step["state"] for step in body["current"]["ramp"]] == ["done", "done", "current"]
    assert body["looks"][0]["tests"][0]["cs_lower"] == pytest.approx(world["ramped"].looks[-1].tests[0].lower)
    drill = test_api._get(client, "/models/fraud/drills/latest", "admin")
    assert drill.json() == TypeAdapter(queries.ChaosDrill).dump_python(queries.latest_drill(engine, "fraud"), mode="json")
    assert drill.json()["unseen"] == ["flipped_labels"]
    assert test_api._get(client, "/models/churn/drills/latest", "admin").json() is None
    for route in ("releases", "drills/latest"):
        assert test_api._get(client, f"/models/fraud/{route}").status_code == 401
        assert test_api._get(client, f"/models/fraud/{route}", "outsider").status_code == 403
        assert test_api._get(client, f"/models/churn/{route}", "outsider").status_code == 200
