"""Rollbacks walk back the champion history and are recorded on the version; re-registering the same training is a no-op.

Real registry on SQLite and PostgreSQL; the artifacts are small fitted sklearn estimators whose
bytes differ by their random_state.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

from batchwatch import cli, queries, registry
from batchwatch.promotion import gates, retrain
from batchwatch.warehouse import make_engine

WINDOW = {"start": "2026-09-01T00:00:00+00:00", "end": "2026-09-29T00:00:00+00:00", "labels_as_of": "2026-09-29T00:00:00+00:00"}


@pytest.fixture
def engine(warehouse_url, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


def estimator(seed: int) -> DummyClassifier:
    return DummyClassifier(strategy="stratified", random_state=seed).fit(np.zeros((4, 1)), [0, 1, 0, 1])


def register(engine, spec, seed: int, trained_on: dict | None = None) -> int:
    trained_on = {**WINDOW, "rows": 4} if trained_on is None else trained_on
    return registry.register(engine, spec, estimator(seed), metrics={}, trained_on=trained_on, parent_version=None)


def prior(labels: list[int]) -> DummyClassifier:
    """Same parameters, different fitted state: different bytes."""
    return DummyClassifier(strategy="prior").fit(np.zeros((len(labels), 1)), labels)


def rows(engine, query: str, **params) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.text(query), params).mappings()]


def champion(engine) -> int | None:
    return registry.alias_version(engine, "fraud", "champion")


def marked(engine) -> dict[int, str | None]:
    return {
        row["version"]: row["rolled_back_reason"] for row in rows(engine, "SELECT version, rolled_back_reason FROM model_versions ORDER BY version")
    }


@pytest.fixture
def three_champions(engine, fraud_spec):
    """v1, v2, v3 registered (different bytes) and made champion in turn."""
    for seed in (1, 2, 3):
        version = register(engine, fraud_spec, seed, {**WINDOW, "end": f"2026-09-{28 + seed}T00:00:00+00:00"})
        registry.set_alias(engine, "fraud", "champion", version, reason=f"promote v{version}", actor="test")
    assert champion(engine) == 3
    return engine


def test_registering_the_same_bytes_and_window_again_returns_that_version_and_records_it(engine, fraud_spec):
    assert register(engine, fraud_spec, seed=1) == 1
    assert register(engine, fraud_spec, seed=1, trained_on={**WINDOW, "rows": 4, "run_id": "second run"}) == 1
    assert [row["version"] for row in rows(engine, "SELECT version FROM model_versions")] == [1]
    (again,) = rows(engine, "SELECT event, version, reason, actor, details FROM model_events")
    assert (again["event"], again["version"], again["actor"]) == ("registered_again", 1, "registry")
    assert again["reason"] == "the same training as v1 (same bytes): no new version"
    details = again["details"] if isinstance(again["details"], dict) else json.loads(again["details"])
    assert details["trained_on"]["run_id"] == "second run"

    # The record outlived its file: registering the same bytes again restores it.
    path = registry.artifact_path(registry.get_version(engine, "fraud", 1)["artifact_uri"])
    path.unlink()
    assert register(engine, fraud_spec, seed=1) == 1
    assert registry.load_version(engine, "fraud", 1).pipeline.random_state == 1

    # Another window or other bytes are another version.
    assert register(engine, fraud_spec, seed=1, trained_on={**WINDOW, "end": "2026-09-30T00:00:00+00:00"}) == 2
    assert register(engine, fraud_spec, seed=2) == 3


def test_the_same_training_rows_and_estimator_are_the_same_version_even_when_the_bytes_differ(engine, fraud_spec):
    """joblib pickles shared objects by identity: one fit dumped in two processes can differ in bytes."""
    fingerprinted = {**WINDOW, registry.DATA_FINGERPRINT: "ab" * 32}
    first = registry.register(engine, fraud_spec, prior([0, 1, 1]), metrics={}, trained_on=fingerprinted, parent_version=None)
    again = registry.register(engine, fraud_spec, prior([0, 0, 1]), metrics={}, trained_on=fingerprinted, parent_version=None)
    assert again == first == 1
    (event,) = rows(engine, "SELECT reason FROM model_events WHERE event = 'registered_again'")
    assert "training rows abababababab, estimator and features" in event["reason"]
    assert registry.load_version(engine, "fraud", 1).pipeline.class_prior_.tolist() == pytest.approx([1 / 3, 2 / 3]), "the first artifact stays"

    # Other rows, another estimator, or no fingerprint at all (bytes must then match) are another version.
    other_rows = {**fingerprinted, registry.DATA_FINGERPRINT: "cd" * 32}
    assert registry.register(engine, fraud_spec, prior([0, 0, 1]), metrics={}, trained_on=other_rows, parent_version=None) == 2
    other_estimator = DummyClassifier(strategy="most_frequent").fit(np.zeros((3, 1)), [0, 1, 1])
    assert registry.register(engine, fraud_spec, other_estimator, metrics={}, trained_on=fingerprinted, parent_version=None) == 3
    assert registry.register(engine, fraud_spec, prior([0, 0, 0, 1]), metrics={}, trained_on=WINDOW, parent_version=None) == 4


def test_the_data_fingerprint_is_the_same_in_a_fresh_process_and_follows_every_value():
    frame = pd.DataFrame({"id": ["a", "b", None], "amount": [1.5, None, 3.0], "label": [0, 1, 0]})
    code = (
        "import pandas as pd; from batchwatch.promotion.retrain import data_fingerprint; "
        "print(data_fingerprint(pd.DataFrame({'id': ['a', 'b', None], 'amount': [1.5, None, 3.0], 'label': [0, 1, 0]})))"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert retrain.data_fingerprint(frame) == fresh
    changed = frame.assign(amount=[1.5, None, 3.5])
    assert retrain.data_fingerprint(changed) != fresh
    assert retrain.data_fingerprint(frame.rename(columns={"amount": "amt"})) != fresh


def test_each_rollback_goes_one_step_further_back_and_the_last_one_fails_clearly(three_champions, fraud_spec):
    engine = three_champions
    outcome = retrain.rollback(engine, "fraud", to_version=None, reason="v3 flags too much", actor="test")
    assert (outcome["version"], outcome["previous_champion"], champion(engine)) == (2, 3, 2)
    assert marked(engine) == {1: None, 2: None, 3: "v3 flags too much"}

    url = engine.url.render_as_string(hide_password=False)
    cli.main(["--warehouse", url, "rollback", "fraud", "--reason", "v2 too"])
    assert champion(engine) == 1, "not back to v3, which was rolled back from"
    assert marked(engine) == {1: None, 2: "v2 too", 3: "v3 flags too much"}

    with pytest.raises(retrain.PromotionRefused, match=r"v1 has no earlier champion to roll back to.*rollback --to VERSION"):
        retrain.rollback(engine, "fraud", to_version=None, reason="and v1?", actor="test")
    assert champion(engine) == 1 and marked(engine)[1] is None, "a refused rollback changes nothing"
    history = queries.alias_history(engine, "fraud")
    assert [event.event for event in history] == ["set_champion"] * 3 + ["rollback"] * 2
    assert [(event.version, event.previous_version) for event in history[-2:]] == [(2, 3), (1, 2)]


def test_rollback_to_a_named_version_restores_it_and_lifts_its_mark(three_champions, fraud_spec):
    engine = three_champions
    retrain.rollback(engine, "fraud", to_version=None, reason="v3 flags too much", actor="test")
    retrain.rollback(engine, "fraud", to_version=3, reason="it was the data, not v3", actor="test")
    assert champion(engine) == 3 and marked(engine) == {1: None, 2: "it was the data, not v3", 3: None}
    (restored,) = rows(engine, "SELECT details FROM model_events WHERE event = 'rollback' AND version = 3")
    details = restored["details"] if isinstance(restored["details"], dict) else json.loads(restored["details"])
    assert details == {"from_version": 2, "reinstated": [3]}

    # The same bytes under another number change nothing; an unknown version is named.
    same_bytes = register(engine, fraud_spec, seed=3, trained_on={**WINDOW, "end": "2026-10-09T00:00:00+00:00"})
    with pytest.raises(retrain.PromotionRefused, match=f"v{same_bytes} holds the same artifact as the champion v3"):
        retrain.rollback(engine, "fraud", to_version=same_bytes, reason="r", actor="test")
    with pytest.raises(retrain.PromotionRefused, match="has no version 99"):
        retrain.rollback(engine, "fraud", to_version=99, reason="r", actor="test")
    assert champion(engine) == 3


def test_the_gate_names_the_version_rolled_back_from_and_an_identical_copy(three_champions, fraud_spec):
    engine = three_champions
    retrain.rollback(engine, "fraud", to_version=None, reason="v3 flags too much", actor="test")
    sha3 = registry.get_version(engine, "fraud", 3)["sha256"]
    copy = register(engine, fraud_spec, seed=3, trained_on={**WINDOW, "end": "2026-10-09T00:00:00+00:00"})

    for version in (3, copy, None):  # the version itself, a retrained copy, a dry run of the same bytes
        found = registry.rolled_back_from(engine, "fraud", version=version, sha256=sha3)
        result = gates.not_rolled_back(found, version=version, sha256=sha3)
        assert result.passed is False and result.value == 1
        assert "v3" in result.detail and "'v3 flags too much'" in result.detail and "force_promote" in result.detail
    assert f"the same artifact as v{copy}" in gates.not_rolled_back(
        registry.rolled_back_from(engine, "fraud", version=copy, sha256=sha3), version=copy, sha256=sha3
    ).detail

    sha1 = registry.get_version(engine, "fraud", 1)["sha256"]
    clean = gates.not_rolled_back(registry.rolled_back_from(engine, "fraud", version=1, sha256=sha1), version=1, sha256=sha1)
    assert clean.passed is True and "never rolled back from" in clean.detail


def test_versions_lists_the_rollback_and_rollback_help_says_what_a_second_one_does(three_champions, capsys):
    engine = three_champions
    retrain.rollback(engine, "fraud", to_version=None, reason="v3 flags too much", actor="test")
    listed = {row.version: row for row in queries.versions(engine, "fraud")}
    assert listed[3].rolled_back_at is not None and listed[2].rolled_back_at is None and listed[2].aliases == ["champion"]

    with pytest.raises(SystemExit) as exited:
        cli.main(["rollback", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "each rollback goes one step further back" in text and "two rollbacks give v2, then v1" in text
    assert "force_promote" in text
