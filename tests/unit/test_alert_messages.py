"""The incident message every notifier sends: rendered once by the core, from the alert announce hands over."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from batchwatch.monitoring.messages import check_line, page_link, render_alert
from batchwatch.spec.model import Drift

NULL_RATE = {
    "column_name": "country", "test": "null_rate", "statistic": 41.23, "p_value": 1e-30, "p_adjusted": 3.1e-29,
    "effect_size": 0.5234, "threshold": 0.1, "n_current": 4000, "verdict": "drifted",
}
JS = {
    "column_name": "merchant_category", "test": "jensen_shannon", "statistic": 0.3243, "p_value": None, "p_adjusted": None,
    "effect_size": 0.3243, "threshold": 0.1, "n_current": 4000, "verdict": "drifted",
}
OPEN = {
    "alert_id": 7, "status": "open", "model_name": "fraud", "model_version": 3, "window_start": "2026-10-13T00:00:00+00:00",
    "window_end": "2026-10-14T00:00:00+00:00", "summary": "null_rate:country: null_rate 0.523", "checks": [NULL_RATE, JS],
}


def test_the_open_message_names_the_model_window_checks_numbers_and_page() -> None:
    message = render_alert(OPEN, base_url="https://airflow.example.test/")
    assert message["link"] == "https://airflow.example.test/batchwatch/models/fraud"
    assert message["subject"] == "[Batchwatch] fraud: drift incident #7 opened, drifted: country, merchant_category"
    assert message["text"].splitlines() == [
        "Drift incident #7 opened for model fraud (champion v3).",
        "Window: 2026-10-13T00:00:00+00:00 to 2026-10-14T00:00:00+00:00 (UTC)",
        "Drifted checks (statistic, BH-adjusted p, effect size vs threshold):",
        "- country null_rate: statistic 41.2, p_adj 3.1e-29, effect 0.523 >= threshold 0.1",
        "- merchant_category jensen_shannon: statistic 0.324, p_adj n/a, effect 0.324 >= threshold 0.1",
        "Batchwatch page: https://airflow.example.test/batchwatch/models/fraud",
    ]
    assert "<td>3.1e-29</td>" in message["html"] and 'href="https://airflow.example.test/batchwatch/models/fraud"' in message["html"]
    document = json.loads(message["json"])
    assert document["event"] == "batchwatch.drift_incident.open" and document["checks"] == [NULL_RATE, JS]
    assert document["text"] == message["text"]


def test_the_recovery_message_quotes_the_checks_within_their_thresholds() -> None:
    recovered = {**NULL_RATE, "statistic": -0.05, "p_adjusted": 1.0, "effect_size": 0.001, "verdict": "ok"}
    message = render_alert({**OPEN, "status": "resolved", "checks": [recovered]}, base_url="http://localhost:8080")
    assert message["subject"] == "[Batchwatch] fraud: drift incident #7 resolved"
    assert "- country null_rate: statistic -0.05, p_adj 1, effect 0.001 < threshold 0.1" in message["text"]
    assert json.loads(message["json"])["event"] == "batchwatch.drift_incident.resolved"


def test_the_escalation_message_names_what_grew_with_the_numbers_of_its_tests() -> None:
    grew = {
        **OPEN, "status": "escalated", "escalation_id": 4, "window_start": "2026-10-14T00:00:00+00:00", "window_end": "2026-10-15T00:00:00+00:00",
        "new_checks": [{"check": "null_rate:country", "band": 2, "ratio": 5.234}],
        "raised": [{"check": "distribution:merchant_category", "previous_band": 0, "band": 1, "ratio": 3.243}],
        "drifted": [
            "null_rate:country: null_rate 0.523 (p_adj 3.1e-29)", "distribution:merchant_category: chi2 41 (p_adj 1e-8), jensen_shannon 0.324",
            "unseen:merchant_category: unseen_share 0.2",
        ],
    }
    message = render_alert(grew, base_url="https://airflow.example.test")
    assert message["subject"] == "[Batchwatch] fraud: drift incident #7 grew: null_rate:country, distribution:merchant_category"
    assert message["text"].splitlines() == [
        "Drift incident #7 of model fraud (champion v3) is still open and grew in this window:",
        "- new: null_rate:country (band 2, effect 5.23x its threshold)",
        "- more severe: distribution:merchant_category (band 0 -> 1, effect 3.24x its threshold)",
        "(Severity band 0: over the threshold; band i: at or over the i-th multiple of it in drift.severity_bands.)",
        "Window: 2026-10-14T00:00:00+00:00 to 2026-10-15T00:00:00+00:00 (UTC)",
        "Their tests in this window (statistic, BH-adjusted p, effect size vs threshold, rows):",
        "- country null_rate: statistic 41.2, p_adj 3.1e-29, effect 0.523 >= threshold 0.1, n 4000",
        "- merchant_category jensen_shannon: statistic 0.324, p_adj n/a, effect 0.324 >= threshold 0.1, n 4000",
        "Every drifted check of this window:",
        "- null_rate:country: null_rate 0.523 (p_adj 3.1e-29)",
        "- distribution:merchant_category: chi2 41 (p_adj 1e-8), jensen_shannon 0.324",
        "- unseen:merchant_category: unseen_share 0.2",
        "Batchwatch page: https://airflow.example.test/batchwatch/models/fraud",
    ]
    assert "<li>more severe: distribution:merchant_category (band 0 -&gt; 1, effect 3.24x its threshold)</li>" in message["html"]
    assert "<th>rows</th>" in message["html"] and "<td>3.1e-29</td><td>0.523</td><td>0.1</td><td>4000</td>" in message["html"]
    document = json.loads(message["json"])
    assert document["event"] == "batchwatch.drift_incident.escalated" and document["escalation_id"] == 4
    assert document["new_checks"] == grew["new_checks"] and document["raised"] == grew["raised"] and document["drifted"] == grew["drifted"]
    assert document["checks"] == [NULL_RATE, JS] and document["text"] == message["text"]
    assert "new_checks" not in json.loads(render_alert(OPEN, base_url="http://x")["json"]), "open and recovery documents are as before"


def test_text_from_the_warehouse_is_escaped_in_html_and_the_link_keeps_a_path() -> None:
    odd = {**OPEN, "model_name": "a<b>", "checks": [{**NULL_RATE, "column_name": "<script>"}]}
    message = render_alert(odd, base_url="https://host.example/airflow")
    assert "<script>" not in message["html"] and "&lt;script&gt;" in message["html"]
    assert page_link("https://host.example/airflow/", "a<b>") == "https://host.example/airflow/batchwatch/models/a%3Cb%3E"
    assert message["link"] == "https://host.example/airflow/batchwatch/models/a%3Cb%3E"


def test_an_infinite_effect_size_renders_and_stays_valid_json() -> None:
    line = check_line({**NULL_RATE, "effect_size": float("inf")})
    assert line.endswith("effect inf >= threshold 0.1")
    message = render_alert({**OPEN, "checks": [{**NULL_RATE, "effect_size": float("inf")}]}, base_url="http://x")
    assert json.loads(message["json"])["checks"][0]["effect_size"] == "Infinity"


@pytest.mark.parametrize("url", ["airflow.example.test", "ftp://airflow.example.test", "https://"])
def test_the_spec_refuses_an_alert_base_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ValidationError, match="alert_base_url"):
        Drift(alert_base_url=url)


def test_a_performance_incident_reads_as_one_with_its_findings_and_day():
    line = "realized roc_auc 0.612 [0.580, 0.650] on 2026-10-14 (champion v3, 3,000 rows): upper bound 0.650 < 0.830 (v3's validation 0.880 - 0.05)"
    alert = {"alert_id": 7, "kind": "performance", "status": "open", "model_name": "fraud", "model_version": 3,
             "window_end": "2026-10-19T00:00:00+00:00", "summary": line, "drifted": [line], "checks": []}
    message = render_alert(alert, base_url="http://airflow.example")
    assert message["subject"] == f"[Batchwatch] fraud: performance incident #7 opened: {line}"
    assert message["text"].splitlines() == [
        "Performance incident #7 opened for model fraud (champion v3), day 2026-10-18.",
        "Degraded figures (value [confidence interval] against its limit):",
        f"- {line}",
        "Batchwatch page: http://airflow.example/batchwatch/models/fraud",
    ]
    document = json.loads(message["json"])
    assert (document["event"], document["day"], document["findings"]) == ("batchwatch.performance_incident.open", "2026-10-18", [line])
    resolved = render_alert({**alert, "status": "resolved"}, base_url="http://airflow.example")
    assert resolved["subject"] == "[Batchwatch] fraud: performance incident #7 resolved"
    assert "What it had found:" in resolved["text"]
