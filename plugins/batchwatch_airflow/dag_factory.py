"""Build each model's DAGs from its spec, so that a new model is a new spec file and no code."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from batchwatch_airflow.operators import BatchPredictOperator

if TYPE_CHECKING:
    from batchwatch.spec import ModelSpec

START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)


def default_args(spec: ModelSpec) -> dict:
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
    }


def predictions_asset(spec: ModelSpec) -> Asset:
    return Asset(name=f"{spec.name}_predictions", uri=f"batchwatch://{spec.name}/predictions")


def nightly_predict_dag(spec: ModelSpec) -> DAG:
    """Daily: score the day's source rows with the champion (and the challenger in shadow)."""
    with DAG(
        dag_id=f"{spec.name}_nightly_predict",
        description=f"Nightly batch prediction of {spec.name}: {spec.description}",
        doc_md=(
            f"### {spec.name}: nightly batch prediction\n\n{spec.description}\n\n"
            "Scores every row of `" + (spec.source.table or "the source query") + "` whose event time falls in the run's "
            "data interval (one UTC day) with the **champion**, and with the **challenger** as `role='shadow'` when one "
            "exists. Rows failing validation go to `rejected_rows` with a reason; the run fails and writes nothing when "
            f"more than {spec.scoring.max_reject_rate:.0%} are rejected. Re-running a day replaces exactly that day's rows.\n\n"
            "```sql\nSELECT * FROM champion_latest_predictions WHERE model_name = '" + spec.name + "' LIMIT 20;\n```"
        ),
        schedule=CronDataIntervalTimetable(spec.schedules.nightly_predict, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=4,
        default_args=default_args(spec),
        tags=["batchwatch", "predict", *spec.tags],
        params={
            "chunk_size": Param(spec.scoring.chunk_size, type="integer", minimum=1, description="Rows per streamed chunk."),
        },
    ) as dag:
        BatchPredictOperator(
            task_id="predict",
            model_name=spec.name,
            chunk_size="{{ params.chunk_size }}",
            outlets=[predictions_asset(spec)],
        )
    return dag
