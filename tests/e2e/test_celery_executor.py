"""fraud_nightly_predict on a real CeleryExecutor deployment: a scheduler, a dag-processor, an API server and two
`airflow celery worker` processes on a PostgreSQL metadata database and Redis, triggered through the REST API.

One deployment serves the module; each test writes the fraud spec it needs into the deployment's spec folder
and has the DAG file parsed again. With `scoring.shards: 4` the day is scored by four mapped `score_shard`
tasks and one `publish`, which must spread over both workers and write exactly what one scoring pass would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from batchwatch.demo import simulate
from batchwatch.warehouse import make_engine, migrate
from tools.airflow_cluster import AirflowCluster, airflow_cluster, fresh_database, redis_broker

from .conftest import DAY, MALFORMED_RATE, ROWS_PER_DAY, build_fraud_world, predictions
from .test_nightly_predict import assert_labelled_at_their_thresholds, direct_scores, source_rows

ROOT = Path(__file__).resolve().parents[2]
NIGHTLY = "fraud_nightly_predict"
DAG_FILE = "batchwatch_models.py"
SHARDS = 4


@dataclass
class Deployment:
    cluster: AirflowCluster
    engine: sa.Engine
    champion: int
    specs: Path


def write_fraud_spec(folder: Path, *, shards: int | None) -> None:
    """The project's fraud spec, with `scoring.shards` set when given (absent: the single `predict` task)."""
    data = yaml.safe_load((ROOT / "include" / "models" / "fraud.yaml").read_text())
    if shards is not None:
        data["scoring"]["shards"] = shards
    (folder / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, postgres_server) -> Iterator[Deployment]:
    """The deployment over a fresh warehouse holding the fraud world, which is built while the processes start."""
    folder = tmp_path_factory.mktemp("celery")
    specs, artifacts = folder / "specs", folder / "artifacts"
    specs.mkdir()
    write_fraud_spec(specs, shards=None)
    suffix = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        warehouse_url = stack.enter_context(fresh_database(postgres_server, f"bw_celery_warehouse_{suffix}"))
        metadata_url = stack.enter_context(fresh_database(postgres_server, f"bw_celery_meta_{suffix}"))
        broker_url = stack.enter_context(redis_broker(folder))
        env = {**os.environ, "BATCHWATCH_SPEC_DIRS": str(specs), "BATCHWATCH_ARTIFACT_ROOT": str(artifacts), "AIRFLOW_CONN_WAREHOUSE": warehouse_url}
        # One task at a time per worker: four shards queued together must use both.
        cluster = stack.enter_context(airflow_cluster(folder, metadata_url=metadata_url, broker_url=broker_url, env=env, worker_concurrency=1))
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(artifacts))  # the champion's artifact, where the workers read it
        engine = make_engine(warehouse_url)
        stack.callback(engine.dispose)
        migrate(engine)
        champion = build_fraud_world(engine)
        cluster.mark("warehouse built")
        cluster.wait_until_ready()
        print(f"\nCelery deployment in {folder}, start-up (s): {cluster.timings}")
        yield Deployment(cluster, engine, champion, specs)


