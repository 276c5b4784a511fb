"""Outcomes on the Batchwatch page and in the JSON API, inside Airflow's real API app: performance realized and
estimated, volume and freshness, and incidents by kind.

The module's warehouse (SQLite and PostgreSQL) holds what the daily performance and volume check writes,
computed with scikit-learn from simulated days (tests/web/outcomes.py): 21 days of the champion v2 whose
last four are still maturing, a week of v3 in shadow, 35 days of volume verdicts with a low, a missing and a
late day, and one incident of each kind. The model churn has a champion stored before thresholds and
nothing else: the empty states.
"""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from markupsafe import escape
from pydantic import TypeAdapter
from scipy.stats import median_abs_deviation
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from batchwatch import queries

from . import outcomes, test_api
from .conftest import filled_warehouse
from .outcomes import CHAMPION, DAYS, LATE_DAY, LOW_DAY, MATURED, MISSING_DAY, SHADOW, SHADOW_DAYS, VOLUME_DAYS

# Airflow's API app with its auth manager and users, over this module's warehouse.
client = test_api.client
ALERT_RATE_LINE = "alert_rate 1% → threshold 0.187, validation precision 0.41, recall 0.38, flagging 1%"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with filled_warehouse(request.param, tmp_path_factory.mktemp(f"outcomes-{request.param}"), outcomes.fill) as filled:
        yield filled


def _fig(figure: queries.Figure) -> str:
    """A figure as the page's `fig` macro prints it."""
    return f'{figure.value:.3f} <span class="interval">[{figure.lower:.3f}, {figure.upper:.3f}]</span>'


def _section(html: str, key: str) -> str:
    [section] = re.findall(rf'<section id="{key}">(.*?)</section>', html, re.S)
    return section


def test_performance_holds_both_sources_per_version_and_role_as_scikit_learn_computes_them(world):
    history = queries.performance(world["engine"], "fraud")
    assert [(one.role, one.model_version) for one in history.series] == [("champion", CHAMPION), ("shadow", SHADOW)]
    assert history.days == DAYS and history.since == DAYS[-1] - timedelta(days=59)
    champion, shadow = history.series
    assert [day.ds for day in champion.days] == DAYS and [day.ds for day in shadow.days] == SHADOW_DAYS

    day = champion.days[5]
    scores, labels = outcomes.simulated_day(CHAMPION, day.ds)
    flagged = scores >= 0.187
    assert day.matured and day.threshold == 0.187 and (day.rows_scored, day.rows_labelled, day.label_coverage) == (3_000, 3_000, 1.0)
    expected = {"roc_auc": roc_auc_score(labels, scores), "average_precision": average_precision_score(labels, scores),
                "precision": precision_score(labels, flagged), "recall": recall_score(labels, flagged), "f1": f1_score(labels, flagged),
                "brier": brier_score_loss(labels, scores), "positive_rate": flagged.mean(), "label_rate": labels.mean()}
    assert {metric: day.realized[metric].value for metric in expected} == pytest.approx(expected, rel=1e-9)
    assert all(figure.lower <= figure.value <= figure.upper for figure in day.realized.values() if figure.lower is not None)
    assert day.realized["label_coverage"] == queries.Figure(1.0, None, None)
    estimate = outcomes.estimated_metrics(scores, 0.187)
    assert day.estimated["roc_auc"].value == pytest.approx(estimate["roc_auc"], rel=1e-9)
    assert day.estimation_error == pytest.approx({metric: estimate[metric] - expected[metric] for metric in estimate}, rel=1e-9)

    maturing = champion.days[-1]
    assert not maturing.matured and maturing.realized == {} and maturing.estimation_error == {}
    assert maturing.label_coverage == pytest.approx(0.12) and maturing.rows_labelled == 360
    assert set(maturing.estimated) == {"roc_auc", "average_precision", "precision", "recall", "f1", "brier", "label_rate"}
    assert history.metrics[:3] == ["roc_auc", "average_precision", "precision"] and history.metrics[-1] == "label_coverage"


