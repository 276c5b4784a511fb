"""Sharded nightly scoring: shards staged apart, published as one day, exactly the day one task would write."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from batchwatch import queries, scoring
from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.scoring.shards import shard_predicate
from batchwatch.spec import get_spec
from batchwatch.spec.model import DEFAULT_SPEC_DIR
from batchwatch.warehouse import make_engine
from batchwatch.warehouse.stages import ShardsMissing, stage_names

from .conftest import DAY, HISTORY_START, ROWS_PER_DAY, count, predictions, run_day
from .test_faults import run_with_retries
from .test_nightly_predict import comparable, repeating_spec

SHARDS = 4
NEXT_DAY = DAY + timedelta(days=1)


@pytest.fixture
def sharded(tmp_path, monkeypatch):
    """The fraud spec with its nightly scoring in four shards."""
    data = yaml.safe_load((DEFAULT_SPEC_DIR / "fraud.yaml").read_text())
    data["scoring"]["shards"] = SHARDS
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    return get_spec("fraud")


def day_state(engine, day=DAY) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(predictions, rejects, daily summary) of a day, without the run's id and times."""
    with engine.connect() as connection:
        rejects = pd.read_sql(
            sa.text("SELECT entity_id, reason FROM rejected_rows WHERE ds = :ds ORDER BY entity_id, reason"), connection, params={"ds": day.date()}
        )
        daily = pd.read_sql(
            sa.text("SELECT role, model_version, rows_scored, rows_rejected, positives, score_p50 FROM daily_scoring WHERE ds = :ds ORDER BY role"),
            connection,
            params={"ds": day.date()},
        )
    return comparable(predictions(engine, ds=day.date())), rejects, daily


def assert_same_day(left, right) -> None:
    pd.testing.assert_frame_equal(left[0], right[0])
    pd.testing.assert_frame_equal(left[1], right[1])
    pd.testing.assert_frame_equal(left[2], right[2], check_exact=False, rtol=1e-12)


def stage_tables(engine) -> list[str]:
    """Stage tables left in the warehouse (shard stages and a day's `_next`)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            query = "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND (relname LIKE 'stage\\_%' OR relname LIKE '%\\_next')"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'stage\\_%' ESCAPE '\\'"
        return sorted(connection.execute(sa.text(query)).scalars())


def test_four_shards_publish_exactly_the_day_one_task_writes(fraud_world, monkeypatch, tmp_path):
    engine = fraud_world["engine"]
    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success"
    unsharded = day_state(engine)
    assert [day.shards for day in queries.prediction_volume(engine, "fraud")] == [1]

    data = yaml.safe_load((DEFAULT_SPEC_DIR / "fraud.yaml").read_text())
    data["scoring"]["shards"] = SHARDS
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success"
    assert_same_day(day_state(engine), unsharded)

    published = results["publish"]
    assert [shard["shard"] for shard in published["shards"]] == list(range(SHARDS))
    per_shard = [shard["rows_read"] for shard in published["shards"]]
    assert sum(per_shard) == published["rows_read"] == ROWS_PER_DAY and min(per_shard) > 0
    assert published["rows_scored"] == ROWS_PER_DAY - 15 and published["rows_rejected"] == 15
    assert stage_tables(engine) == [] and count(engine, "scoring_stages", "published_at IS NULL") == 0
    assert [(day.ds, day.shards) for day in queries.prediction_volume(engine, "fraud")] == [(DAY.date(), SHARDS)]  # the page's volume table

    state, _ = run_day("fraud_nightly_predict", DAY)  # a rerun of the day is exact
    assert state == "success"
    assert_same_day(day_state(engine), unsharded)


def test_the_shards_split_the_keys_apart_from_the_drift_sample_and_the_arms(fraud_world):
    """Every key in exactly one shard, the shards balanced; the split is neither the drift sample nor a canary arm
    (PostgreSQL: its hash partitioning of the key; SQLite: buckets under the model's shard salt)."""
    from batchwatch.hashing import DRIFT_SAMPLE, canary_salt, in_share
    from batchwatch.warehouse.read import sample_predicate

    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    simulate_into(engine, start=DAY + timedelta(days=2), end=DAY + timedelta(days=4), rows_per_day=10_000)
    shard_of = {}
    with engine.connect() as connection:
        for shard in range(SHARDS):
            keys = connection.execute(
                sa.text(f"SELECT CAST(transaction_id AS TEXT) FROM transactions s WHERE {shard_predicate(engine, spec, shard, SHARDS)}")
            ).scalars().all()
            for key in keys:
                assert key not in shard_of, f"{key} is in shards {shard_of[key]} and {shard}"
                shard_of[key] = shard
        everything = connection.execute(sa.text("SELECT CAST(transaction_id AS TEXT) FROM transactions")).scalars().all()
        half = sample_predicate(engine, "transaction_id", 0.5, DRIFT_SAMPLE)  # the drift check's sample at 50%
        sampled = set(connection.execute(sa.text(f"SELECT CAST(transaction_id AS TEXT) FROM transactions WHERE {half}")).scalars())
    assert sorted(shard_of) == sorted(everything)
    frame = pd.DataFrame({"key": everything})
    frame["shard"] = frame["key"].map(shard_of)
    frame["sampled"] = frame["key"].isin(sampled)
    frame["treatment"] = in_share(frame["key"].tolist(), canary_salt("fraud", 1), 0.5)
    from scipy.stats import chi2_contingency, chisquare

    assert chisquare(frame["shard"].value_counts().to_numpy()).pvalue > 1e-3  # balanced
    for other in ("sampled", "treatment"):  # independent of the drift sample and of a canary's arms
        table = pd.crosstab(frame["shard"], frame[other]).to_numpy()
        assert chi2_contingency(table).pvalue > 1e-3, other


def test_repeated_keys_are_quarantined_as_one_task_does(fraud_world):
    """Every copy of a key hashes to one shard, so the shard that holds it keeps the first and rejects the rest."""
    engine = fraud_world["engine"]
    spec = repeating_spec("transaction_id % 500 = 0")
    scoring.predict_interval(engine, spec, start=DAY, end=NEXT_DAY, run_id="whole", chunk_size=200)
    whole = day_state(engine)
    for shard in range(SHARDS):
        scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shard=shard, shards=SHARDS, chunk_size=200)
    scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shards=SHARDS)
    assert_same_day(day_state(engine), whole)
    assert (whole[1]["reason"].str.contains("duplicated")).sum() == 3


