"""Links between Airflow and the Batchwatch page: an operator extra link to the page, and the page's paths.

The page is the plugin's FastAPI app, mounted by the plugin at `URL_PREFIX`. A task's link goes to the
page of its model with the run named, so the page can say what that run produced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

URL_PREFIX = "/batchwatch"


def drift_report_path(model_name: str, window: str) -> str:
    """The path of a model's drift report for one window (`YYYYMMDDTHHMMZ`, see batchwatch.monitoring.report)."""
    return f"{URL_PREFIX}/models/{quote(model_name, safe='')}/reports/drift/{quote(window, safe='')}"


def model_page_path(model_name: str, *, dag_id: str | None = None, run_id: str | None = None) -> str:
    """The path (under Airflow's base URL) of a model's page, optionally naming the run someone came from."""
    path = f"{URL_PREFIX}/models/{quote(model_name, safe='')}"
    query = {key: value for key, value in (("dag_id", dag_id), ("run_id", run_id)) if value}
    return f"{path}?{urlencode(query)}" if query else path


def airflow_base_url() -> str:
    """Airflow's `[api] base_url` without its trailing slash; empty when unset, so links stay relative to the UI."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


class BatchwatchPageLink(BaseOperatorLink):
    """"Batchwatch" on a task instance: the page of the task's model, for the run the task belongs to.

    Airflow 3 computes the link in the worker when the task finishes and stores it as an XCom, which
    the UI reads; so a link appears on tasks that ran with this operator class.
    """

    name = "Batchwatch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        model_name = getattr(operator, "model_name", None)
        if not model_name:
            return ""
        return airflow_base_url() + model_page_path(str(model_name), dag_id=ti_key.dag_id, run_id=ti_key.run_id)


class DriftReportLink(BaseOperatorLink):
    """"Drift report" on a drift task: the report of the window it checked, which the operator records
    as `checked_window` once the check has run (empty before, and on a failed check)."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        model_name, window = getattr(operator, "model_name", None), getattr(operator, "checked_window", None)
        if not model_name or not window:
            return ""
        return airflow_base_url() + drift_report_path(str(model_name), str(window))
