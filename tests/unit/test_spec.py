"""Model specs: the fraud spec loads, and bad specs fail with the path of the offending field."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from batchwatch.spec import SpecError, get_spec, load_spec, load_specs, parse_spec
from batchwatch.spec.model import AlertRate, MinPrecision

FRAUD_YAML = Path(__file__).resolve().parents[2] / "include" / "models" / "fraud.yaml"

SOURCE_FEATURES = ["amount", "hour", "day_of_week", "txn_count_30d", "avg_amount_7d", "merchant_category", "country", "channel"]
DERIVED = ["amount_to_avg_7d", "log_amount", "is_night"]


def minimal(name: str = "toy") -> dict[str, Any]:
    return {
        "name": name,
        "source": {"table": "events", "entity_key": "id", "event_time": "ts"},
        "features": [{"name": "x", "type": "numeric"}],
    }


def write_spec(directory: Path, data: dict[str, Any], filename: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or f"{data['name']}.yaml")
    path.write_text(yaml.safe_dump(data))
    return path


# --- the demo spec ------------------------------------------------------------------------------


def test_fraud_spec_exposes_features_in_order(fraud_spec) -> None:
    assert fraud_spec.name == "fraud"
    assert fraud_spec.source_columns == SOURCE_FEATURES
    assert fraud_spec.model_features == SOURCE_FEATURES + DERIVED
    assert fraud_spec.categorical_features == ["merchant_category", "country", "channel"]


def test_fraud_spec_values(fraud_spec) -> None:
    assert fraud_spec.source.table == "transactions"
    assert fraud_spec.source.relation == '"transactions"'
    assert (fraud_spec.source.entity_key, fraud_spec.source.event_time) == ("transaction_id", "event_time")
    assert fraud_spec.categories_of("channel") == ("pos", "online", "atm")
    assert fraud_spec.categories_of("country")[0] == "US"
    by_name = {f.name: f for f in fraud_spec.features}
    assert by_name["amount"].min == 0 and by_name["amount"].max is None and by_name["amount"].nulls == "reject"
    assert (by_name["hour"].type, by_name["hour"].min, by_name["hour"].max) == ("integer", 0, 23)
    assert by_name["avg_amount_7d"].nulls == "allow"
    assert by_name["country"].nulls == "allow" and by_name["country"].unknown_categories == "reject"
    assert fraud_spec.derived_features.function == "batchwatch.fraud_demo.derive_features"
    assert (fraud_spec.label.table, fraud_spec.label.column, fraud_spec.label.delay_days) == ("outcomes", "label", 4)
    assert fraud_spec.estimator.factory == "batchwatch.training.hist_gradient_boosting"
    assert fraud_spec.estimator.params == {"max_iter": 40, "learning_rate": 0.2, "max_leaf_nodes": 8, "min_samples_leaf": 200}
    scoring = fraud_spec.scoring
    assert (scoring.threshold, scoring.chunk_size, scoring.max_reject_rate) == (AlertRate(alert_rate=0.01), 100_000, 0.05)
    assert fraud_spec.schedules.nightly_predict == "0 0 * * *"
    assert fraud_spec.tags == ("fraud", "demo")


def test_spec_is_frozen(fraud_spec) -> None:
    with pytest.raises(pydantic.ValidationError):
        fraud_spec.name = "other"


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec(minimal())
    assert spec.model_features == ["x"] and spec.categorical_features == []
    assert spec.derived_features is None
    label = spec.label
    assert (label.table, label.entity_key, label.column, label.observed_at) == ("outcomes", "entity_id", "label", "observed_at")
    assert spec.estimator.factory == "batchwatch.training.hist_gradient_boosting" and spec.estimator.params == {}
    assert spec.features[0].nulls == "allow"
    assert spec.schedules.nightly_predict == "0 0 * * *"
    assert spec.drift.severity_bands == (2.0, 4.0)
    assert parse_spec({**minimal(), "drift": {"severity_bands": []}}).drift.severity_bands == ()  # only new checks escalate


def test_query_source_is_wrapped_as_a_subquery() -> None:
    data = minimal()
    data["source"] = {"query": "SELECT * FROM events WHERE x > 0", "entity_key": "id", "event_time": "ts"}
    spec = parse_spec(data)
    assert spec.source.table is None
    assert spec.source.relation == "(SELECT * FROM events WHERE x > 0)"


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        pytest.param(0.3, 0.3, id="fixed"),
        pytest.param({"alert_rate": 0.02}, AlertRate(alert_rate=0.02), id="alert-rate"),
        pytest.param({"min_precision": 0.6}, MinPrecision(min_precision=0.6), id="min-precision"),
    ],
)
def test_each_threshold_policy_parses(threshold: Any, expected: Any) -> None:
    data = minimal()
    data["scoring"] = {"threshold": threshold}
    assert parse_spec(data).scoring.threshold == expected


def test_schema_qualified_table_is_accepted() -> None:
    data = minimal()
    data["source"]["table"] = "raw.events"
    assert parse_spec(data).source.relation == '"raw"."events"'


# --- bad specs ----------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting `value` at a dotted path ('features.0.type'); the value None deletes it."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if value is None:
            del target[key]
        else:
            target[key] = value

    return mutate


def _append_feature(feature: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["features"].append(feature)


BAD_SPECS = [
    pytest.param(_set("featurs", []), "featurs: Extra inputs are not permitted", id="unknown-top-level-key"),
    pytest.param(_set("scoring.treshold", 0.4), "scoring.treshold: Extra inputs are not permitted", id="unknown-nested-key"),
    pytest.param(
        _set("features.0.type", "float"),
        "features.0.type: Input should be 'numeric', 'integer' or 'categorical'",
        id="bad-feature-type",
    ),
    pytest.param(
        _set("features.5.categories", None),
        "features.5: Value error, categorical feature 'merchant_category' needs 'categories'",
        id="categorical-without-categories",
    ),
    pytest.param(
        _set("features.5.categories", []),
        "features.5: Value error, categorical feature 'merchant_category' needs 'categories'",
        id="categorical-empty-categories",
    ),
    pytest.param(
        _set("features.5.min", 0),
        "features.5: Value error, categorical feature 'merchant_category' cannot have min/max",
        id="categorical-with-min",
    ),
    pytest.param(
        _set("features.0.categories", ["a"]),
        "features.0: Value error, numeric feature 'amount' cannot have 'categories'",
        id="numeric-with-categories",
    ),
    pytest.param(
        _set("features.1.min", 30),
        "features.1: Value error, feature 'hour': min 30.0 is greater than max 23.0",
        id="min-greater-than-max",
    ),
    pytest.param(
        _set("features.0.nulls", "maybe"),
        "features.0.nulls: Input should be 'allow' or 'reject'",
        id="bad-nulls-policy",
    ),
    pytest.param(
        _append_feature({"name": "amount", "type": "numeric"}),
        "(top level): Value error, feature names must be unique; repeated: ['amount']",
        id="duplicate-feature",
    ),
    pytest.param(
        _append_feature({"name": "log_amount", "type": "numeric"}),
        "(top level): Value error, feature names must be unique; repeated: ['log_amount']",
        id="feature-duplicates-derived-column",
    ),
    pytest.param(
        _append_feature({"name": "event_time", "type": "numeric"}),
        "(top level): Value error, entity key / event time cannot also be features: ['event_time']",
        id="event-time-as-feature",
    ),
    pytest.param(_set("features", []), "features: Tuple should have at least 1 item", id="no-features"),
    pytest.param(
        _set("source.query", "SELECT * FROM transactions"),
        "source: Value error, give exactly one of 'table' or 'query'",
        id="table-and-query",
    ),
    pytest.param(
        _set("source.table", None),
        "source: Value error, give exactly one of 'table' or 'query'",
        id="neither-table-nor-query",
    ),
    pytest.param(
        _set("source.table", "transactions; drop table x"),
        "source.table: Value error, 'transactions; drop table x' is not a lower-case table name",
        id="table-not-identifier",
    ),
    pytest.param(
        _set("source.entity_key", "id-1"),
        "source.entity_key: Value error, 'id-1' is not a plain lower-case SQL identifier",
        id="entity-key-not-identifier",
    ),
    pytest.param(
        _set("features.0.name", "amount; drop table"),
        "features.0.name: Value error, 'amount; drop table' is not a plain lower-case SQL identifier",
        id="column-not-identifier",
    ),
    pytest.param(
        _set("features.0.name", "1amount"),
        "features.0.name: Value error, '1amount' is not a plain lower-case SQL identifier",
        id="column-starts-with-digit",
    ),
    pytest.param(
        _set("label.column", "label)"),
        "label.column: Value error, 'label)' is not a plain lower-case SQL identifier",
        id="label-column-not-identifier",
    ),
    pytest.param(
        _set("label.delay_days", -1),
        "label.delay_days: Input should be greater than or equal to 0",
        id="negative-label-delay",
    ),
    pytest.param(
        _set("derived_features.function", "no_such_package.features.derive"),
        "derived_features.function: Value error, module 'no_such_package.features' of 'no_such_package.features.derive'"
        " cannot be found on the Python path",
        id="derived-function-package-missing",
    ),
    pytest.param(
        _set("derived_features.function", "batchwatch.no_such_module.derive"),
        "derived_features.function: Value error, module 'batchwatch.no_such_module' of 'batchwatch.no_such_module.derive'"
        " cannot be found on the Python path",
        id="derived-function-module-missing",
    ),
    pytest.param(
        _set("derived_features.columns", []),
        "derived_features.columns: Tuple should have at least 1 item",
        id="derived-without-columns",
    ),
    pytest.param(
        _set("derived_features.columns.0.type", "categorical"),
        "derived_features.columns.0: Value error, derived column 'amount_to_avg_7d': 'categories' is required",
        id="derived-categorical-without-categories",
    ),
    pytest.param(
        _set("estimator.factory", "hist_gradient_boosting"),
        "estimator.factory: Value error, 'hist_gradient_boosting' is not a dotted path like 'package.module.function'",
        id="factory-not-dotted",
    ),
    pytest.param(
        _set("estimator.factory", "batchwatch.training."),
        "estimator.factory: Value error, 'batchwatch.training.' is not a dotted path",
        id="factory-trailing-dot",
    ),
    pytest.param(
        _set("estimator.factory", "batchwatch.training:hist_gradient_boosting"),
        "estimator.factory: Value error, 'batchwatch.training:hist_gradient_boosting' is not a dotted path",
        id="factory-entry-point-syntax",
    ),
    pytest.param(
        _set("estimator.params", [1, 2]),
        "estimator.params: Input should be a valid dictionary",
        id="params-not-mapping",
    ),
    pytest.param(
        _set("scoring.max_reject_rate", 1.5),
        "scoring.max_reject_rate: Input should be less than or equal to 1",
        id="reject-rate-above-one",
    ),
    pytest.param(
        _set("scoring.max_reject_rate", -0.1),
        "scoring.max_reject_rate: Input should be greater than or equal to 0",
        id="reject-rate-negative",
    ),
    pytest.param(_set("scoring.threshold", 1), "scoring.threshold: Value error, a fixed threshold must lie strictly between 0 and 1, got 1.0",
                 id="threshold-one"),
    pytest.param(_set("scoring.threshold", {"alert_rat": 0.01}), "scoring.threshold: give a threshold between 0 and 1, {alert_rate: share flagged}",
                 id="threshold-policy-misspelt"),
    pytest.param(_set("scoring.threshold", {"alert_rate": 1.5}), "scoring.threshold.AlertRate.alert_rate: Input should be less than 1",
                 id="alert-rate-over-one"),
    pytest.param(
        _set("scoring.chunk_size", 0),
        "scoring.chunk_size: Input should be greater than or equal to 1",
        id="chunk-size-zero",
    ),
    pytest.param(
        _set("schedules.nightly_predict", "every night"),
        "schedules.nightly_predict: Value error, 'every night' is not a daily cron expression",
        id="schedule-not-cron",
    ),
    pytest.param(
        _set("schedules.nightly_predict", "0 0 * * * *"),
        "schedules.nightly_predict: Value error, '0 0 * * * *' is not a daily cron expression",
        id="schedule-six-fields",
    ),
    pytest.param(
        _set("drift.severity_bands", [1.0, 4.0]),
        "drift.severity_bands: Value error, severity bands are multiples of the threshold, each over 1",
        id="severity-band-not-over-one",
    ),
    pytest.param(
        _set("drift.severity_bands", [4.0, 2.0]),
        "drift.severity_bands: Value error, severity bands must ascend strictly: got [4.0, 2.0]",
        id="severity-bands-descending",
    ),
    pytest.param(
        _set("drift.severity_bands", [2.0, float("inf")]),
        "drift.severity_bands.1: Input should be a finite number",
        id="severity-band-infinite",
    ),
    pytest.param(
        _set("name", "fraud model"),
        "name: Value error, 'fraud model' is not a plain lower-case SQL identifier",
        id="name-not-identifier",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), BAD_SPECS)
def test_parse_spec_names_the_offending_field(fraud_data, mutate, expected) -> None:
    mutate(fraud_data)
    with pytest.raises(SpecError) as raised:
        parse_spec(fraud_data, "models/fraud.yaml")
    message = str(raised.value)
    assert message.startswith("invalid model spec models/fraud.yaml:\n")
    assert f"\n  {expected}" in message


# Every spec field whose value is spelled into SQL (source.query is SQL by design: the spec author's SELECT, run
# with the pipeline role's rights); the name also names the day's partition of `predictions`.
SQL_IDENTIFIER_FIELDS = (
    "name",
    "source.table",
    "source.entity_key",
    "source.event_time",
    "features.0.name",
    "derived_features.columns.0.name",
    "label.table",
    "label.entity_key",
    "label.column",
    "label.observed_at",
)


@pytest.mark.parametrize("field", SQL_IDENTIFIER_FIELDS)
@pytest.mark.parametrize("injection", ['x" OR 1=1 --', "x; DROP TABLE predictions", "x'); DELETE FROM model_versions; --", "public.x.y"])
def test_no_sql_reaches_the_warehouse_through_a_spec_identifier(fraud_data, field, injection) -> None:
    _set(field, injection)(fraud_data)
    with pytest.raises(SpecError) as raised:
        parse_spec(fraud_data, "models/fraud.yaml")
    assert f"\n  {field}: " in str(raised.value)


def test_every_error_is_listed(fraud_data) -> None:
    fraud_data["featurs"] = []
    fraud_data["scoring"]["max_reject_rate"] = 2
    fraud_data["features"][0]["type"] = "float"
    message = str(pytest.raises(SpecError, parse_spec, fraud_data).value)
    lines = message.splitlines()
    assert lines[0] == "invalid model spec <memory>:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == ["features.0.type", "featurs", "scoring.max_reject_rate"]


def test_parse_spec_accepts_the_unmodified_data(fraud_data, fraud_spec) -> None:
    assert parse_spec(fraud_data) == fraud_spec


# --- files and folders --------------------------------------------------------------------------


def test_load_spec_rejects_a_name_that_does_not_match_the_file(tmp_path, fraud_data) -> None:
    path = write_spec(tmp_path, fraud_data, "fraud_v2.yaml")
    with pytest.raises(SpecError, match=r"name: 'fraud' must match the file name 'fraud_v2'") as raised:
        load_spec(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name: toy\nfeatures: [unclosed\n", "not valid YAML", id="unclosed-bracket"),
        pytest.param("name: toy\n  source: {\n", "not valid YAML", id="bad-indentation"),
        pytest.param("- name: toy\n", "expected a mapping at the top level", id="top-level-list"),
        pytest.param("", "expected a mapping at the top level", id="empty-file"),
    ],
)
def test_load_spec_rejects_unusable_files(tmp_path, text, expected) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=expected) as raised:
        load_spec(path)
    assert str(raised.value).startswith(f"invalid model spec {path}")


def test_load_spec_errors_name_the_file(tmp_path) -> None:
    data = minimal()
    data["features"][0]["type"] = "text"
    path = write_spec(tmp_path, data)
    message = str(pytest.raises(SpecError, load_spec, path).value)
    assert message.startswith(f"invalid model spec {path}:")
    assert "features.0.type" in message


def test_load_specs_reads_every_dir(tmp_path, fraud_data) -> None:
    write_spec(tmp_path / "a", fraud_data)
    write_spec(tmp_path / "b", minimal("toy"))
    write_spec(tmp_path / "b", minimal("alpha"))
    (tmp_path / "b" / "notes.txt").write_text("not a spec")
    specs = load_specs([tmp_path / "a", tmp_path / "b"])
    assert list(specs) == ["fraud", "alpha", "toy"]
    assert specs["fraud"].model_features == SOURCE_FEATURES + DERIVED


def test_load_specs_rejects_a_model_defined_twice(tmp_path, fraud_data) -> None:
    write_spec(tmp_path / "team_a", fraud_data)
    second = write_spec(tmp_path / "team_b", fraud_data)
    with pytest.raises(SpecError, match=r"model 'fraud' is defined twice") as raised:
        load_specs([tmp_path / "team_a", tmp_path / "team_b"])
    assert str(second) in str(raised.value)


def test_get_spec_uses_the_configured_dirs(tmp_path, monkeypatch) -> None:
    write_spec(tmp_path / "one", minimal("toy"))
    write_spec(tmp_path / "two", minimal("other"))
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", os.pathsep.join([str(tmp_path / "one"), str(tmp_path / "two")]))
    assert get_spec("other").name == "other"
    with pytest.raises(SpecError, match=r"no model spec named 'fraud'"):
        get_spec("fraud")


def test_project_spec_file_is_the_one_loaded(fraud_spec) -> None:
    assert load_spec(FRAUD_YAML) == fraud_spec


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("name", "Fraud", "name: Value error, 'Fraud' is not a plain lower-case SQL identifier", id="upper-case-name"),
        pytest.param("name", "f" * 33, "name: String should have at most 32 characters", id="name-too-long"),
        pytest.param("schedules", {"nightly_predict": "0 * * * *"}, "is not a daily cron expression", id="hourly-schedule"),
    ],
)
def test_names_and_schedules_that_would_break_the_warehouse_are_refused(fraud_data, field, value, message) -> None:
    fraud_data[field] = value
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(fraud_data)
