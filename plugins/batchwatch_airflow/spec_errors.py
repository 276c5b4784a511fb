"""What a broken model spec becomes in the UI: a DAG named after the file whose one task fails with the error.

The DAG file builds every spec on its own, so a misspelt key in one spec leaves the other models
scheduled; the broken one shows up in the DAG list (tag `spec-error`) instead of vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

SPEC_ERROR_TAG = "spec-error"


class SpecErrorOperator(BaseOperator):
    """Fail with the spec's error: retrying cannot fix a spec file."""

    # The message is shown as it is: it may contain braces that are not a template.
    template_fields: Sequence[str] = ()
    ui_color = "#f5b7b1"

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def execute(self, context: Context) -> None:
        raise AirflowFailException(self.message)


def spec_error_dag(name: str, message: str) -> DAG:
    """A manual, unpaused DAG `<name>_spec_error` whose docs and only task carry the error message."""
    dag = DAG(
        dag_id=f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}_spec_error",
        schedule=None,
        tags=["batchwatch", SPEC_ERROR_TAG],
        is_paused_upon_creation=False,
        auto_register=False,
        description=" ".join(message.split()),
        doc_md=(
            f"### The model spec `{name}` cannot be used\n\nNone of its DAGs are scheduled until the spec file is fixed; "
            "the other models run as usual. Fix the field named below, and this DAG gives way to the model's DAGs at "
            f"the next parse.\n\n```\n{message}\n```"
        ),
        default_args={"owner": "batchwatch", "retries": 0, "execution_timeout": timedelta(minutes=5)},
    )
    SpecErrorOperator(task_id="report_spec_error", message=message, dag=dag)
    return dag
