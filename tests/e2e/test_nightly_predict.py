"""fraud_nightly_predict end to end, through dag.test(), on PostgreSQL and on SQLite."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch import registry, scoring
from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.demo import simulate
from batchwatch.modeling import training
from batchwatch.scoring import batch as batch_scoring
from batchwatch.spec import get_spec

from .conftest import DAY, FIRST_DAY, HISTORY_START, ROWS_PER_DAY, count, predictions, run_day

REASON_OF_KIND = {
    "nan": "amount is null or NaN",
    "pos_inf": "avg_amount_7d is infinite",
    "neg_inf": "avg_amount_7d is infinite",
    "negative_amount": "amount is below the minimum 0",
    "hour_out_of_range": "hour is above the maximum 23",
    "unknown_category": "merchant_category has an unknown category",
    "wrong_type": "txn_count_30d is not an integer (wrong type)",
}


def source_rows(engine, day) -> pd.DataFrame:
    spec = get_spec("fraud")
    columns = ", ".join(["transaction_id", *spec.source_columns])
    with engine.connect() as connection:
        frame = pd.read_sql(
            sa.text(f"SELECT {columns} FROM transactions WHERE event_time >= :s AND event_time < :e"),
            connection,
            params={"s": day, "e": day + timedelta(days=1)},
        )
    frame["transaction_id"] = frame["transaction_id"].astype(str)
    return frame


def direct_scores(engine, version: int, day) -> pd.Series:
    """Score the day's valid rows straight from the registry, outside Airflow and the writer."""
    spec = get_spec("fraud")
    valid = validate(source_rows(engine, day), spec).valid
    pipeline = registry.load_version(engine, "fraud", version).pipeline
    return pd.Series(pipeline.predict_proba(build_features(valid, spec))[:, 1], index=valid["transaction_id"].to_numpy())


def stored_threshold(engine, version: int) -> float:
    """model_versions.threshold: what the version's policy chose on its validation set."""
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT threshold FROM model_versions WHERE model_name = 'fraud' AND version = :v"), {"v": version}
        ).scalar_one()


def assert_labelled_at_their_thresholds(engine, written: pd.DataFrame) -> dict[str, float]:
    """predicted_label = (score >= model_versions.threshold) on every row, for each role's version; the thresholds by role."""
    thresholds = {}
    for (role, version), rows in written.groupby(["role", "model_version"]):
        thresholds[role] = stored_threshold(engine, int(version))
        np.testing.assert_array_equal(rows["predicted_label"].to_numpy(), (rows["score"] >= thresholds[role]).astype(int).to_numpy())
    return thresholds


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["run_id", "scored_at"]).sort_values(["role", "entity_id"]).reset_index(drop=True)


def test_predictions_are_the_interval_minus_rejects_scored_by_the_champion(fraud_world):
    engine = fraud_world["engine"]
    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success"
    summary = results["predict"]

    source = source_rows(engine, DAY)
    rejected = count(engine, "rejected_rows", "ds = :ds", ds=DAY.date())
    written = predictions(engine, ds=DAY.date())
    assert len(source) == ROWS_PER_DAY == summary["rows_read"]
    assert rejected == summary["rows_rejected"] == 15
    assert len(written) == len(source) - rejected == summary["rows_scored"]
    assert written["entity_id"].is_unique
    assert set(written["role"]) == {"champion"} and set(written["model_version"]) == {fraud_world["champion"]}
    assert written["run_id"].nunique() == 1

    expected = direct_scores(engine, fraud_world["champion"], DAY)
    actual = written.set_index("entity_id")["score"]
    assert set(actual.index) == set(expected.index)
    np.testing.assert_allclose(actual.loc[expected.index].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-12)
    threshold = assert_labelled_at_their_thresholds(engine, written)["champion"]
    assert summary["threshold"] == threshold
    assert summary["positive_rate"] == pytest.approx(written["predicted_label"].mean(), abs=1e-6)
    # fraud.yaml flags the top 1% of the validation scores: about 1% of a day like the validation days, not ~0 as at 0.5.
    assert 0.003 < summary["positive_rate"] < 0.03
    with engine.connect() as connection:
        latest = connection.execute(sa.text("SELECT COUNT(*) FROM champion_latest_predictions WHERE model_name = 'fraud'")).scalar_one()
    assert latest == len(written)