def test_a_failed_publish_leaves_the_day_and_the_stages_for_a_retry(fraud_world):
    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    scoring.predict_interval(engine, spec, start=DAY, end=NEXT_DAY, run_id="before")
    before = day_state(engine)
    for shard in (0, 1, 3):
        scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shard=shard, shards=SHARDS)
    with pytest.raises(ShardsMissing, match=r"shard\(s\) \[2\] of 4"):
        scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shards=SHARDS)
    assert_same_day(day_state(engine), before)
    assert count(engine, "scoring_stages") == 3

    strict = spec.model_copy(update={"scoring": spec.scoring.model_copy(update={"max_reject_rate": 0.001})})
    scoring.score_shard(engine, strict, start=DAY, end=NEXT_DAY, run_id="sharded", shard=2, shards=SHARDS)
    with pytest.raises(scoring.RejectRateExceeded, match="15 of 1500 rows rejected"):  # judged on the whole day
        scoring.publish_shards(engine, strict, start=DAY, end=NEXT_DAY, run_id="sharded", shards=SHARDS)
    assert_same_day(day_state(engine), before)
    assert len(stage_tables(engine)) == 2 * SHARDS

    summary = scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shards=SHARDS)  # the retry
    assert summary["rows_read"] == ROWS_PER_DAY
    assert_same_day(day_state(engine), before)
    assert stage_tables(engine) == [] and count(engine, "scoring_stages", "published_at IS NULL") == 0

    # Its task lost after the commit (a worker gone), the publish is tried again: it finds the run published, changes nothing.
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM rejected_rows WHERE entity_id = (SELECT MIN(entity_id) FROM rejected_rows)"))
    again = scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shards=SHARDS)
    counts = ("rows_read", "rows_scored", "rows_rejected")
    assert [again[key] for key in counts] == [summary[key] for key in counts]
    assert count(engine, "rejected_rows") == 14  # untouched: the deleted reject stays deleted, nothing was published again


def test_stages_of_a_run_that_never_published_are_dropped_by_a_later_publish(fraud_world):
    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    scoring.score_shard(engine, spec, start=NEXT_DAY, end=NEXT_DAY + timedelta(days=1), run_id="abandoned", shard=0, shards=2)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE scoring_stages SET staged_at = :t"), {"t": pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()})
    assert len(stage_tables(engine)) == 2
    for shard in range(2):
        scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id="kept", shard=shard, shards=2)
    scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="kept", shards=2)
    assert stage_tables(engine) == [] and count(engine, "scoring_stages", "published_at IS NULL") == 0
    assert len(predictions(engine, ds=NEXT_DAY.date())) == 0  # the abandoned run's day was never published


