"""A version's decision threshold and calibration in the registry, on SQLite and PostgreSQL.

Stored at registration, returned when the version loads, kept when the same training registers
again; a version registered before thresholds were stored labels at the spec's number (or 0.5).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

from batchwatch import registry
from batchwatch.demo.simulate import simulate
from batchwatch.modeling.decision import fit_threshold
from batchwatch.modeling.training import bootstrap_champion, read_labelled, train
from batchwatch.monitoring.drift import load_reference
from batchwatch.spec import parse_spec
from batchwatch.spec.model import AlertRate
from batchwatch.stats.calibration import Calibration, fit_calibration
from batchwatch.warehouse import load_frame, make_engine

WINDOW = {"start": "2026-09-01T00:00:00+00:00", "end": "2026-09-29T00:00:00+00:00", "labels_as_of": "2026-09-29T00:00:00+00:00", "rows": 4}
D1 = datetime(2026, 9, 1, tzinfo=timezone.utc)


@pytest.fixture
def engine(warehouse_url):
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


def estimator(seed: int = 0) -> DummyClassifier:
    return DummyClassifier(strategy="stratified", random_state=seed).fit(np.zeros((4, 1)), [0, 1, 0, 1])


def decision() -> tuple[dict, dict]:
    """A threshold policy and a calibration fitted on simulated validation scores, as training makes them."""
    rng = np.random.default_rng(0)
    probabilities = rng.beta(0.5, 8.0, 4_000)
    labels = (rng.random(4_000) < probabilities).astype(int)
    scores = probabilities**3
    return fit_threshold(AlertRate(alert_rate=0.01), labels, scores), fit_calibration(labels, scores).to_json()


def register(engine, spec, **kwargs) -> int:
    return registry.register(engine, spec, estimator(), metrics={}, trained_on=WINDOW, parent_version=None, **kwargs)


def stored(engine, version: int) -> dict:
    query = sa.text(
        "SELECT threshold, threshold_policy IS NULL AS no_policy, calibration IS NULL AS no_calibration FROM model_versions"
        " WHERE model_name = 'fraud' AND version = :v"
    )
    with engine.connect() as connection:
        return dict(connection.execute(query, {"v": version}).mappings().one())


def test_a_versions_threshold_and_calibration_are_stored_and_loaded(engine, fraud_spec) -> None:
    policy, calibration = decision()
    version = register(engine, fraud_spec, threshold_policy=policy, calibration=calibration)

    row = registry.get_version(engine, "fraud", version)
    assert row["threshold"] == policy["threshold"] and row["threshold_policy"] == policy
    assert row["calibration"] == calibration and row["calibration"]["method"] == "isotonic"
    assert stored(engine, version) == {"threshold": policy["threshold"], "no_policy": False, "no_calibration": False}
    loaded = registry.load_version(engine, "fraud", version, spec=fraud_spec)
    assert (loaded.threshold, loaded.calibration) == (policy["threshold"], calibration)
    assert registry.decision_of(engine, "fraud", version) == (policy["threshold"], calibration)
    assert Calibration.from_json(loaded.calibration) == Calibration.from_json(calibration)


def test_registering_the_same_training_again_keeps_the_versions_decision(engine, fraud_spec) -> None:
    policy, calibration = decision()
    first = register(engine, fraud_spec, threshold_policy=policy, calibration=calibration)
    other = {**policy, "threshold": 0.9}
    assert register(engine, fraud_spec, threshold_policy=other, calibration=None) == first
    assert registry.decision_of(engine, "fraud", first) == (policy["threshold"], calibration)


@pytest.mark.parametrize(
    ("threshold", "expected", "warned"),
    [
        pytest.param(0.35, 0.35, False, id="spec-number"),
        pytest.param({"alert_rate": 0.01}, registry.LEGACY_THRESHOLD, True, id="spec-policy"),
    ],
)
def test_a_version_without_a_threshold_labels_at_the_specs_number_or_half(
    engine, fraud_data, caplog, threshold, expected: float, warned: bool
) -> None:
    fraud_data["scoring"]["threshold"] = threshold
    spec = parse_spec(fraud_data)
    version = register(engine, spec)  # as versions registered before 0008 are
    assert stored(engine, version) == {"threshold": None, "no_policy": True, "no_calibration": True}
    with caplog.at_level(logging.WARNING, logger="batchwatch.registry.store"):
        loaded = registry.load_version(engine, "fraud", version, spec=spec)
    assert (loaded.threshold, loaded.calibration) == (expected, None)
    assert registry.decision_of(engine, "fraud", version, spec=spec) == (expected, None)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    if warned:
        assert warnings and warnings[0].startswith(f"fraud v{version} was registered before decision thresholds were stored: it labels at 0.5.")
        assert "Retrain it" in warnings[0]
    else:
        assert not warnings


def test_bootstrap_stores_the_threshold_and_calibration_training_chose(engine, fraud_spec) -> None:
    batch = simulate(D1, D1 + timedelta(days=3), rows_per_day=3_000, seed=8)
    load_frame(engine, "transactions", batch.transactions)
    load_frame(engine, "outcomes", batch.outcomes)
    end = D1 + timedelta(days=3)
    # The label delay is 4 days: the bootstrap reads labels as of the window's end, so it sees none. Read them later.
    as_of = end + timedelta(days=5)
    trained = train(fraud_spec, read_labelled(engine, fraud_spec, D1, end, as_of))
    version = bootstrap_champion(engine, fraud_spec, start=D1, end=as_of)

    row = registry.get_version(engine, "fraud", version)
    assert row["threshold_policy"] == trained.threshold_policy and row["threshold"] == trained.threshold
    assert row["calibration"] == trained.calibration.to_json()
    assert registry.load_alias(engine, "fraud", "champion", spec=fraud_spec).threshold == trained.threshold
    assert load_reference(engine, "fraud", version).threshold == trained.threshold
