"""fraud_weekly_retrain and fraud_rollback end to end, through dag.test(), on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from batchwatch import cli, queries, registry
from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import LABEL, bootstrap_champion, read_labelled, train
from batchwatch.promotion import retrain
from batchwatch.spec import get_spec

from .conftest import count, predictions, run_day

HISTORY_START = datetime(2026, 8, 24, tzinfo=timezone.utc)
CONCEPT_DRIFT = datetime(2026, 9, 7, tzinfo=timezone.utc)  # fraud moves to small daytime card-present purchases
AS_OF = datetime(2026, 9, 21, 3, tzinfo=timezone.utc)  # a Monday 03:00: the end of a weekly interval
NEXT_DAY = datetime(2026, 9, 21, tzinfo=timezone.utc)  # the nightly run after the retrain
ROWS_PER_DAY = 3_000
REGISTRY_TABLES = ("model_versions", "model_aliases", "model_events", "reference_profiles")


def run_week(conf: dict | None = None):
    from tools.runs import load_dag, run_interval

    dag = load_dag("fraud_weekly_retrain")
    for task in dag.tasks:
        task.retries = 0
    return run_interval(dag, AS_OF - timedelta(days=7), AS_OF, conf)


def run_rollback(conf: dict):
    from airflow.utils.state import DagRunState

    from tools.runs import load_dag

    dag = load_dag("fraud_rollback")
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf=conf)
    return run.state == DagRunState.SUCCESS


def champion(engine) -> int | None:
    return registry.alias_version(engine, "fraud", "champion")


def events(engine, event: str) -> list[dict]:
    query = sa.text("SELECT * FROM model_events WHERE model_name = 'fraud' AND event = :e ORDER BY id").columns(details=sa.JSON)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query, {"e": event}).mappings()]


def champion_asset_events() -> int:
    """Events of the champion Asset in Airflow's metadata database (shared by the session's tests: compare deltas)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = sa.select(sa.func.count()).select_from(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        return session.scalar(query.where(AssetModel.uri == "batchwatch://fraud/champion"))


def registry_state(engine) -> dict[str, int]:
    return {table: count(engine, table) for table in REGISTRY_TABLES}


@pytest.fixture
def stale_world(engine, airflow_db):
    """A champion trained before a concept drift, and three weeks of drifted, labelled traffic after it."""
    simulate_into(
        engine, start=HISTORY_START, end=NEXT_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, labels_as_of=AS_OF,
        scenarios=(Scenario("concept_drift", CONCEPT_DRIFT),),
    )
    version = bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=CONCEPT_DRIFT)
    return {"engine": engine, "champion": version}