def test_the_glance_figures_and_the_threshold_in_force(world):
    history = queries.performance(world["engine"], "fraud")
    champion = history.series[0]
    assert (history.latest_realized_auc.ds, history.latest_realized_auc.model_version) == (MATURED[-1], CHAMPION)
    assert history.latest_realized_auc.figure == champion.days[len(MATURED) - 1].realized["roc_auc"]
    assert (history.latest_estimated_auc.ds, history.latest_estimated_auc.figure) == (DAYS[-1], champion.days[-1].estimated["roc_auc"])
    errors = []
    for ds in MATURED:
        scores, labels = outcomes.simulated_day(CHAMPION, ds)
        errors.append(abs(outcomes.estimated_metrics(scores, 0.187)["roc_auc"] - roc_auc_score(labels, scores)))
    assert history.auc_estimation_days == len(MATURED) and history.auc_estimation_mae == pytest.approx(np.mean(errors), rel=1e-9)
    assert history.threshold == queries.ThresholdInForce(CHAMPION, 0.187, outcomes.POLICIES[CHAMPION], ALERT_RATE_LINE)

    recent = queries.performance(world["engine"], "fraud", days=5)
    assert recent.days == DAYS[-5:] and recent.since == DAYS[-5] and recent.auc_estimation_days == 1


def test_a_champion_stored_before_thresholds_and_a_model_with_nothing_yet(world):
    churn = queries.performance(world["engine"], "churn")
    assert (churn.series, churn.since, churn.latest_realized_auc, churn.latest_estimated_auc) == ([], None, None, None)
    assert (churn.auc_estimation_mae, churn.auc_estimation_days) == (None, 0)
    assert churn.threshold == queries.ThresholdInForce(1, None, None, "the spec's fixed threshold (v1 was stored before thresholds were)")
    assert queries.performance(world["engine"], "nobody").threshold is None
    assert queries.volume_checks(world["engine"], "churn") == []
    # Where the daily figures record the threshold the old version scores at, the sentence names it.
    assert queries.describe_threshold(1, None, None, 0.5) == "threshold 0.5, the spec's fixed threshold (v1 was stored before thresholds were)"
    assert queries.describe_threshold(SHADOW, 0.21, outcomes.POLICIES[SHADOW], 0.21) == (
        "min_precision 0.5 → threshold 0.21, validation precision 0.50, recall 0.22"
    )
    assert queries.describe_threshold(4, 0.5, {"policy": "fixed", "threshold": 0.5}, 0.5) == "fixed threshold 0.5"


def test_volume_checks_carry_the_verdicts_and_the_rows_the_check_tolerates(world):
    days = queries.volume_checks(world["engine"], "fraud")
    assert [day.ds for day in days] == VOLUME_DAYS
    assert {day.ds: day.verdict for day in days if day.finding} == {LOW_DAY: "low", MISSING_DAY: "missing", LATE_DAY: "late"}
    stored = {row["ds"]: row for row in outcomes.volume_rows()}
    for day in days:
        history = [entry["rows"] for entry in stored[day.ds]["history"]]
        if day.expected_rows is None:
            assert day.tolerated(4.0, 0.2) is None and day.verdict == "insufficient_history"
            continue
        median = float(np.median(history))
        spread = max(4.0 * median_abs_deviation(history, scale="normal"), 0.2 * median)
        low, high = day.tolerated(4.0, 0.2)
        assert (low, high) == pytest.approx((max(median - spread, 0), median + spread), rel=1e-9)
        # A day is low or high exactly when its rows fall outside what the check tolerates.
        assert (day.verdict in ("low", "high")) == (day.rows > 0 and not low <= day.rows <= high), day
    late = next(day for day in days if day.ds == LATE_DAY)
    assert late.late_share == pytest.approx(0.03, abs=1e-3) and late.late_rows == late.rows - late.rows_at_scoring
    assert [day.ds for day in queries.volume_checks(world["engine"], "fraud", days=7)] == VOLUME_DAYS[-7:]