def run_nightly(deployment: Deployment, day: datetime, task_ids: set[str]) -> tuple[dict, list[dict]]:
    """Trigger the nightly DAG (once its parse has `task_ids`) for the day [day, day + 1); the run, which succeeded, and its task instances."""
    cluster = deployment.cluster
    cluster.wait_for_tasks(NIGHTLY, task_ids, file_name=DAG_FILE)
    cluster.mark(f"{NIGHTLY} parsed with {sorted(task_ids)}")
    # A minute past the interval's end, as tools.runs dates a run: the timetable infers [day, day + 1).
    run = cluster.trigger(NIGHTLY, day + timedelta(days=1, minutes=1))
    assert (run["data_interval_start"], run["data_interval_end"]) == (iso(day), iso(day + timedelta(days=1)))
    run = cluster.wait_for_run(NIGHTLY, run["dag_run_id"])
    cluster.mark(f"run of {day:%Y-%m-%d} ended")
    print(f"\n{run['dag_run_id']}: {run['state']}; timings (s): {cluster.timings}")
    assert run["state"] == "success", cluster.diagnostics(run["dag_run_id"])
    return run, cluster.task_instances(NIGHTLY, run["dag_run_id"])


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def assert_day_scored_exactly(deployment: Deployment, day: datetime, run_id: str) -> None:
    """The day's predictions are its valid rows, one per entity, scored by the champion as a direct scoring would;
    its rejects are exactly the rows the simulation corrupted; every row carries the run's id."""
    engine = deployment.engine
    truth = simulate.simulate(day, day + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=MALFORMED_RATE)
    corrupted = set(truth.transactions["transaction_id"].astype(str)[truth.malformed.notna().to_numpy()])
    source = set(source_rows(engine, day)["transaction_id"])
    assert len(source) == ROWS_PER_DAY and corrupted < source and corrupted

    with engine.connect() as connection:
        rejected = connection.execute(sa.text("SELECT entity_id, run_id FROM rejected_rows WHERE ds = :ds"), {"ds": day.date()}).all()
    assert sorted(entity for entity, _ in rejected) == sorted(corrupted)
    assert {rejected_by for _, rejected_by in rejected} == {run_id}

    written = predictions(engine, ds=day.date())
    assert len(written) == ROWS_PER_DAY - len(corrupted)
    assert set(written["entity_id"]) == source - corrupted and written["entity_id"].is_unique
    assert set(written["role"]) == {"champion"} and set(written["model_version"]) == {deployment.champion}
    assert set(written["run_id"]) == {run_id}
    expected = direct_scores(engine, deployment.champion, day)
    actual = written.set_index("entity_id")["score"].loc[expected.index]
    assert (actual - expected).abs().max() <= 1e-12
    assert_labelled_at_their_thresholds(engine, written)


def test_the_nightly_run_scores_the_day_on_a_celery_worker(deployment):
    """The spec without shards: today's single `predict` task, and retention, each run by one of the workers."""
    write_fraud_spec(deployment.specs, shards=None)
    run, instances = run_nightly(deployment, DAY, {"predict", "apply_retention"})

    assert {(ti["task_id"], ti["state"]) for ti in instances} == {("predict", "success"), ("apply_retention", "success")}
    assert {ti["hostname"] for ti in instances} <= set(deployment.cluster.workers), instances
    assert_day_scored_exactly(deployment, DAY, run["dag_run_id"])


def test_four_shards_score_the_day_on_both_workers(deployment):
    """`scoring.shards: 4`: four mapped `score_shard` tasks, spread over both workers, then one `publish`; the day is exact."""
    day = DAY + timedelta(days=1)
    write_fraud_spec(deployment.specs, shards=SHARDS)
    run, instances = run_nightly(deployment, day, {"score_shard", "publish", "apply_retention"})

    assert {ti["state"] for ti in instances} == {"success"}, instances
    shards = [ti for ti in instances if ti["task_id"] == "score_shard"]
    assert sorted(ti["map_index"] for ti in shards) == list(range(SHARDS))
    assert {ti["map_index"]: ti["rendered_map_index"] for ti in shards} == {k: f"shard {k} of {SHARDS}" for k in range(SHARDS)}  # the Grid's names
    assert {ti["hostname"] for ti in shards} == set(deployment.cluster.workers), [(ti["map_index"], ti["hostname"]) for ti in shards]
    (publish,) = [ti for ti in instances if ti["task_id"] == "publish"]
    assert datetime.fromisoformat(publish["start_date"]) >= max(datetime.fromisoformat(ti["end_date"]) for ti in shards)
    assert_day_scored_exactly(deployment, day, run["dag_run_id"])
