"""What an incident announcement says: one rendering of an incident change for every notifier.

Email, Slack, a webhook and the task log all say the same thing because they all render it here,
from the alert `incidents.announce` hands over. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from batchwatch.serialization import to_json

# Where the Batchwatch page of a model lives under the Airflow UI's address (the plugin's url_prefix).
PAGE_PATH = "/batchwatch/models/{model}"
# How an escalation's severity bands read (the multiples are the spec's drift.severity_bands).
BANDS = "(Severity band 0: over the threshold; band i: at or over the i-th multiple of it in drift.severity_bands.)"


def page_link(base_url: str, model_name: str) -> str:
    """The model's Batchwatch page under the Airflow UI at `base_url` (which may carry a path)."""
    return base_url.rstrip("/") + PAGE_PATH.format(model=quote(model_name, safe=""))


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3g}"


def _effect(check: dict[str, Any]) -> str:
    """The effect size against its threshold, with the side it falls on."""
    effect, threshold = check.get("effect_size"), check.get("threshold")
    if effect is None:
        return "effect n/a"
    if threshold is None:
        return f"effect {_number(effect)}"
    side = ">=" if effect >= threshold else "<"
    return f"effect {_number(effect)} {side} threshold {_number(threshold)}"


def check_line(check: dict[str, Any], *, with_rows: bool = False) -> str:
    """One check with its numbers: `country null_rate: statistic 41.2, p_adj 3e-30, effect 0.52 >= threshold 0.1` (`, n 4000` with rows)."""
    line = (
        f"{check['column_name']} {check['test']}: statistic {_number(check.get('statistic'))}, "
        f"p_adj {_number(check.get('p_adjusted'))}, {_effect(check)}"
    )
    return f"{line}, n {check.get('n_current')}" if with_rows else line


def _window(alert: dict[str, Any]) -> str:
    start = alert.get("window_start")
    return f"{start} to {alert['window_end']}" if start else f"ending {alert['window_end']}"


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f", effect {_number(ratio)}x its threshold"


def growth_lines(alert: dict[str, Any]) -> list[str]:
    """What grew an incident, check by check: `new: null_rate:country (band 2, effect 13.8x its threshold)`."""
    new = [f"new: {c['check']} (band {c['band']}{_times(c.get('ratio'))})" for c in alert.get("new_checks") or []]
    raised = [
        f"more severe: {c['check']} (band {c['previous_band']} -> {c['band']}{_times(c.get('ratio'))})" for c in alert.get("raised") or []
    ]
    return new + raised


def _wording(alert: dict[str, Any]) -> tuple[str, str, str]:
    """Subject, headline, and the heading over the checks' numbers, for the kind of change."""
    model, number, checks = alert["model_name"], alert["alert_id"], alert.get("checks") or []
    version = f" v{alert['model_version']}" if alert.get("model_version") is not None else ""
    if alert["status"] == "open":
        columns = ", ".join(dict.fromkeys(check["column_name"] for check in checks)) or "see the page"
        return (
            f"[Batchwatch] {model}: drift incident #{number} opened, drifted: {columns}",
            f"Drift incident #{number} opened for model {model} (champion{version}).",
            "Drifted checks (statistic, BH-adjusted p, effect size vs threshold):",
        )
    if alert["status"] == "escalated":
        grown = [c["check"] for c in [*(alert.get("new_checks") or []), *(alert.get("raised") or [])]]
        return (
            f"[Batchwatch] {model}: drift incident #{number} grew: {', '.join(grown)}",
            f"Drift incident #{number} of model {model} (champion{version}) is still open and grew in this window:",
            "Their tests in this window (statistic, BH-adjusted p, effect size vs threshold, rows):",
        )
    return (
        f"[Batchwatch] {model}: drift incident #{number} resolved",
        f"Drift incident #{number} of model {model} (champion{version}) resolved: this window is clean.",
        "The checks that had drifted, as this window measured them:",
    )


def _html_list(lines: list[str]) -> str:
    return f"<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in lines)}</ul>" if lines else ""