def test_after_concept_drift_the_retrained_challenger_is_promoted_and_scores_next(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    state, results = run_week({"training_window_days": 14})
    assert state == "success"
    candidate = results["train"]
    assert candidate["champion_version"] == stale and candidate["version"] == stale + 1
    assert registry.get_version(engine, "fraud", stale + 1)["parent_version"] == stale

    gates = {gate["name"]: gate for gate in results["validate"]["gates"]}
    difference = gates["auc_non_inferiority"]
    assert difference["passed"] and difference["value"] > 0.05, "the stale champion has lost its edge on the new pattern"
    assert gates["roc_auc_floor"]["passed"] and gates["holdout_out_of_time"]["passed"]
    assert results["validate"]["all_passed"]
    assert results["promote"]["decision"] == "promoted"
    assert champion(engine) == stale + 1

    promoted = events(engine, "promoted")
    assert len(promoted) == 1 and promoted[0]["previous_version"] == stale
    assert {gate["name"] for gate in promoted[0]["details"]["gates"]} >= {"roc_auc_floor", "brier_ceiling", "auc_non_inferiority"}
    assert promoted[0]["actor"].startswith("fraud_weekly_retrain/")
    assert count(engine, "reference_profiles", "model_version = :v", v=stale + 1) > 0, "the drift check follows the new champion"

    state, results = run_day("fraud_nightly_predict", NEXT_DAY)
    assert state == "success" and results["predict"]["model_version"] == stale + 1
    scored = predictions(engine, ds=NEXT_DAY.date())
    # The new champion serves; the guard keeps the previous one scoring in shadow beside it for release.guard_days.
    assert set(scored.loc[scored["role"] == "champion", "model_version"]) == {stale + 1}
    assert set(scored.loc[scored["role"] == "shadow", "model_version"]) == {stale} and results["predict"]["shadow_version"] == stale
    assert events(engine, "guard_started")[0]["version"] == stale + 1


def test_a_challenger_trained_on_shuffled_labels_is_rejected_with_the_numbers(stale_world):
    engine = stale_world["engine"]
    assert run_week({"training_window_days": 14})[0] == "success"  # a good champion to be measured against
    good = champion(engine)
    spec = get_spec("fraud")
    labelled = read_labelled(engine, spec, CONCEPT_DRIFT, AS_OF - timedelta(days=7), AS_OF)
    labelled[LABEL] = np.random.default_rng(0).permutation(labelled[LABEL].to_numpy())
    bad = train(spec, labelled)
    version = registry.register(engine, spec, bad.pipeline, metrics=bad.metrics, parent_version=good, reference=bad.reference,
                                trained_on={"start": CONCEPT_DRIFT.isoformat(), "end": (AS_OF - timedelta(days=7)).isoformat(),
                                            "rows": len(labelled)})

    events_before = champion_asset_events()
    state, results = run_week({"candidate_version": version, "training_window_days": 14})
    assert state == "success", "a rejection is a decision, not a failure"
    assert champion_asset_events() == events_before, "no new champion, no asset event for work that follows it"
    assert champion(engine) == good
    assert "decision" not in results["promote"], "promote is skipped: no champion asset event"
    assert results["promote"]["outcome"]["decision"] == "rejected", "the skipped task records what it decided"

    rejected = events(engine, "rejected")
    assert len(rejected) == 1 and rejected[0]["version"] == version
    failed = {gate["name"]: gate for gate in rejected[0]["details"]["gates"] if gate["passed"] is False}
    assert {"roc_auc_floor", "auc_non_inferiority"} <= set(failed)
    assert failed["roc_auc_floor"]["value"] < 0.6 and failed["roc_auc_floor"]["threshold"] == spec.retrain.gates.min_roc_auc
    assert failed["auc_non_inferiority"]["value"] < -0.1, "the AUC difference is recorded"
    assert "roc_auc_floor" in rejected[0]["reason"]
    assert [e["version"] for e in events(engine, "promoted")] == [good]

    # Forcing it past the gates works only with a reason, and says so in the audit log.
    state, results = run_week({"candidate_version": version, "force_promote": True, "force_reason": "incident drill", "training_window_days": 14})
    assert state == "success" and results["promote"]["decision"] == "forced" and champion(engine) == version
    assert champion_asset_events() == events_before + 1
    (forced,) = events(engine, "forced")
    assert "incident drill" in forced["reason"] and "roc_auc_floor" in forced["reason"] and forced["details"]["forced"] is True


def test_dry_run_changes_nothing(stale_world):
    engine = stale_world["engine"]
    before = registry_state(engine)
    state, results = run_week({"dry_run": True, "training_window_days": 14})
    assert state == "success"
    assert results["train"]["dry_run"] and results["train"]["version"] is None
    gates = {gate["name"]: gate["passed"] for gate in results["validate"]["gates"]}
    assert results["validate"]["all_passed"] and gates["holdout_out_of_time"] is True, "it would have been promoted"
    assert registry_state(engine) == before and champion(engine) == stale_world["champion"]

    # A registered version validated in a dry run is not promoted either.
    candidate = retrain.train_candidate(engine, get_spec("fraud"), as_of=AS_OF, window_days=14, dry_run=False, run_id="manual")
    before = registry_state(engine)
    state, results = run_week({"dry_run": True, "candidate_version": candidate.version, "training_window_days": 14})
    assert state == "success" and results["validate"]["all_passed"]
    assert registry_state(engine) == before and champion(engine) == stale_world["champion"]


def test_force_promote_needs_a_reason(stale_world):
    engine = stale_world["engine"]
    before = registry_state(engine)
    state, _ = run_week({"force_promote": True, "force_reason": "  "})
    assert state == "failed"
    assert registry_state(engine) == before


def test_rollback_restores_the_previous_champion_for_the_next_nightly_run(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    assert run_week({"training_window_days": 14})[0] == "success"
    assert champion(engine) == stale + 1

    assert run_rollback({"reason": "new model flags too many grocery purchases"})
    assert champion(engine) == stale
    (back,) = events(engine, "rollback")
    assert (back["version"], back["previous_version"], back["reason"]) == (stale, stale + 1, "new model flags too many grocery purchases")
    assert back["actor"].startswith("fraud_rollback/")

    state, results = run_day("fraud_nightly_predict", NEXT_DAY)
    assert state == "success" and results["predict"]["model_version"] == stale

    # The command does the same, to a named version, and refuses to run without a reason.
    cli.main(
        ["--warehouse", engine.url.render_as_string(hide_password=False), "rollback", "fraud", "--to", str(stale + 1), "--reason", "false alarm"]
    )
    assert champion(engine) == stale + 1
    with pytest.raises(SystemExit):
        cli.main(["--warehouse", engine.url.render_as_string(hide_password=False), "rollback", "fraud"])
    history = queries.alias_history(engine, "fraud")
    # The promotion started a guard: the previous champion became the challenger, scoring in shadow, until the rollback ended it.
    assert [event.event for event in history] == ["set_champion", "promoted", "set_challenger", "guard_started", "rollback", "rollback"]


def test_two_concurrent_promotions_cannot_both_win(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    spec = get_spec("fraud")
    candidates = [retrain.train_candidate(engine, spec, as_of=AS_OF, window_days=days, dry_run=False, run_id=f"r{days}") for days in (12, 14)]
    validated = [(c, retrain.validate_candidate(engine, spec, c)) for c in candidates]
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def promote(candidate, results):
        start.wait()
        try:
            outcomes.append(retrain.promote_candidate(engine, spec, candidate, results, force_reason=None, actor="test"))
        except retrain.PromotionRefused as error:
            outcomes.append(error)

    threads = [threading.Thread(target=promote, args=pair) for pair in validated]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, retrain.PromotionRefused)]
    assert len(won) == 1 and len(refused) == 1
    assert "champion changed" in str(refused[0])
    assert champion(engine) == won[0]["version"] != stale
    assert len(events(engine, "promoted")) == 1


def test_a_shadowing_challenger_is_judged_on_its_agreement_with_the_champion(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    spec = get_spec("fraud")
    challenger = retrain.train_candidate(engine, spec, as_of=AS_OF, window_days=14, dry_run=False, run_id="manual")
    registry.set_alias(engine, "fraud", "challenger", challenger.version, reason="shadow for a night", actor="test")
    assert run_day("fraud_nightly_predict", NEXT_DAY)[0] == "success"

    state, results = run_week({"candidate_version": challenger.version, "training_window_days": 14})
    assert state == "success"
    shadow = next(gate for gate in results["validate"]["gates"] if gate["name"] == "shadow_agreement")
    rows = predictions(engine, ds=NEXT_DAY.date()).pivot(index="entity_id", columns="role", values="predicted_label")
    assert len(rows) == count(engine, "predictions", "role = 'shadow'") >= spec.retrain.gates.shadow_min_rows
    assert shadow["value"] == pytest.approx((rows["champion"] == rows["shadow"]).mean(), abs=1e-12)
    assert shadow["passed"] == (shadow["value"] >= spec.retrain.gates.shadow_min_agreement)
    expected = challenger.version if results["validate"]["all_passed"] else stale
    assert champion(engine) == expected
