"""Build each model's DAGs from its spec, so that a new model is a new spec file and no code."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param

from batchwatch_airflow.operators import BatchPredictOperator, DriftCheckOperator

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


def hourly_drift_dag(spec: ModelSpec) -> DAG:
    """Hourly: the trailing window's features and champion scores against the champion's reference."""
    with DAG(
        dag_id=f"{spec.name}_hourly_drift",
        description=f"Hourly drift check of {spec.name} over the trailing {spec.drift.window_hours} h",
        doc_md=(
            f"### {spec.name}: hourly drift check\n\n"
            f"Each run compares the source rows of the trailing {spec.drift.window_hours} hours (ending at the run's data "
            "interval end) and the champion's scores for them with the reference profile stored when the champion was "
            "registered. A column is drifted only when significant after Benjamini-Hochberg "
            f"(FDR {spec.drift.fdr}) **and** its effect size passes the spec's threshold. The task succeeds when drift "
            "is found: the finding is in its return value, its log, `drift_results` and `alerts`.\n\n"
            "```sql\nSELECT column_name, test, statistic, p_adjusted, effect_size, threshold, verdict\nFROM drift_results\n"
            f"WHERE model_name = '{spec.name}' AND window_end = (SELECT MAX(window_end) FROM drift_results WHERE model_name = '{spec.name}')\n"
            "ORDER BY verdict, column_name, test;\n"
            f"SELECT * FROM alerts WHERE model_name = '{spec.name}' ORDER BY id DESC;\n```"
        ),
        schedule=CronDataIntervalTimetable(spec.schedules.hourly_drift, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        # Incidents open and resolve in window order, so windows are checked one at a time.
        max_active_runs=1,
        default_args=default_args(spec),
        tags=["batchwatch", "drift", *spec.tags],
    ) as dag:
        DriftCheckOperator(task_id="check_drift", model_name=spec.name)
    return dag
