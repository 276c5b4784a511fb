"""The model registry on an SQLite warehouse: versions, checksummed artifacts, aliases and audit events."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.data.features import build_features
from batchwatch.demo.simulate import simulate
from batchwatch.modeling.estimators import hist_gradient_boosting
from batchwatch.modeling.training import LABEL
from batchwatch.registry import ArtifactIntegrityError, RegistryError

D1 = datetime(2024, 5, 6, tzinfo=timezone.utc)
METRICS = {"validation": {"roc_auc": 0.91, "brier": 0.02, "rows": 400}, "fit_seconds": 0.1}
TRAINED_ON = {"start": "2024-05-06T00:00:00+00:00", "end": "2024-05-07T00:00:00+00:00", "rows": 2000}


@pytest.fixture(scope="module")
def sample(fraud_spec) -> pd.DataFrame:
    """Features of 2000 clean simulated rows."""
    batch = simulate(D1, D1 + timedelta(days=1), rows_per_day=2000, seed=23)
    frame = batch.transactions.copy()
    frame[LABEL] = batch.outcomes["label"].to_numpy()
    return frame


@pytest.fixture(scope="module")
def fitted(fraud_spec, sample):
    pipeline = hist_gradient_boosting(fraud_spec, max_iter=20)
    pipeline.fit(build_features(sample, fraud_spec), sample[LABEL].to_numpy())
    return pipeline


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(root))
    return root


def register(engine, spec, pipeline, parent_version=None, trained_on=TRAINED_ON, **kwargs) -> int:
    return registry.register(
        engine, spec, pipeline, metrics=METRICS, trained_on=trained_on, parent_version=parent_version, **kwargs
    )


def window(days: int) -> dict:
    """TRAINED_ON with a window `days` longer: the same bytes trained on another window are another version."""
    return {**TRAINED_ON, "end": (D1 + timedelta(days=1 + days)).isoformat()}


def events(engine) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT model_name, event, version, previous_version, reason, actor, details FROM model_events ORDER BY id")
        ).mappings()
        return [{**row, "details": json.loads(row["details"])} for row in rows]


def artifact(engine, version: int, model_name: str = "fraud") -> Path:
    return registry.artifact_path(registry.get_version(engine, model_name, version)["artifact_uri"])


def aliases(engine, model_name: str = "fraud") -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT alias, version FROM model_aliases WHERE model_name = :m"), {"m": model_name})
        return dict(rows.all())


def test_register_numbers_versions_and_records_metadata(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    assert register(sqlite_engine, fraud_spec, fitted) == 1
    assert register(sqlite_engine, fraud_spec, fitted, parent_version=1, trained_on=window(1)) == 2

    row = registry.get_version(sqlite_engine, "fraud", 2)
    path = artifacts / "fraud" / f"v2-{row['sha256'][:16]}" / "pipeline.joblib"
    assert row["artifact_uri"] == path.as_uri()
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["features"] == fraud_spec.model_features
    assert row["pipeline_steps"] == [
        {"name": "encode", "class": "sklearn.compose._column_transformer.ColumnTransformer"},
        {"name": "model", "class": "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier"},
    ]
    params = row["params"]
    assert params["factory"] == "batchwatch.training.hist_gradient_boosting"
    assert (params["max_iter"], params["learning_rate"], params["max_leaf_nodes"]) == (20, 0.2, 8)
    assert (params["early_stopping"], params["random_state"]) == (False, 0)
    assert params["categorical_features"] == repr([True] * 3 + [False] * 8)
    assert row["metrics"] == METRICS
    assert row["trained_on"] == window(1)
    assert row["parent_version"] == 1
    assert registry.get_version(sqlite_engine, "fraud", 1)["parent_version"] is None
    assert row["created_at"] is not None

    # Same pipeline, same bytes, another window: the two versions are separate files with the same checksum.
    first = registry.get_version(sqlite_engine, "fraud", 1)
    assert first["sha256"] == row["sha256"]
    assert sorted(p.relative_to(artifacts).as_posix() for p in artifacts.rglob("*") if p.is_file()) == [
        f"fraud/v1-{row['sha256'][:16]}/pipeline.joblib",
        f"fraud/v2-{row['sha256'][:16]}/pipeline.joblib",
    ]


def test_versions_are_numbered_per_model(sqlite_engine, fraud_spec, fitted, artifacts, fraud_data) -> None:
    from batchwatch.spec import parse_spec

    fraud_data["name"] = "fraud_eu"
    other = parse_spec(fraud_data)
    assert register(sqlite_engine, fraud_spec, fitted) == 1
    assert register(sqlite_engine, other, fitted) == 1
    assert register(sqlite_engine, fraud_spec, fitted, trained_on=window(1)) == 2
    assert artifact(sqlite_engine, 1, "fraud_eu").is_relative_to(artifacts / "fraud_eu")
    assert artifact(sqlite_engine, 1, "fraud_eu").is_file()


def test_explicit_root_wins_over_the_environment(sqlite_engine, fraud_spec, fitted, artifacts, tmp_path) -> None:
    root = tmp_path / "elsewhere"
    register(sqlite_engine, fraud_spec, fitted, root=root)
    assert artifact(sqlite_engine, 1).is_relative_to(root / "fraud") and artifact(sqlite_engine, 1).is_file()
    assert not artifacts.exists()
    assert registry.load_version(sqlite_engine, "fraud", 1).version == 1


def test_load_version_returns_the_same_predictions(sqlite_engine, fraud_spec, fitted, sample, artifacts) -> None:
    register(sqlite_engine, fraud_spec, fitted)
    loaded = registry.load_version(sqlite_engine, "fraud", 1)
    assert (loaded.model_name, loaded.version) == ("fraud", 1)
    assert loaded.sha256 == registry.get_version(sqlite_engine, "fraud", 1)["sha256"]
    assert loaded.pipeline is not fitted
    features = build_features(sample, fraud_spec)
    expected = fitted.predict_proba(features)
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(features), expected)
    assert 0.0 < expected[:, 1].min() < expected[:, 1].max() < 1.0


def test_tampered_artifact_is_refused(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    register(sqlite_engine, fraud_spec, fitted)
    path = artifact(sqlite_engine, 1)
    registered = hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("ab") as handle:
        handle.write(b"\0")
    tampered = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ArtifactIntegrityError, match="refusing") as raised:
        registry.load_version(sqlite_engine, "fraud", 1)
    message = str(raised.value)
    assert registered in message and tampered in message and str(path) in message
    assert isinstance(raised.value, RegistryError)


def test_replaced_artifact_is_refused(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    """A different but valid pipeline in place of the registered one is refused too."""
    register(sqlite_engine, fraud_spec, fitted)
    register(sqlite_engine, fraud_spec, hist_gradient_boosting(fraud_spec))  # unfitted: other bytes
    v1, v2 = (artifact(sqlite_engine, v) for v in (1, 2))
    v1.write_bytes(v2.read_bytes())
    with pytest.raises(ArtifactIntegrityError, match="refusing to unpickle"):
        registry.load_version(sqlite_engine, "fraud", 1)
    assert registry.load_version(sqlite_engine, "fraud", 2).version == 2


def test_missing_artifact_raises_registry_error(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    register(sqlite_engine, fraud_spec, fitted)
    path = artifact(sqlite_engine, 1)
    path.unlink()
    with pytest.raises(RegistryError, match=r"artifact of fraud v1 is missing at") as raised:
        registry.load_version(sqlite_engine, "fraud", 1)
    assert not isinstance(raised.value, ArtifactIntegrityError)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("model_name", "version"),
    [pytest.param("fraud", 3, id="unknown-version"), pytest.param("churn", 1, id="unknown-model")],
)
def test_unknown_version_raises_registry_error(sqlite_engine, fraud_spec, fitted, artifacts, model_name, version) -> None:
    register(sqlite_engine, fraud_spec, fitted)
    with pytest.raises(RegistryError, match=rf"model '{model_name}' has no version {version}"):
        registry.get_version(sqlite_engine, model_name, version)
    with pytest.raises(RegistryError, match=rf"model '{model_name}' has no version {version}"):
        registry.load_version(sqlite_engine, model_name, version)
    with pytest.raises(RegistryError, match=rf"model '{model_name}' has no version {version}"):
        registry.set_alias(sqlite_engine, model_name, "champion", version, reason="r", actor="a")
    assert events(sqlite_engine) == [] and aliases(sqlite_engine, model_name) == {}


# --- aliases and the audit log ------------------------------------------------------------------


def test_aliases_and_their_audit_events(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    for days in range(3):
        register(sqlite_engine, fraud_spec, fitted, trained_on=window(days))
    assert registry.load_alias(sqlite_engine, "fraud", "champion") is None

    registry.set_alias(sqlite_engine, "fraud", "champion", 1, reason="bootstrap", actor="bootstrap")
    registry.set_alias(sqlite_engine, "fraud", "challenger", 2, reason="retrained", actor="retrain", details={"roc_auc": 0.93})
    assert aliases(sqlite_engine) == {"champion": 1, "challenger": 2}
    assert registry.alias_version(sqlite_engine, "fraud", "challenger") == 2
    assert registry.load_alias(sqlite_engine, "fraud", "champion").version == 1

    # The champion cannot shadow itself; nothing changes and nothing is logged.
    with pytest.raises(RegistryError, match="version 1 of 'fraud' is already the champion; it cannot also be the challenger"):
        registry.set_alias(sqlite_engine, "fraud", "challenger", 1, reason="oops", actor="someone")
    assert aliases(sqlite_engine) == {"champion": 1, "challenger": 2}

    # A newer challenger replaces the old one.
    registry.set_alias(sqlite_engine, "fraud", "challenger", 3, reason="retrained again", actor="retrain")
    assert aliases(sqlite_engine) == {"champion": 1, "challenger": 3}

    # Promotion: the challenger becomes champion and stops being the challenger.
    registry.set_alias(sqlite_engine, "fraud", "champion", 3, reason="beat the champion", actor="evaluate")
    assert aliases(sqlite_engine) == {"champion": 3}
    assert registry.load_alias(sqlite_engine, "fraud", "challenger") is None

    # The old champion may now be a challenger again.
    registry.set_alias(sqlite_engine, "fraud", "challenger", 1, reason="rollback candidate", actor="human")
    assert aliases(sqlite_engine) == {"champion": 3, "challenger": 1}

    logged = events(sqlite_engine)
    assert {row["model_name"] for row in logged} == {"fraud"}
    fields = ("event", "version", "previous_version", "reason", "actor", "details")
    assert [tuple(row[name] for name in fields) for row in logged] == [
        ("set_champion", 1, None, "bootstrap", "bootstrap", {}),
        ("set_challenger", 2, None, "retrained", "retrain", {"roc_auc": 0.93}),
        ("set_challenger", 3, 2, "retrained again", "retrain", {}),
        ("set_champion", 3, 1, "beat the champion", "evaluate", {}),
        ("set_challenger", 1, None, "rollback candidate", "human", {}),
    ]


def test_champion_terms_are_the_champion_moves_of_the_audit_log(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    for days in range(3):
        register(sqlite_engine, fraud_spec, fitted, trained_on=window(days))
    before = datetime.now(timezone.utc)
    assert registry.champion_terms(sqlite_engine, "fraud") == [] and registry.champion_at(sqlite_engine, "fraud", before) is None

    registry.set_alias(sqlite_engine, "fraud", "champion", 1, reason="first", actor="a")
    registry.set_alias(sqlite_engine, "fraud", "challenger", 2, reason="shadow", actor="a")
    registry.set_alias(sqlite_engine, "fraud", "champion", 3, reason="manual", actor="a")

    terms = registry.champion_terms(sqlite_engine, "fraud")
    assert [(term.version, term.event) for term in terms] == [(1, "set_champion"), (3, "set_champion")], "a challenger move is not one"
    assert before <= terms[0].since < terms[1].since <= datetime.now(timezone.utc)
    assert registry.champion_at(sqlite_engine, "fraud", before) is None
    assert registry.champion_at(sqlite_engine, "fraud", terms[0].since) == 1
    assert registry.champion_at(sqlite_engine, "fraud", datetime.now(timezone.utc)) == 3


def test_the_registry_and_the_read_layer_agree_on_which_events_move_the_champion() -> None:
    from batchwatch.queries import ALIAS_OF_EVENT

    assert set(registry.CHAMPION_EVENTS) == {event for event, alias in ALIAS_OF_EVENT.items() if alias == "champion"}

def test_promoting_a_non_challenger_keeps_the_challenger(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    for days in range(3):
        register(sqlite_engine, fraud_spec, fitted, trained_on=window(days))
    registry.set_alias(sqlite_engine, "fraud", "champion", 1, reason="first", actor="a")
    registry.set_alias(sqlite_engine, "fraud", "challenger", 2, reason="shadow", actor="a")
    registry.set_alias(sqlite_engine, "fraud", "champion", 3, reason="manual", actor="a")
    assert aliases(sqlite_engine) == {"champion": 3, "challenger": 2}


def test_unknown_alias_is_refused(sqlite_engine, fraud_spec, fitted, artifacts) -> None:
    register(sqlite_engine, fraud_spec, fitted)
    with pytest.raises(RegistryError, match=r"unknown alias 'production'; expected one of \('champion', 'challenger'\)"):
        registry.set_alias(sqlite_engine, "fraud", "production", 1, reason="r", actor="a")
    assert events(sqlite_engine) == []


def test_pipeline_steps_of_a_bare_estimator() -> None:
    from sklearn.linear_model import LogisticRegression

    steps = registry.pipeline_steps(LogisticRegression())
    assert steps == [{"name": "model", "class": "sklearn.linear_model._logistic.LogisticRegression"}]
