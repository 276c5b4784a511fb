"""A rollback sticks: the next weekly retrain does not promote the version rolled back from, unless forced.

Through fraud_weekly_retrain and fraud_rollback (dag.test()), on PostgreSQL and on SQLite. Rerunning
the same week retrains on the same data with the same seed: the same bytes, which registration
returns as the version it already is.
"""

from __future__ import annotations

from datetime import timedelta

from batchwatch import registry
from batchwatch.modeling.training import read_labelled, train
from batchwatch.spec import get_spec

from . import test_weekly_retrain
from .conftest import count
from .test_weekly_retrain import AS_OF, champion, events, run_rollback, run_week

# The retrain tests' world: a champion from before a concept drift and three weeks of drifted traffic.
stale_world = test_weekly_retrain.stale_world

WEEK = {"training_window_days": 14}


def gate(results: dict, name: str) -> dict:
    return next(g for g in results["validate"]["gates"] if g["name"] == name)


def test_a_rerun_of_the_week_registers_no_new_version_and_changes_nothing(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    assert run_week(WEEK)[0] == "success" and champion(engine) == stale + 1
    versions = count(engine, "model_versions")

    state, results = run_week(WEEK)
    assert state == "success"
    assert results["train"]["version"] == stale + 1 and count(engine, "model_versions") == versions
    (again,) = events(engine, "registered_again")
    assert again["version"] == stale + 1
    assert results["promote"]["outcome"]["decision"] == "unchanged", "nothing changed: promote is skipped, no champion asset event"
    assert champion(engine) == stale + 1 and len(events(engine, "promoted")) == 1


def test_the_retrain_after_a_rollback_does_not_promote_the_version_rolled_back_from_unless_forced(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    assert run_week(WEEK)[1]["promote"]["decision"] == "promoted"
    promoted = stale + 1

    assert run_rollback({"reason": "new model flags too many grocery purchases"})
    assert champion(engine) == stale
    row = registry.get_version(engine, "fraud", promoted)
    assert row["rolled_back_at"] is not None and row["rolled_back_reason"] == "new model flags too many grocery purchases"

    # The scheduled retrain of the same week reproduces the same bytes: it is the version rolled back from.
    state, results = run_week(WEEK)
    assert state == "success", "a refusal is a decision, not a failure"
    assert results["train"]["version"] == promoted and results["promote"]["outcome"]["decision"] == "rejected"
    refused = gate(results, "not_rolled_back")
    assert refused["passed"] is False and f"v{promoted} was rolled back from" in refused["detail"]
    assert "new model flags too many grocery purchases" in refused["detail"] and "force_promote" in refused["detail"]
    assert champion(engine) == stale
    (rejected,) = events(engine, "rejected")
    assert rejected["version"] == promoted and "not_rolled_back" in rejected["reason"]

    # The same bytes registered under another number (another window) are refused for the same reason.
    spec = get_spec("fraud")
    start, end = AS_OF - timedelta(days=14), AS_OF
    labelled = read_labelled(engine, spec, start, end, AS_OF)
    copy = registry.register(
        engine, spec, train(spec, labelled).pipeline, metrics={}, parent_version=stale,
        trained_on={"start": start.isoformat(), "end": end.isoformat(), "labels_as_of": (AS_OF + timedelta(hours=1)).isoformat()},
    )
    assert copy != promoted and registry.get_version(engine, "fraud", copy)["sha256"] == row["sha256"]
    state, results = run_week({**WEEK, "candidate_version": copy})
    assert state == "success" and results["promote"]["outcome"]["decision"] == "rejected" and champion(engine) == stale
    assert f"the same artifact as v{copy}" in gate(results, "not_rolled_back")["detail"]

    # Someone says so: forced, audited, and the mark is lifted.
    state, results = run_week({**WEEK, "force_promote": True, "force_reason": "the grocery spike was a data bug"})
    assert state == "success" and results["promote"]["decision"] == "forced" and champion(engine) == promoted
    (forced,) = events(engine, "forced")
    assert "not_rolled_back" in forced["reason"] and "the grocery spike was a data bug" in forced["reason"]
    assert forced["details"]["reinstated"] == [promoted]
    assert registry.get_version(engine, "fraud", promoted)["rolled_back_at"] is None


def test_a_dry_run_reports_that_it_would_be_refused(stale_world):
    engine, stale = stale_world["engine"], stale_world["champion"]
    assert run_week(WEEK)[0] == "success"
    assert run_rollback({"reason": "too many alerts"})
    state, results = run_week({**WEEK, "dry_run": True})
    assert state == "success" and results["train"]["version"] is None
    assert gate(results, "not_rolled_back")["passed"] is False
    assert champion(engine) == stale
