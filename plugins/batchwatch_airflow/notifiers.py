"""The default drift notifier: a log line per incident change, in the task log the UI shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context


class LogNotifier(BaseNotifier):
    """Log the incident. Swap it for any Airflow notifier (Slack, SMTP, ...) in the spec's drift.notifiers.

    The context passed to notifiers carries `batchwatch_alert`: status ('open' or 'resolved'),
    model_name, alert_id, window_end, summary and the drifted checks.
    """

    template_fields: Sequence[str] = ("message",)

    def __init__(
        self, message: str = "Drift incident {{ batchwatch_alert.status }} for {{ batchwatch_alert.model_name }}: {{ batchwatch_alert.summary }}"
    ) -> None:
        super().__init__()
        self.message = message

    def notify(self, context: Context) -> None:
        self.log.warning("%s", self.message)