def render_alert(alert: dict[str, Any], *, base_url: str) -> dict[str, str]:
    """Subject, plain text, HTML and a JSON document for one incident change, and the page link.

    `alert` is what `incidents.pending_notifications` returns: status ('open', 'escalated' or
    'resolved'), alert_id, model_name, model_version, window_start/window_end and the checks with
    their numbers: on open the drifted ones; on escalation the tests of the checks that grew the
    incident (its new_checks and raised), with every drifted line of the window; on recovery the
    checks that had drifted, as the clean window measured them.
    """
    if alert.get("kind", "drift") != "drift":
        return _render_daily_alert(alert, base_url=base_url)
    model, status, checks = alert["model_name"], alert["status"], alert.get("checks") or []
    escalated = status == "escalated"
    link = page_link(base_url, model)
    subject, headline, heading = _wording(alert)
    growth = growth_lines(alert) if escalated else []
    also = (alert.get("drifted") or []) if escalated else []
    window = f"Window: {_window(alert)} (UTC)"
    lines = [check_line(check, with_rows=escalated) for check in checks] or ["(no per-check results stored for this window)"]
    text = "\n".join(
        [headline, *(f"- {line}" for line in growth), *([BANDS] if growth else []), window, heading, *(f"- {line}" for line in lines),
         *(["Every drifted check of this window:", *(f"- {line}" for line in also)] if also else []), f"Batchwatch page: {link}"]
    )
    numbers = ("statistic", "p_adjusted", "effect_size", "threshold")
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            check["column_name"], check["test"], *(_number(check.get(name)) for name in numbers),
            *((check.get("n_current"),) if escalated else ()),
        )) + "</tr>"
        for check in checks
    )
    html_body = (
        f"<p>{html.escape(headline)}</p>{_html_list(growth)}" + (f"<p>{html.escape(BANDS)}</p>" if growth else "")
        + f"<p>{html.escape(window)}</p><p>{html.escape(heading)}</p>"
        "<table><tr><th>column</th><th>test</th><th>statistic</th><th>p adjusted</th><th>effect size</th><th>threshold</th>"
        f"{'<th>rows</th>' if escalated else ''}</tr>{rows}</table>"
        + (f"<p>Every drifted check of this window:</p>{_html_list(also)}" if also else "")
        + f'<p><a href="{html.escape(link, quote=True)}">Open the Batchwatch page of {html.escape(model)}</a></p>'
    )
    document = {
        "event": f"batchwatch.drift_incident.{status}",
        "alert_id": alert["alert_id"],
        "status": status,
        "model_name": model,
        "model_version": alert.get("model_version"),
        "window_start": alert.get("window_start"),
        "window_end": alert["window_end"],
        "summary": alert.get("summary"),
        "checks": checks,
        **({key: alert.get(key) for key in ("escalation_id", "new_checks", "raised", "drifted")} if escalated else {}),
        "link": link,
        "text": text,
    }
    return {"subject": subject, "text": text, "html": html_body, "json": to_json(document), "link": link}


# How each daily kind's incident is named, and what its findings are.
DAILY_KINDS = {
    "performance": ("performance incident", "Degraded figures (value [confidence interval] against its limit):"),
    "volume": ("volume incident", "Volume and freshness findings:"),
    "release": ("release incident", "Release decisions (test, difference [always-valid interval] against its margin):"),
}