def test_rerun_replaces_the_interval_exactly(fraud_world):
    engine = fraud_world["engine"]
    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    assert run_day("fraud_nightly_predict", DAY + timedelta(days=1))[0] == "success"
    first = predictions(engine)
    rejects_first = count(engine, "rejected_rows")

    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    second = predictions(engine)
    pd.testing.assert_frame_equal(comparable(first), comparable(second))
    assert count(engine, "rejected_rows") == rejects_first
    assert not second.duplicated(["model_name", "model_version", "entity_id", "ds"]).any()
    other_day = second[second["ds"].astype(str) == str((DAY + timedelta(days=1)).date())]
    assert set(other_day["run_id"]) == set(first[first["ds"].astype(str) == str((DAY + timedelta(days=1)).date())]["run_id"])


def _fail_on_chunk(monkeypatch, k: int) -> None:
    calls = {"n": 0}
    real_score = scoring.score

    def score_then_fail(pipeline, features):
        calls["n"] += 1
        if calls["n"] > k:
            raise RuntimeError(f"injected failure after {k} chunks")
        return real_score(pipeline, features)

    monkeypatch.setattr(batch_scoring, "score", score_then_fail)


def test_a_failure_after_k_chunks_leaves_the_interval_as_it_was(fraud_world, monkeypatch):
    engine = fraud_world["engine"]
    with monkeypatch.context() as patch:
        _fail_on_chunk(patch, k=3)
        state, _ = run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})
    assert state == "failed"
    assert count(engine, "predictions", "ds = :ds", ds=DAY.date()) == 0
    assert count(engine, "rejected_rows", "ds = :ds", ds=DAY.date()) == 0

    assert run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})[0] == "success"
    good = predictions(engine, ds=DAY.date())
    assert len(good) == ROWS_PER_DAY - 15

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="injected failure") as raised:
        _fail_on_chunk(patch, k=1)
        scoring.predict_interval(engine, get_spec("fraud"), start=DAY, end=DAY + timedelta(days=1), run_id="manual", chunk_size=300)
    if engine.dialect.name == "postgresql":
        # Even while the traceback is alive, the failed run's reader must not sit in a transaction
        # holding locks on the source (it would block the next run's partition swap).
        assert raised.traceback and count(engine, "pg_stat_activity", "datname = current_database() AND state = 'idle in transaction'") == 0

    with monkeypatch.context() as patch:
        _fail_on_chunk(patch, k=2)
        assert run_day("fraud_nightly_predict", DAY, conf={"chunk_size": 300})[0] == "failed"
    after = predictions(engine, ds=DAY.date())
    pd.testing.assert_frame_equal(good, after)


