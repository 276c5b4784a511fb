"""Drift notifiers: the log-only default, and the message fields of Airflow's own notifiers.

The spec's `drift.notifiers` name any Airflow `BaseNotifier`. Each is called with `batchwatch_alert`
in its context: the incident change (status 'open', 'escalated' or 'resolved', alert_id, model_name,
model_version, window_start, window_end, summary, checks with their numbers; an escalation also
its escalation_id, new_checks, raised and the window's drifted lines) and its rendering by
the core (`subject`, `text`, `html`, `json`, `link`), so every channel says the same thing.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

# What Airflow's own notifiers send, when the spec leaves it unset: the rendered incident message.
# Keyed by class so that subclasses and the providers' aliases (send_smtp_notification, ...) match.
MESSAGE_PARAMS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
        {"subject": "{{ batchwatch_alert.subject }}", "html_content": "{{ batchwatch_alert.html }}"},
    ),
    ("airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier", {"text": "{{ batchwatch_alert.text }}"}),
    (
        "airflow.providers.http.notifications.http.HttpNotifier",
        {"data": "{{ batchwatch_alert.json }}", "headers": {"Content-Type": "application/json"}},
    ),
)


def _provider_class(dotted: str) -> type | None:
    """A provider's notifier class, or None when that provider is not installed."""
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def message_params(notifier_class: type) -> dict[str, Any]:
    """The params that make one of Airflow's notifiers send the incident message; {} for any other class."""
    for dotted, params in MESSAGE_PARAMS:
        provider_class = _provider_class(dotted)
        if provider_class is not None and issubclass(notifier_class, provider_class):
            return dict(params)
    return {}


class LogNotifier(BaseNotifier):
    """Log the incident message. Swap it for Airflow's SMTP, Slack-webhook or HTTP notifier in the spec's drift.notifiers."""

    template_fields: Sequence[str] = ("message",)

    def __init__(self, message: str = "{{ batchwatch_alert.text }}") -> None:
        super().__init__()
        self.message = message

    def notify(self, context: Context) -> None:
        self.log.warning("%s", self.message)