def test_the_api_serves_performance_and_volume_checks(client, world):
    engine = world["engine"]
    performance = test_api._get(client, "/models/fraud/performance", "admin")
    assert performance.status_code == 200
    assert performance.json() == TypeAdapter(queries.PerformanceHistory).dump_python(queries.performance(engine, "fraud"), mode="json")
    body = performance.json()
    assert body["threshold"]["description"] == ALERT_RATE_LINE and body["latest_realized_auc"]["ds"] == str(MATURED[-1])
    assert body["series"][0]["days"][-1]["realized"] == {} and body["series"][0]["days"][-1]["label_coverage"] == pytest.approx(0.12)
    assert [day["ds"] for day in test_api._get(client, "/models/fraud/performance", "admin", days=3).json()["series"][0]["days"]] == [
        str(ds) for ds in DAYS[-3:]
    ]
    checks = test_api._get(client, "/models/fraud/volume/checks", "admin")
    assert checks.status_code == 200
    assert checks.json() == TypeAdapter(list[queries.VolumeDay]).dump_python(queries.volume_checks(engine, "fraud"), mode="json")
    assert [day["verdict"] for day in checks.json() if day["ds"] == str(MISSING_DAY)] == ["missing"]
    assert test_api._get(client, "/models/fraud/volume", "admin").json() == []  # the nightly job's counts: none in this world
    assert test_api._get(client, "/models/fraud/performance", "admin", days=91).status_code == 422
    for route in ("performance", "volume/checks"):
        assert test_api._get(client, f"/models/fraud/{route}").status_code == 401
        assert test_api._get(client, f"/models/fraud/{route}", "outsider").status_code == 403


def test_the_performance_panel_shows_the_threshold_the_figures_and_which_days_are_maturing(client, world):
    page = test_api._page(client, "/models/fraud", "admin")
    assert page.status_code == 200
    section = _section(page.text, "performance")
    history = queries.performance(world["engine"], "fraud")
    assert f"Threshold in force (champion v{CHAMPION}): <strong>{ALERT_RATE_LINE}</strong>" in section
    assert f"{MATURED[-1]}</div>" in section and _fig(history.latest_realized_auc.figure) in section
    assert _fig(history.latest_estimated_auc.figure) in section
    assert f"{history.auc_estimation_mae:.3f}</div>" in section and f"mean absolute error over {len(MATURED)} matured days" in section

    [chart] = re.findall(r'<svg class="chart interval".*?</svg>', section, re.S)
    legend = re.findall(r'<text class="legend"[^>]*>([^<]+)</text>', chart)
    assert legend == [f"{role} v{version} {source}" for role, version in (("champion", CHAMPION), ("shadow", SHADOW))
                      for source in ("realized", "estimated")]
    assert chart.count('class="line s0 estimated"') == 2  # the estimate's dashed line and its legend sample
    assert chart.count('<polygon class="band s0 realized"') == 1 and chart.count('<polygon class="band s0 estimated"') == 1
    assert chart.count('class="bar matured"') == len(MATURED) and chart.count('class="bar maturing"') == 4
    assert f"<title>{DAYS[-1]}: 12.0% champion label coverage (labelled / scored)</title>" in chart

    maturing = re.search(rf'<tr class="perf-day maturing" data-day="{DAYS[-1]}" data-source="realized">(.*?)</tr>', section, re.S).group(1)
    assert "labels still maturing: 12% labelled" in maturing and "360 (12%)" in maturing
    day = history.series[0].days[len(MATURED) - 1]
    realized = re.search(rf'<tr class="perf-day matured" data-day="{day.ds}" data-source="realized">(.*?)</tr>', section, re.S).group(1)
    for metric in ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece"):
        assert _fig(day.realized[metric]) in realized, metric
    [estimated] = re.findall(rf'<tr class="perf-day estimated" data-day="{day.ds}" data-source="estimated">(.*?)</tr>', section, re.S)[:1]
    assert _fig(day.estimated["roc_auc"]) in estimated and f"error {day.estimation_error['roc_auc']:+.3f}" in estimated
    assert section.count('data-source="realized"') == 7 + len(SHADOW_DAYS)  # the latest seven days of the champion and of the shadow
    assert re.findall(r'<details class="perf-series" data-series="([\w-]+)"( open)?>', section) == [(f"champion-v{CHAMPION}", " open"),
                                                                                                 (f"shadow-v{SHADOW}", "")]