def _render_daily_alert(alert: dict[str, Any], *, base_url: str) -> dict[str, str]:
    """A performance, volume or release incident change: its findings are lines that carry their own numbers, one per failing check."""
    model, status, number, kind = alert["model_name"], alert["status"], alert["alert_id"], alert["kind"]
    name, heading = DAILY_KINDS[kind]
    version = f" v{alert['model_version']}" if alert.get("model_version") is not None else ""
    day = utc_day(alert["window_end"])
    link = page_link(base_url, model)
    findings = alert.get("drifted") or []
    growth = growth_lines(alert) if status == "escalated" else []
    if status == "open":
        subject = f"[Batchwatch] {model}: {name} #{number} opened: {alert.get('summary')}"
        headline = f"{name.capitalize()} #{number} opened for model {model} (champion{version}), day {day}."
    elif status == "escalated":
        grown = [c["check"] for c in [*(alert.get("new_checks") or []), *(alert.get("raised") or [])]]
        subject = f"[Batchwatch] {model}: {name} #{number} grew: {', '.join(grown)}"
        headline = f"{name.capitalize()} #{number} of model {model} (champion{version}) is still open and grew on day {day}:"
    else:
        subject = f"[Batchwatch] {model}: {name} #{number} resolved"
        headline = f"{name.capitalize()} #{number} of model {model} (champion{version}) resolved: day {day} is clean."
        heading = "What it had found:"
    text = "\n".join([headline, *(f"- {line}" for line in growth), heading, *(f"- {line}" for line in findings), f"Batchwatch page: {link}"])
    html_body = (
        f"<p>{html.escape(headline)}</p>{_html_list(growth)}<p>{html.escape(heading)}</p>{_html_list(findings)}"
        f'<p><a href="{html.escape(link, quote=True)}">Open the Batchwatch page of {html.escape(model)}</a></p>'
    )
    document = {
        "event": f"batchwatch.{kind}_incident.{status}",
        "alert_id": number,
        "kind": kind,
        "status": status,
        "model_name": model,
        "model_version": alert.get("model_version"),
        "day": day,
        "window_end": alert["window_end"],
        "summary": alert.get("summary"),
        "findings": findings,
        **({key: alert.get(key) for key in ("escalation_id", "new_checks", "raised")} if status == "escalated" else {}),
        "link": link,
        "text": text,
    }
    return {"subject": subject, "text": text, "html": html_body, "json": to_json(document), "link": link}


def utc_day(window_end: str) -> str:
    """The day a daily check's window ends after: `2026-11-04T00:00:00+00:00` -> `2026-11-03`."""
    return (datetime.fromisoformat(window_end) - timedelta(days=1)).date().isoformat()


def render_approval_request(look: dict[str, Any], *, model_name: str, required_actions: str, base_url: str) -> dict[str, str]:
    """The message that asks for a person: a canary passed its last step and its promotion waits in Airflow's Required Actions.

    `look` is the release decision that earned it (promotion.canary.Look.to_dict()), with its tests and intervals.
    """
    release = look.get("release") or {}
    version, baseline = release.get("version"), release.get("baseline_version")
    link = page_link(base_url, model_name)
    subject = f"[Batchwatch] {model_name}: approve the promotion of v{version}? Its canary passed every step"
    headline = (f"The canary of {model_name} v{version} against the champion v{baseline} passed its last step on {look.get('decided_on')}; "
                "its promotion waits for a person to approve or reject it, with a reason.")
    lines = [
        f"{test['metric']} ({test['test']}, {test['role']}): {_signed(test.get('difference'))} "
        f"[{_signed(test.get('cs_lower'))}, {_signed(test.get('cs_upper'))}] against margin {test['margin']:g}: {test['outcome']}"
        for test in look.get("tests") or []
    ]
    text = "\n".join([headline, "Tests (difference challenger - champion [always-valid interval]):", *(f"- {line}" for line in lines),
                      f"Approve or reject: {required_actions}", f"Batchwatch page: {link}"])
    html_body = (
        f"<p>{html.escape(headline)}</p><p>Tests (difference challenger - champion [always-valid interval]):</p>{_html_list(lines)}"
        f'<p><a href="{html.escape(required_actions, quote=True)}">Approve or reject in Airflow</a> · '
        f'<a href="{html.escape(link, quote=True)}">Batchwatch page of {html.escape(model_name)}</a></p>'
    )
    document = {"event": "batchwatch.release.awaiting_approval", "model_name": model_name, "version": version, "baseline_version": baseline,
                "decided_on": look.get("decided_on"), "tests": look.get("tests") or [], "required_actions": required_actions, "link": link}
    return {"subject": subject, "text": text, "html": html_body, "json": to_json(document), "link": link}


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"
