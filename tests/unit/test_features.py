"""Feature building, and the promise behind it: training and scoring see the same features."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from batchwatch.data.features import build_features, coerce_categorical, coerce_numeric
from batchwatch.data.validation import validate
from batchwatch.demo.simulate import simulate
from batchwatch.modeling.training import LABEL, read_labelled, valid_rows
from batchwatch.scoring import source_query
from batchwatch.spec import SpecError, parse_spec
from batchwatch.warehouse import load_frame, stream_frames

D1 = datetime(2024, 5, 6, tzinfo=timezone.utc)
NUMERIC = ["amount", "hour", "day_of_week", "txn_count_30d", "avg_amount_7d", "amount_to_avg_7d", "log_amount", "is_night"]
CATEGORICAL = ["merchant_category", "country", "channel"]


def raw_rows(*rows: dict) -> pd.DataFrame:
    """Source rows of the fraud model, columns in a different order than the spec, plus extras."""
    base = {
        "channel": "pos",
        "transaction_id": 0,
        "card_id": 1,
        "amount": 10.0,
        "hour": 12.0,
        "day_of_week": 2.0,
        "txn_count_30d": 5.0,
        "avg_amount_7d": 20.0,
        "merchant_category": "grocery",
        "country": "US",
    }
    return pd.DataFrame([{**base, "transaction_id": i, **row} for i, row in enumerate(rows)])


def test_columns_order_and_dtypes(fraud_spec) -> None:
    raw = raw_rows({}, {"country": None, "avg_amount_7d": None})
    features = build_features(raw, fraud_spec)
    assert list(features.columns) == fraud_spec.model_features
    for name in NUMERIC:
        assert features[name].dtype == np.float64, name
    for name in CATEGORICAL:
        assert features[name].dtype == object, name
    assert features["country"].tolist()[0] == "US" and math.isnan(features["country"].tolist()[1])
    assert features.index.equals(raw.index)
    assert "transaction_id" not in features and "card_id" not in features


def test_derived_columns_equal_hand_computed_values(fraud_spec) -> None:
    raw = raw_rows(
        {"amount": 100.0, "avg_amount_7d": 50.0, "hour": 5.0},
        {"amount": 30.0, "avg_amount_7d": None, "hour": 6.0},
        {"amount": 0.0, "avg_amount_7d": 0.0, "hour": 0.0},
        {"amount": 12.5, "avg_amount_7d": 4.0, "hour": 23.0},
    )
    raw.index = [7, 3, 11, 5]
    features = build_features(raw, fraud_spec)
    assert features.index.tolist() == [7, 3, 11, 5]
    np.testing.assert_array_equal(features["amount_to_avg_7d"].to_numpy(), [2.0, np.nan, np.nan, 3.125])
    expected_log = [math.log(101.0), math.log(31.0), 0.0, math.log(13.5)]
    np.testing.assert_allclose(features["log_amount"].to_numpy(), expected_log, rtol=1e-15)
    np.testing.assert_array_equal(features["is_night"].to_numpy(), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(features["amount"].to_numpy(), [100.0, 30.0, 0.0, 12.5])


def test_text_numbers_become_floats(fraud_spec) -> None:
    raw = raw_rows({}, {})
    for name in ("amount", "hour", "txn_count_30d", "avg_amount_7d"):
        raw[name] = raw[name].map(str).astype(object)
    raw.loc[1, "avg_amount_7d"] = None
    features = build_features(raw, fraud_spec)
    assert features["amount"].dtype == np.float64
    assert features["amount"].tolist() == [10.0, 10.0]
    assert features["amount_to_avg_7d"].tolist()[0] == 0.5 and math.isnan(features["amount_to_avg_7d"].tolist()[1])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(pd.Series([1, 2], dtype="int64"), [1.0, 2.0], id="int64"),
        pytest.param(pd.Series([1.5, None], dtype="Float64"), [1.5, np.nan], id="nullable-float"),
        pytest.param(pd.Series([3, None], dtype="Int64"), [3.0, np.nan], id="nullable-int"),
        pytest.param(pd.Series(["4.5", None, "abc"], dtype=object), [4.5, np.nan, np.nan], id="text"),
        pytest.param(pd.Series(["NaN", "Infinity", "-Infinity"], dtype=object), [np.nan, np.inf, -np.inf], id="spelled-specials"),
    ],
)
def test_coerce_numeric(values: pd.Series, expected: list[float]) -> None:
    coerced = coerce_numeric(values)
    assert coerced.dtype == np.float64
    np.testing.assert_array_equal(coerced.to_numpy(), np.array(expected))


def test_coerce_categorical_uses_nan_for_missing() -> None:
    values = pd.Series(["a", None, "b", np.nan], dtype=object)
    coerced = coerce_categorical(values)
    assert coerced.dtype == object
    assert coerced[0] == "a" and coerced[2] == "b"
    assert all(isinstance(v, float) and math.isnan(v) for v in coerced[[1, 3]])


def test_derived_function_missing_a_declared_column(fraud_data) -> None:
    fraud_data["derived_features"]["columns"].append({"name": "amount_zscore", "type": "numeric"})
    spec = parse_spec(fraud_data)
    expected = (
        r"^derived_features\.function 'batchwatch\.fraud_demo\.derive_features'"
        r" did not return declared column 'amount_zscore'$"
    )
    with pytest.raises(SpecError, match=expected):
        build_features(raw_rows({}), spec)


@pytest.mark.parametrize(
    "function",
    [
        pytest.param("batchwatch.fraud_demo.no_such_function", id="missing-attribute"),
        pytest.param("batchwatch.fraud_demo.np", id="not-callable"),
    ],
)
def test_derived_function_that_is_not_a_callable(fraud_data, function: str) -> None:
    fraud_data["derived_features"]["function"] = function
    spec = parse_spec(fraud_data)  # the module exists, so the spec itself loads
    with pytest.raises(SpecError, match=rf"^derived_features\.function: '{function}' does not name a callable$"):
        build_features(raw_rows({}), spec)


def test_spec_without_derived_features(fraud_data) -> None:
    del fraud_data["derived_features"]
    spec = parse_spec(fraud_data)
    features = build_features(raw_rows({}, {}), spec)
    assert list(features.columns) == spec.source_columns == spec.model_features


# --- the key property: one feature path for training and scoring --------------------------------


def _keyed(features: pd.DataFrame, keys: pd.Series, name: str) -> pd.DataFrame:
    keyed = features.copy()
    keyed.index = pd.Index(keys.astype(str).astype(object).to_numpy(), name=name)
    return keyed.sort_index()


def test_training_and_scoring_features_are_identical(fraud_spec, sqlite_engine) -> None:
    start, end = D1, D1 + timedelta(days=2)
    batch = simulate(start, end, rows_per_day=3000, seed=17, malformed_rate=0.02)
    assert load_frame(sqlite_engine, "transactions", batch.transactions) == 6000
    assert load_frame(sqlite_engine, "outcomes", batch.outcomes) == 6000
    key = fraud_spec.source.entity_key
    malformed_ids = sorted(batch.transactions.loc[batch.malformed.notna().to_numpy(), key].astype(str))

    # Training path: the labelled query, read in one frame and validated as a whole.
    labelled = valid_rows(fraud_spec, read_labelled(sqlite_engine, fraud_spec, start, end, as_of=end + timedelta(days=30)))
    assert len(labelled) == 6000 - len(malformed_ids)
    assert labelled[LABEL].sum() == batch.outcomes["label"][batch.malformed.isna().to_numpy()].sum()
    training = _keyed(build_features(labelled, fraud_spec), labelled[key], key)

    # Scoring path: the source query, streamed in chunks, each chunk validated and built on its own.
    query, columns, text = source_query(fraud_spec)
    chunks, rejected = [], []
    for raw in stream_frames(sqlite_engine, query, {"start": start, "end": end}, columns, text, chunk_size=700):
        checked = validate(raw, fraud_spec)
        rejected += checked.rejected[key].tolist()
        chunks.append(_keyed(build_features(checked.valid, fraud_spec), checked.valid[key], key))
    assert len(chunks) == 9
    scoring = pd.concat(chunks).sort_index()

    assert sorted(rejected) == malformed_ids
    assert list(training.columns) == fraud_spec.model_features
    pd.testing.assert_frame_equal(training, scoring)

    # And both equal the features of the simulated rows themselves, before any warehouse.
    checked = validate(batch.transactions, fraud_spec)
    in_memory = _keyed(build_features(checked.valid, fraud_spec), checked.valid[key], key)
    pd.testing.assert_frame_equal(training, in_memory)