def test_concurrent_sharded_runs_of_one_day_both_publish_an_exact_day(fraud_world, warehouse_url):
    spec = get_spec("fraud")
    scoring.predict_interval(fraud_world["engine"], spec, start=DAY, end=NEXT_DAY, run_id="whole")
    whole = day_state(fraud_world["engine"])

    def run(run_id: str, shard: int | None):
        engine = make_engine(warehouse_url)
        try:
            if shard is None:
                return scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id=run_id, shards=2)
            return scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id=run_id, shard=shard, shards=2, chunk_size=200)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(run, ["a", "b", "a", "b"], [0, 0, 1, 1]))
        published = list(pool.map(run, ["a", "b"], [None, None]))
    assert [summary["rows_read"] for summary in published] == [ROWS_PER_DAY, ROWS_PER_DAY]
    assert_same_day(day_state(fraud_world["engine"]), whole)
    assert set(predictions(fraud_world["engine"], ds=DAY.date())["run_id"]) in ({"a"}, {"b"})
    assert stage_tables(fraud_world["engine"]) == []


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_shard_cut_off_mid_write_is_the_only_task_that_runs_again(fraud_world, sharded):
    """The warehouse drops shard 2's connection after it wrote its rows, before it commits: Airflow retries that
    shard alone, the other shards run once, and the published day is exact."""
    engine = fraud_world["engine"]
    expected = scoring.predict_interval(engine, sharded, start=DAY, end=NEXT_DAY, run_id="whole")
    whole = day_state(engine)
    run_id = f"manual__{(NEXT_DAY + timedelta(minutes=1)).isoformat()}"  # the run dag.test makes for the interval
    predictions_stage, _ = stage_names("fraud", DAY.date(), run_id, 2)
    cut = threading.Event()

    def cut_shard_two_before_it_commits():
        """Hold shard 2's row in scoring_stages uncommitted: its last statement waits on it, with its rows written; then cut it off."""
        with make_engine(engine.url.render_as_string(hide_password=False)).connect() as holder:
            holder.execute(
                sa.text(
                    "INSERT INTO scoring_stages (model_name, ds, run_id, shard, shards, predictions_stage, rejects_stage, summary, staged_at) "
                    "VALUES ('fraud', :ds, :run, 2, :n, 'held', 'held', '{}', now())"
                ),
                {"ds": DAY.date(), "run": run_id, "n": SHARDS},
            )
            for _ in range(1200):
                holder.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # activity is otherwise read once per transaction
                waiting = holder.execute(
                    sa.text(
                        "SELECT a.pid, (SELECT COUNT(*) FROM pg_class WHERE relname = :stage) FROM pg_stat_activity a "
                        "WHERE a.wait_event_type = 'Lock' AND a.query LIKE 'INSERT INTO scoring_stages%' AND a.pid <> pg_backend_pid()"
                    ),
                    {"stage": predictions_stage},
                ).first()
                if waiting:
                    holder.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting[0]})
                    cut.set()
                    break
                threading.Event().wait(0.05)
            holder.rollback()

    cutter = threading.Thread(target=cut_shard_two_before_it_commits)
    cutter.start()
    state, tasks = run_with_retries("fraud_nightly_predict", NEXT_DAY, mapped=True)
    cutter.join()
    assert cut.is_set()
    assert state == "success"
    assert tasks == {("score_shard", 0): ("success", 1), ("score_shard", 1): ("success", 1), ("score_shard", 2): ("success", 2),
                     ("score_shard", 3): ("success", 1), ("publish", -1): ("success", 1), ("apply_retention", -1): ("success", 1)}  # fmt: skip
    assert_same_day(day_state(engine), whole)
    assert expected["rows_scored"] == len(whole[0])
    assert stage_tables(engine) == [] and count(engine, "scoring_stages", "published_at IS NULL") == 0
    with engine.connect() as connection:
        held = "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND a.datname = current_database()"
        assert connection.execute(sa.text(held)).scalar_one() == 0
    np.testing.assert_array_equal(sorted(predictions(engine, ds=DAY.date())["run_id"].unique()), [run_id])


def test_shards_scored_by_different_champions_are_not_published(fraud_world):
    """A promotion between two shards of one run: publishing would mix two models' rows in one day."""
    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    scoring.predict_interval(engine, spec, start=DAY, end=NEXT_DAY, run_id="before")
    before = day_state(engine)
    scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shard=0, shards=2)
    newer = bootstrap_champion(engine, spec, start=HISTORY_START + timedelta(days=1), end=DAY)  # another window: a new version
    assert newer != fraud_world["champion"]
    scoring.score_shard(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shard=1, shards=2)
    with pytest.raises(scoring.ShardsDisagree, match="different models"):
        scoring.publish_shards(engine, spec, start=DAY, end=NEXT_DAY, run_id="sharded", shards=2)
    assert_same_day(day_state(engine), before)