def test_each_malformed_kind_is_quarantined_with_its_reason(fraud_world):
    engine = fraud_world["engine"]
    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    truth = simulate.simulate(DAY, DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    kinds = pd.Series(truth.malformed.to_numpy(), index=truth.transactions["transaction_id"].astype(str)).dropna()
    assert set(kinds) == set(simulate.MALFORMED_KINDS)

    with engine.connect() as connection:
        rejects = pd.read_sql(
            sa.text("SELECT entity_id, reason, payload, run_id FROM rejected_rows WHERE ds = :ds"), connection, params={"ds": DAY.date()}
        )
    assert set(rejects["entity_id"]) == set(kinds.index)
    for entity_id, reason in zip(rejects["entity_id"], rejects["reason"], strict=True):
        assert REASON_OF_KIND[kinds[entity_id]] in reason, (kinds[entity_id], reason)
    hour_rows = rejects[rejects["reason"].str.contains("hour is above")]
    payload = hour_rows["payload"].iloc[0]
    payload = payload if isinstance(payload, dict) else __import__("json").loads(payload)
    assert payload["hour"] > 23 and payload["transaction_id"] == hour_rows["entity_id"].iloc[0]


def test_over_the_reject_threshold_the_run_fails_and_writes_nothing(fraud_world):
    engine = fraud_world["engine"]
    bad_day = FIRST_DAY + timedelta(days=5)
    from batchwatch.demo.seed import simulate_into

    simulate_into(engine, start=bad_day, end=bad_day + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.2)
    state, _ = run_day("fraud_nightly_predict", bad_day)
    assert state == "failed"
    assert count(engine, "predictions", "ds = :ds", ds=bad_day.date()) == 0
    assert count(engine, "rejected_rows", "ds = :ds", ds=bad_day.date()) == 0
    with pytest.raises(scoring.RejectRateExceeded, match=r"300 of 1500 rows rejected \(20.00%\).*scoring.max_reject_rate"):
        scoring.predict_interval(engine, get_spec("fraud"), start=bad_day, end=bad_day + timedelta(days=1), run_id="manual")


def test_a_tampered_artifact_is_refused_and_the_day_is_left_as_it_was(fraud_world):
    engine = fraud_world["engine"]
    assert run_day("fraud_nightly_predict", DAY)[0] == "success"
    before = predictions(engine)
    artifact = registry.artifact_path(registry.get_version(engine, "fraud", fraud_world["champion"])["artifact_uri"])
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    state, _ = run_day("fraud_nightly_predict", DAY)
    assert state == "failed"
    pd.testing.assert_frame_equal(before, predictions(engine))
    assert count(engine, "rejected_rows") == 15
    with pytest.raises(registry.ArtifactIntegrityError, match="refusing to unpickle"):
        scoring.predict_interval(engine, get_spec("fraud"), start=DAY, end=DAY + timedelta(days=1), run_id="manual")


def test_a_challenger_scores_in_shadow_beside_the_champion(fraud_world):
    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    labelled = training.read_labelled(engine, spec, HISTORY_START + timedelta(days=3), FIRST_DAY, FIRST_DAY)
    challenger = training.train(spec, labelled)
    version = registry.register(
        engine, spec, challenger.pipeline, metrics=challenger.metrics, trained_on={"rows": len(labelled)}, parent_version=fraud_world["champion"],
        threshold_policy=challenger.threshold_policy, calibration=challenger.calibration.to_json(),
    )
    registry.set_alias(engine, "fraud", "challenger", version, reason="shadow test", actor="tests")

    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success" and results["predict"]["shadow_version"] == version
    written = predictions(engine, ds=DAY.date())
    champion_rows = written[written["role"] == "champion"]
    shadow_rows = written[written["role"] == "shadow"]
    assert len(shadow_rows) == len(champion_rows) == ROWS_PER_DAY - 15
    assert set(shadow_rows["model_version"]) == {version} and set(champion_rows["model_version"]) == {fraud_world["champion"]}
    assert set(shadow_rows["entity_id"]) == set(champion_rows["entity_id"])
    expected = direct_scores(engine, version, DAY)
    np.testing.assert_allclose(shadow_rows.set_index("entity_id")["score"].loc[expected.index].to_numpy(), expected.to_numpy(), atol=1e-12)
    # Each role is labelled at its own version's threshold, and the two versions chose different ones.
    thresholds = assert_labelled_at_their_thresholds(engine, written)
    assert thresholds["shadow"] == challenger.threshold != thresholds["champion"]
    assert (results["predict"]["threshold"], results["predict"]["shadow_threshold"]) == (thresholds["champion"], thresholds["shadow"])
    with engine.connect() as connection:
        latest_versions = connection.execute(sa.text("SELECT DISTINCT model_version FROM champion_latest_predictions")).scalars().all()
    assert latest_versions == [fraud_world["champion"]]


def repeating_spec(where: str):
    """The fraud spec over a query source that repeats the rows matching `where`, copies last, each
    with its amount plus 1, so that which copy was kept shows."""
    from batchwatch.spec import parse_spec

    spec = get_spec("fraud")
    columns = ["transaction_id", "event_time", *spec.source_columns]
    copies = ", ".join("amount + 1 AS amount" if name == "amount" else name for name in columns)
    data = spec.model_dump(exclude_none=True)
    data["source"] = {
        "query": f"SELECT {', '.join(columns)} FROM transactions UNION ALL SELECT {copies} FROM transactions WHERE {where}",
        "entity_key": "transaction_id",
        "event_time": "event_time",
    }
    return parse_spec(data)


def test_a_repeated_entity_is_quarantined_the_same_whatever_the_chunk_size(fraud_world):
    """Within one chunk or across chunks, every later copy of a key is rejected and the first is scored."""
    engine = fraud_world["engine"]
    spec = repeating_spec("transaction_id % 500 = 0")
    source = source_rows(engine, DAY).set_index("transaction_id")
    repeated = source.index[source.index.astype(int) % 500 == 0]
    reason = "transaction_id is duplicated in the batch"
    outcomes = []
    for chunk_size in (ROWS_PER_DAY * 2, 200):  # one chunk: validation sees the copies; 200: they come chunks later
        summary = scoring.predict_interval(engine, spec, start=DAY, end=DAY + timedelta(days=1), run_id=f"chunk-{chunk_size}", chunk_size=chunk_size)
        assert summary["rows_read"] == ROWS_PER_DAY + len(repeated)
        assert summary["rows_scored"] == ROWS_PER_DAY - 15  # the originals, less the 15 malformed ones
        with engine.connect() as connection:
            rejects = pd.read_sql(
                sa.text("SELECT entity_id, reason, payload FROM rejected_rows WHERE ds = :ds ORDER BY entity_id, reason"),
                connection,
                params={"ds": DAY.date()},
            )
        copies = rejects[rejects["reason"].str.contains(reason)]
        assert sorted(copies["entity_id"]) == sorted(repeated)
        payloads = copies.set_index("entity_id")["payload"].map(lambda p: p if isinstance(p, dict) else json.loads(p))  # JSONB or text
        rejected_amounts = payloads.map(lambda payload: payload["amount"])
        original_amounts = source.loc[rejected_amounts.index, "amount"]
        finite = original_amounts.notna() & np.isfinite(original_amounts.astype(float))
        np.testing.assert_allclose(rejected_amounts[finite].astype(float), original_amounts[finite] + 1)  # the copies
        written = comparable(predictions(engine, ds=DAY.date()))
        expected = direct_scores(engine, fraud_world["champion"], DAY)  # the originals, scored directly
        assert written["entity_id"].is_unique and sorted(written["entity_id"]) == sorted(expected.index)
        np.testing.assert_allclose(written.set_index("entity_id")["score"].loc[expected.index], expected, rtol=0, atol=1e-12)
        outcomes.append((summary["rejects_by_reason"], rejects, written))
    assert outcomes[0][0] == outcomes[1][0]
    pd.testing.assert_frame_equal(outcomes[0][1], outcomes[1][1])
    pd.testing.assert_frame_equal(outcomes[0][2], outcomes[1][2])


def test_repeated_entities_over_the_reject_limit_fail_before_a_second_pass(fraud_world):
    engine = fraud_world["engine"]
    spec = repeating_spec("transaction_id % 10 = 0")  # 10% of the keys repeat; the limit is 5%
    repeats = int((source_rows(engine, DAY)["transaction_id"].astype(int) % 10 == 0).sum())
    # Exactly the copies, counted in SQL: a second pass would also count the malformed rows.
    expected = rf"{repeats} of {ROWS_PER_DAY + repeats} rows rejected .*transaction_id is duplicated in the batch \({repeats}\)"
    with pytest.raises(scoring.RejectRateExceeded, match=expected):
        scoring.predict_interval(engine, spec, start=DAY, end=DAY + timedelta(days=1), run_id="manual", chunk_size=200)
    assert count(engine, "predictions") == 0 and count(engine, "rejected_rows") == 0


@pytest.mark.parametrize(
    ("second_read", "message"),
    [(set(), "yet a second read of the source repeats none"), ({"no-such-key"}, "repeated other transaction_ids on each read")],
)
def test_a_source_that_changes_between_reads_fails_and_writes_nothing(fraud_world, monkeypatch, second_read, message):
    """Injected: the second read of the repeated keys disagrees with the first pass, as if rows were still arriving."""
    engine = fraud_world["engine"]
    monkeypatch.setattr(batch_scoring, "_repeated_keys", lambda *args: second_read)
    with pytest.raises(scoring.DuplicateEntity, match=f"{message}.*Nothing was written"):
        scoring.predict_interval(
            engine, repeating_spec("transaction_id % 500 = 0"), start=DAY, end=DAY + timedelta(days=1), run_id="manual", chunk_size=200
        )
    assert count(engine, "predictions") == 0 and count(engine, "rejected_rows") == 0


def test_an_empty_interval_succeeds_with_nothing_to_score(fraud_world):
    engine = fraud_world["engine"]
    empty_day = FIRST_DAY + timedelta(days=9)
    state, results = run_day("fraud_nightly_predict", empty_day)
    assert state == "success"
    assert results["predict"]["rows_read"] == 0 and results["predict"]["positive_rate"] is None
    assert count(engine, "predictions", "ds = :ds", ds=empty_day.date()) == 0


def test_a_broken_source_query_fails_with_the_database_error(fraud_world):
    from batchwatch.spec import parse_spec

    engine = fraud_world["engine"]
    # On PostgreSQL the error comes mid-stream, after rows have been sent; SQLite fails at prepare.
    broken, message = (
        ("SELECT * FROM transactions WHERE 1 / (transaction_id % 1000 - 999) <> 0", "division by zero")
        if engine.dialect.name == "postgresql"
        else ("SELECT *, no_such_column FROM transactions", "no such column")
    )
    data = get_spec("fraud").model_dump(exclude_none=True)
    data["source"] = {"query": broken, "entity_key": "transaction_id", "event_time": "event_time"}
    with pytest.raises(Exception, match=message):
        scoring.predict_interval(fraud_world["engine"], parse_spec(data), start=DAY, end=DAY + timedelta(days=1), run_id="manual")
    assert count(fraud_world["engine"], "predictions") == 0


def test_a_broken_challenger_does_not_stop_the_champion(fraud_world):
    engine = fraud_world["engine"]
    spec = get_spec("fraud")
    challenger = training.train(spec, training.read_labelled(engine, spec, HISTORY_START, FIRST_DAY, FIRST_DAY))
    version = registry.register(engine, spec, challenger.pipeline, metrics={}, trained_on={}, parent_version=fraud_world["champion"])
    registry.set_alias(engine, "fraud", "challenger", version, reason="shadow test", actor="tests")
    artifact = registry.artifact_path(registry.get_version(engine, "fraud", version)["artifact_uri"])
    artifact.write_bytes(b"not the registered bytes")

    state, results = run_day("fraud_nightly_predict", DAY)
    assert state == "success"
    assert results["predict"]["shadow_version"] is None and "refusing to unpickle" in results["predict"]["shadow_error"]
    written = predictions(engine, ds=DAY.date())
    assert set(written["role"]) == {"champion"} and len(written) == ROWS_PER_DAY - 15


def test_a_champion_trained_on_other_features_is_refused(fraud_world):
    engine = fraud_world["engine"]
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE model_versions SET features = :f WHERE model_name = 'fraud'").bindparams(sa.bindparam("f", type_=sa.JSON)),
            {"f": ["amount", "hour"]},
        )
    with pytest.raises(registry.RegistryError, match=r"was trained on features \['amount', 'hour'\]"):
        scoring.predict_interval(engine, get_spec("fraud"), start=DAY, end=DAY + timedelta(days=1), run_id="manual")
    assert count(engine, "predictions") == 0


def test_concurrent_runs_neither_deadlock_nor_mix(fraud_world, warehouse_url):
    """Two days at once, and the same day twice at once: every run succeeds and each day is exact."""
    from concurrent.futures import ThreadPoolExecutor

    from batchwatch.warehouse import make_engine

    spec = get_spec("fraud")
    days = [DAY, DAY + timedelta(days=1), DAY, DAY + timedelta(days=1)]
    for day in days[:2]:  # existing partitions, so every run has one to detach
        scoring.predict_interval(fraud_world["engine"], spec, start=day, end=day + timedelta(days=1), run_id="first")

    def run(day):
        engine = make_engine(warehouse_url)
        try:
            return scoring.predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"concurrent-{day:%d}", chunk_size=200)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(run, days))
    assert [summary["rows_scored"] for summary in summaries] == [ROWS_PER_DAY - 15] * 4
    written = predictions(fraud_world["engine"])
    assert len(written) == 2 * (ROWS_PER_DAY - 15)
    assert not written.duplicated(["entity_id", "ds"]).any()
    assert set(written["run_id"]) <= {f"concurrent-{DAY:%d}", f"concurrent-{DAY + timedelta(days=1):%d}"}
