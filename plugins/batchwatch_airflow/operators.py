"""Operators: read templated arguments, resolve the warehouse, call one core function, return its summary."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from batchwatch_airflow.connections import warehouse_engine

if TYPE_CHECKING:
    from airflow.sdk import Context


def _permanent_errors() -> tuple[type[Exception], ...]:
    """Errors a retry cannot fix; they fail the task at once with their message."""
    from batchwatch.registry import RegistryError  # includes drift.NoReference
    from batchwatch.scoring import DuplicateEntity, NoChampion, RejectRateExceeded
    from batchwatch.spec import SpecError

    return (DuplicateEntity, RegistryError, NoChampion, RejectRateExceeded, SpecError)


class BatchPredictOperator(BaseOperator):
    """Score one data interval of a model's source rows into `predictions` (champion and shadow).

    Re-running replaces the interval's rows exactly; a failure leaves them as they were.
    """

    template_fields: Sequence[str] = ("model_name", "data_interval_start", "data_interval_end", "chunk_size", "warehouse_conn_id")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        model_name: str,
        warehouse_conn_id: str = "warehouse",
        data_interval_start: str = "{{ data_interval_start }}",
        data_interval_end: str = "{{ data_interval_end }}",
        chunk_size: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.warehouse_conn_id = warehouse_conn_id
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.chunk_size = chunk_size

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.scoring import predict_interval
        from batchwatch.spec import get_spec

        start = datetime.fromisoformat(str(self.data_interval_start))
        end = datetime.fromisoformat(str(self.data_interval_end))
        chunk_size = int(self.chunk_size) if self.chunk_size not in (None, "", "None") else None
        self.log.info("Scoring %s rows with event time in [%s, %s)", self.model_name, start, end)
        engine = warehouse_engine(self.warehouse_conn_id)
        try:
            summary = predict_interval(
                engine, get_spec(self.model_name), start=start, end=end, run_id=context["run_id"], chunk_size=chunk_size
            )
        except _permanent_errors() as error:
            raise AirflowFailException(str(error)) from error
        finally:
            engine.dispose()
        self.log.info(
            "Scored %d of %d rows (%d rejected) with %s v%s at %s rows/s; positive rate %s; summary: %s",
            summary["rows_scored"],
            summary["rows_read"],
            summary["rows_rejected"],
            summary["model_name"],
            summary["model_version"],
            summary["rows_per_second"],
            summary["positive_rate"],
            summary,
        )
        return summary


class DriftCheckOperator(BaseOperator):
    """Compare the trailing window ending at `window_end` with the champion's reference profile.

    Drift is a finding, not a failure: the task succeeds, returns the summary (XCom, shown in the UI),
    logs every drifted check, and calls the spec's notifiers once per incident change.
    """

    template_fields: Sequence[str] = ("model_name", "window_end", "warehouse_conn_id")
    ui_color = "#fdebd0"

    def __init__(self, *, model_name: str, warehouse_conn_id: str = "warehouse", window_end: str = "{{ data_interval_end }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.warehouse_conn_id = warehouse_conn_id
        self.window_end = window_end

    def execute(self, context: Context) -> dict[str, Any]:
        from batchwatch.drift import check_window
        from batchwatch.spec import get_spec

        spec = get_spec(self.model_name)
        engine = warehouse_engine(self.warehouse_conn_id)
        try:
            summary = check_window(engine, spec, window_end=datetime.fromisoformat(str(self.window_end)), run_id=context["run_id"])
            self.log.info(
                "%s v%s, window [%s, %s): %d rows, %d scored; %s (%s)",
                self.model_name, summary["model_version"], summary["window_start"], summary["window_end"],
                summary["rows"], summary["rows_scored"], summary["status"], summary["checks"],
            )
            for line in summary["drifted"]:
                self.log.warning("Drifted: %s", line)
            self._notify(engine, spec, context)
        except _permanent_errors() as error:
            raise AirflowFailException(str(error)) from error
        finally:
            engine.dispose()
        return summary

    def _notify(self, engine: Any, spec: Any, context: Context) -> None:
        """Call every notifier for each incident change not yet announced, then mark it announced."""
        from batchwatch.drift import mark_notified, pending_notifications
        from batchwatch.spec import resolve

        for alert in pending_notifications(engine, spec.name):
            self.log.warning("Drift incident %s %s: %s", alert["alert_id"], alert["status"], alert["summary"])
            for notifier in spec.drift.notifiers:
                resolve(notifier.class_, "drift.notifiers.class")(**notifier.params)({**context, "batchwatch_alert": alert})
            mark_notified(engine, alert["alert_id"], alert["status"])