def test_the_volume_panel_marks_the_flagged_days_and_says_the_latest_verdict(client, world):
    section = _section(test_api._page(client, "/models/fraud", "admin").text, "volume_checks")
    latest = outcomes.volume_rows()[-1]
    assert f'{latest["ds"]}: <strong class="volume-ok">ok</strong> — {latest["reason"]}</p>' in section
    assert "35 days checked, <strong" in section and "3 flagged</strong>\n  (1 late, 1 low, 1 missing)" in section
    [chart] = re.findall(r'<svg class="chart interval".*?</svg>', section, re.S)
    marks = re.findall(r'<rect class="mark mark-(\w+)"[^>]*><title>([^<]+)</title>', chart)
    assert marks == [("low", f"{LOW_DAY}: low"), ("missing", f"{MISSING_DAY}: missing"), ("late", f"{LATE_DAY}: late")]
    assert '<polygon class="band expected"' in chart and chart.count('class="bar late"') == 1
    low = next(day for day in queries.volume_checks(world["engine"], "fraud") if day.ds == LOW_DAY)
    band = low.tolerated(4.0, 0.2)
    row = re.search(rf'<tr class="volume-day finding" data-day="{LOW_DAY}" data-verdict="low">(.*?)</tr>', section, re.S).group(1)
    assert f"{band[0]:,.0f} – {band[1]:,.0f}" in row and f"{low.robust_z:+.2f}" in row and low.reason in row
    assert section.count('class="volume-day finding"') == 3


def test_each_incident_shows_its_kind_and_only_drift_links_a_drift_report(client, world):
    assert [incident.kind for incident in queries.incidents(world["engine"], "fraud")] == ["performance", "volume", "drift"]
    section = _section(test_api._page(client, "/models/fraud", "admin").text, "incidents")
    rows = dict(re.findall(r'<tr class="incident [^"]*" data-kind="(\w+)">(.*?)</tr>', section, re.S))
    assert set(rows) == {"drift", "performance", "volume"}
    assert '<span class="badge kind-performance">performance</span>' in rows["performance"]
    assert "<li>roc_auc realized 0.70 [0.66, 0.74] on 2026-10-17: more than 0.05 below validation 0.86</li>" in rows["performance"]
    assert "drift report" not in rows["performance"] + rows["volume"] and "/reports/drift/20261009T0000Z" in rows["drift"]
    assert "/dags/fraud_daily_performance/runs/scheduled__2026-10-18" in rows["performance"]
    assert "/dags/fraud_hourly_drift/runs/scheduled__2026-10-09T00" in rows["drift"] and "1 drifted check<" in rows["drift"]


def test_a_model_with_no_outcomes_says_what_will_fill_its_panels(client, world):
    page = test_api._page(client, "/models/churn", "admin")
    assert page.status_code == 200
    performance = _section(page.text, "performance")
    line = escape("the spec's fixed threshold (v1 was stored before thresholds were)")
    assert f"Threshold in force (champion v1): <strong>{line}</strong>" in performance
    assert ("No performance yet: the daily performance check writes estimates for each scored day and realized figures once labels\n"
            "  mature (label.delay_days: 1).") in performance and "<svg" not in performance
    assert "No volume check yet" in _section(page.text, "volume_checks")
