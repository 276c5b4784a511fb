"""What an incident announcement says: one rendering of an incident change for every notifier.

Email, Slack, a webhook and the task log all say the same thing because they all render it here,
from the alert `incidents.announce` hands over. Pure: no I/O, no Airflow.
"""

from __future__ import annotations

import html
import math
from typing import Any
from urllib.parse import quote

from batchwatch.serialization import to_json

# Where the Batchwatch page of a model lives under the Airflow UI's address (the plugin's url_prefix).
PAGE_PATH = "/batchwatch/models/{model}"


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


def check_line(check: dict[str, Any]) -> str:
    """One check with its numbers: `country null_rate: statistic 41.2, p_adj 3e-30, effect 0.52 >= threshold 0.1`."""
    return (
        f"{check['column_name']} {check['test']}: statistic {_number(check.get('statistic'))}, "
        f"p_adj {_number(check.get('p_adjusted'))}, {_effect(check)}"
    )


def _window(alert: dict[str, Any]) -> str:
    start = alert.get("window_start")
    return f"{start} to {alert['window_end']}" if start else f"ending {alert['window_end']}"


def render_alert(alert: dict[str, Any], *, base_url: str) -> dict[str, str]:
    """Subject, plain text, HTML and a JSON document for one incident change, and the page link.

    `alert` is what `incidents.pending_notifications` returns: status ('open' or 'resolved'),
    alert_id, model_name, model_version, window_start/window_end and the checks with their numbers
    (the drifted ones on open; on recovery the same checks as the clean window measured them).
    """
    model, status, checks = alert["model_name"], alert["status"], alert.get("checks") or []
    link = page_link(base_url, model)
    version = f" v{alert['model_version']}" if alert.get("model_version") is not None else ""
    if status == "open":
        columns = ", ".join(dict.fromkeys(check["column_name"] for check in checks)) or "see the page"
        subject = f"[Batchwatch] {model}: drift incident #{alert['alert_id']} opened, drifted: {columns}"
        headline = f"Drift incident #{alert['alert_id']} opened for model {model} (champion{version})."
        heading = "Drifted checks (statistic, BH-adjusted p, effect size vs threshold):"
    else:
        subject = f"[Batchwatch] {model}: drift incident #{alert['alert_id']} resolved"
        headline = f"Drift incident #{alert['alert_id']} of model {model} (champion{version}) resolved: this window is clean."
        heading = "The checks that had drifted, as this window measured them:"
    lines = [check_line(check) for check in checks]
    window = f"Window: {_window(alert)} (UTC)"
    text = "\n".join(
        [headline, window, heading, *(f"- {line}" for line in lines or ["(no per-check results stored for this window)"]),
         f"Batchwatch page: {link}"]
    )
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            check["column_name"], check["test"], _number(check.get("statistic")), _number(check.get("p_adjusted")),
            _number(check.get("effect_size")), _number(check.get("threshold")),
        )) + "</tr>"
        for check in checks
    )
    html_body = (
        f"<p>{html.escape(headline)}</p><p>{html.escape(window)}</p><p>{html.escape(heading)}</p>"
        "<table><tr><th>column</th><th>test</th><th>statistic</th><th>p adjusted</th><th>effect size</th><th>threshold</th></tr>"
        f"{rows}</table>"
        f'<p><a href="{html.escape(link, quote=True)}">Open the Batchwatch page of {html.escape(model)}</a></p>'
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
        "link": link,
        "text": text,
    }
    return {"subject": subject, "text": text, "html": html_body, "json": to_json(document), "link": link}
