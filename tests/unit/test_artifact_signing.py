"""Signed artifacts: with BATCHWATCH_ARTIFACT_KEY set, a writer of model_versions cannot make a worker unpickle its file."""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.data.features import build_features
from batchwatch.demo.simulate import simulate
from batchwatch.modeling.estimators import hist_gradient_boosting
from batchwatch.registry import ArtifactIntegrityError, UnsignedArtifact
from batchwatch.registry.artifacts import _warn_unsigned
from batchwatch.warehouse import make_engine

KEY = "a-key-the-warehouse-never-sees"
D1 = datetime(2024, 5, 6, tzinfo=timezone.utc)
TRAINED_ON = {"start": "2024-05-06T00:00:00+00:00", "end": "2024-05-07T00:00:00+00:00", "rows": 2000}


@pytest.fixture(scope="module")
def fitted(fraud_spec):
    batch = simulate(D1, D1 + timedelta(days=1), rows_per_day=2000, seed=23)
    pipeline = hist_gradient_boosting(fraud_spec, max_iter=20)
    return pipeline.fit(build_features(batch.transactions, fraud_spec), batch.outcomes["label"].to_numpy())


@pytest.fixture
def engine(warehouse_url):
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


def _register(engine, spec, pipeline, trained_on=TRAINED_ON) -> int:
    return registry.register(engine, spec, pipeline, metrics={}, trained_on=trained_on, parent_version=None)


def _row(engine, version: int = 1) -> dict:
    return registry.get_version(engine, "fraud", version)


def _record(engine, version: int, **values) -> None:
    """What anyone who can write model_versions can do."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE model_versions SET {assignments} WHERE model_name = 'fraud' AND version = :v"), {**values, "v": version})


def test_a_signed_artifact_loads_and_its_signature_is_the_hmac_of_its_bytes(engine, fraud_spec, fitted, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    _register(engine, fraud_spec, fitted)
    row = _row(engine)
    blob = registry.artifact_path(row["artifact_uri"]).read_bytes()
    assert row["signature"] == hmac.new(KEY.encode(), blob, hashlib.sha256).hexdigest()
    assert registry.load_version(engine, "fraud", 1).version == 1


def test_a_swapped_file_with_its_sha256_is_refused_when_a_key_is_set(engine, fraud_spec, fitted, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    _register(engine, fraud_spec, fitted)
    path = registry.artifact_path(_row(engine)["artifact_uri"])
    forged, forged_sha256 = registry.dump_artifact(hist_gradient_boosting(fraud_spec))  # another valid pickle
    path.write_bytes(forged)
    _record(engine, 1, sha256=forged_sha256)
    with pytest.raises(ArtifactIntegrityError, match=r"artifact of fraud v1 at .* does not match its signature") as raised:
        registry.load_version(engine, "fraud", 1)
    assert "refusing to unpickle" in str(raised.value) and not isinstance(raised.value, UnsignedArtifact)
    # Without the key the sha256 is all there is, and the forgery loads: the hole the key closes.
    monkeypatch.delenv("BATCHWATCH_ARTIFACT_KEY")
    assert registry.load_version(engine, "fraud", 1).sha256 == forged_sha256


def test_clearing_the_signature_does_not_get_a_file_past_the_key(engine, fraud_spec, fitted, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    _register(engine, fraud_spec, fitted)
    _record(engine, 1, signature=None)
    with pytest.raises(UnsignedArtifact, match=r"artifact of fraud v1 at .* has no signature, and BATCHWATCH_ARTIFACT_KEY is set") as raised:
        registry.load_version(engine, "fraud", 1)
    assert "bin/batchwatch sign MODEL" in str(raised.value)


def test_another_key_is_refused(engine, fraud_spec, fitted, monkeypatch):
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    _register(engine, fraud_spec, fitted)
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", "another key")
    with pytest.raises(ArtifactIntegrityError, match="signed with another key"):
        registry.load_version(engine, "fraud", 1)


def test_versions_registered_before_the_key_are_signed_once_if_their_files_are_intact(engine, fraud_spec, fitted, monkeypatch):
    _register(engine, fraud_spec, fitted)
    _register(engine, fraud_spec, hist_gradient_boosting(fraud_spec), trained_on={**TRAINED_ON, "rows": 1})
    with registry.artifact_path(_row(engine, 2)["artifact_uri"]).open("ab") as handle:
        handle.write(b"\0")
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    with pytest.raises(UnsignedArtifact):
        registry.load_version(engine, "fraud", 1)
    assert registry.sign_versions(engine, "fraud") == [1]
    assert registry.load_version(engine, "fraud", 1).version == 1
    assert _row(engine, 2)["signature"] is None
    assert registry.sign_versions(engine, "fraud") == [], "a signed version is not signed again; a changed file never"


def test_registering_the_same_training_again_signs_an_unsigned_version(engine, fraud_spec, fitted, monkeypatch):
    _register(engine, fraud_spec, fitted)
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    assert _register(engine, fraud_spec, fitted) == 1
    assert registry.load_version(engine, "fraud", 1).version == 1


def test_without_a_key_artifacts_load_as_before_with_one_warning(engine, fraud_spec, fitted, monkeypatch, caplog):
    monkeypatch.delenv("BATCHWATCH_ARTIFACT_KEY", raising=False)
    _warn_unsigned.cache_clear()
    _register(engine, fraud_spec, fitted)
    assert _row(engine)["signature"] is None
    with caplog.at_level(logging.WARNING, logger="batchwatch.registry.artifacts"):
        for _ in range(2):
            registry.load_version(engine, "fraud", 1)
    warnings = [record.getMessage() for record in caplog.records if record.name == "batchwatch.registry.artifacts"]
    assert len(warnings) == 1 and "BATCHWATCH_ARTIFACT_KEY is not set" in warnings[0]


def test_a_dry_run_candidate_carries_its_signature_to_validate(engine, fraud_spec, fitted, monkeypatch):
    """A dry run's candidate carries its own signature through XCom: validate loads it with the key set."""
    from batchwatch.promotion.retrain import Candidate, _load_candidate, _scratch_artifact

    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    uri, sha256, signature = _scratch_artifact("fraud", "dry run", fitted)
    candidate = Candidate("fraud", None, uri, sha256, None, "", "", "", True, {}, 0.5, signature)
    assert _load_candidate(engine, fraud_spec, Candidate.from_dict(candidate.to_dict())) is not None
    unsigned = Candidate.from_dict({**candidate.to_dict(), "signature": None})
    with pytest.raises(UnsignedArtifact, match="the dry run of fraud"):
        _load_candidate(engine, fraud_spec, unsigned)


def test_the_signature_column_downgrades_in_place_under_foreign_keys(sqlite_engine, fraud_spec, fitted, monkeypatch):
    """SQLite: model_versions is referenced, so 0010's downgrade drops the column in place rather than recreating the table."""
    from alembic import command
    from alembic.config import Config

    from batchwatch.warehouse import migrate
    from batchwatch.warehouse.engine import MIGRATIONS

    monkeypatch.setenv("BATCHWATCH_ARTIFACT_KEY", KEY)
    _register(sqlite_engine, fraud_spec, fitted)
    registry.set_alias(sqlite_engine, "fraud", "champion", 1, reason="test", actor="test")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with sqlite_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")
    assert "signature" not in {column["name"] for column in sa.inspect(sqlite_engine).get_columns("model_versions")}
    migrate(sqlite_engine)
    assert _row(sqlite_engine)["signature"] is None
