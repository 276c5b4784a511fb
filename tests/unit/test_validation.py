"""Row validation: which rows are rejected, and with which reasons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from batchwatch.data.validation import validate
from batchwatch.demo.simulate import MALFORMED_KINDS, simulate
from batchwatch.spec import parse_spec

D1 = datetime(2024, 5, 6, tzinfo=timezone.utc)

TOY = parse_spec(
    {
        "name": "toy",
        "source": {"table": "events", "entity_key": "id", "event_time": "ts"},
        "features": [
            {"name": "x", "type": "numeric", "min": 0, "max": 100, "nulls": "reject"},
            {"name": "n", "type": "integer", "min": 0.5},
            {"name": "opt", "type": "numeric"},
            {"name": "c", "type": "categorical", "categories": ["a", "b"], "nulls": "reject"},
            {"name": "free", "type": "categorical", "categories": ["a", "b"], "unknown_categories": "allow"},
        ],
    }
)

GOOD_ROW: dict[str, Any] = {"id": "k", "x": 50.0, "n": 3.0, "opt": 1.5, "c": "a", "free": "b"}


def toy_frame(*rows: dict[str, Any], text: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows over GOOD_ROW with ids k0, k1, ...; columns in `text` are object dtype (text from the source)."""
    records = [{**GOOD_ROW, "id": f"k{i}", **row} for i, row in enumerate(rows)]
    frame = pd.DataFrame.from_records(records, columns=list(GOOD_ROW))
    for name in text:
        frame[name] = frame[name].astype(object)
    return frame


def reasons_by_id(frame: pd.DataFrame) -> dict[str, str]:
    result = validate(frame, TOY)
    assert len(result.valid) + len(result.rejected) == len(frame)
    assert result.reasons.index.equals(result.rejected.index)
    return dict(zip(result.rejected["id"], result.reasons, strict=True))


def test_clean_frame_passes_unchanged() -> None:
    frame = toy_frame({}, {"x": 0.0, "n": 1.0}, {"x": 100.0, "c": "b"})
    result = validate(frame, TOY)
    assert result.valid is frame
    assert result.rejected.empty and list(result.rejected.columns) == list(frame.columns)
    assert result.reasons.empty


@pytest.mark.parametrize(
    ("row", "text", "expected"),
    [
        pytest.param({"x": np.nan}, (), "x is null or NaN", id="null-rejected"),
        pytest.param({"x": np.inf}, (), "x is infinite", id="pos-inf"),
        pytest.param({"x": -np.inf}, (), "x is infinite", id="neg-inf"),
        pytest.param({"x": -0.01}, (), "x is below the minimum 0", id="below-min"),
        pytest.param({"x": 100.5}, (), "x is above the maximum 100", id="above-max"),
        pytest.param({"n": 0.0}, (), "n is below the minimum 0.5", id="below-fractional-min"),
        pytest.param({"n": 2.5}, (), "n is not an integer (wrong type)", id="fractional-integer"),
        pytest.param({"n": np.inf}, (), "n is infinite", id="infinite-integer"),
        pytest.param({"x": "abc"}, ("x",), "x is not a number (wrong type)", id="text-in-numeric"),
        pytest.param({"x": ""}, ("x",), "x is not a number (wrong type)", id="empty-text-in-numeric"),
        pytest.param({"opt": "12,5"}, ("opt",), "opt is not a number (wrong type)", id="text-in-nullable-numeric"),
        pytest.param({"n": "three"}, ("n",), "n is not a number (wrong type)", id="text-in-integer"),
        pytest.param({"x": "NaN"}, ("x",), "x is null or NaN", id="text-NaN"),
        pytest.param({"x": " nan "}, ("x",), "x is null or NaN", id="text-nan-padded"),
        pytest.param({"x": "Infinity"}, ("x",), "x is infinite", id="text-Infinity"),
        pytest.param({"x": "-Infinity"}, ("x",), "x is infinite", id="text-minus-Infinity"),
        pytest.param({"x": "inf"}, ("x",), "x is infinite", id="text-inf"),
        pytest.param({"x": "150"}, ("x",), "x is above the maximum 100", id="text-number-out-of-range"),
        pytest.param({"n": "2.5"}, ("n",), "n is not an integer (wrong type)", id="text-fractional-integer"),
        pytest.param({"c": None}, (), "c is null", id="categorical-null-rejected"),
        pytest.param({"c": "z"}, (), "c has an unknown category", id="unknown-category"),
        pytest.param({"c": "A"}, (), "c has an unknown category", id="category-is-case-sensitive"),
        pytest.param({"id": None}, (), "id is null", id="null-key"),
    ],
)
def test_single_failure(row: dict[str, Any], text: tuple[str, ...], expected: str) -> None:
    frame = toy_frame({}, row, {}, text=text)
    assert reasons_by_id(frame) == {frame["id"][1]: expected}


@pytest.mark.parametrize(
    ("row", "text"),
    [
        pytest.param({"opt": np.nan}, (), id="nullable-numeric-null"),
        pytest.param({"opt": None}, ("opt",), id="nullable-numeric-none-in-text"),
        pytest.param({"opt": "NaN"}, ("opt",), id="nullable-numeric-text-NaN"),
        pytest.param({"opt": "-1e9"}, ("opt",), id="unbounded-numeric-text"),
        pytest.param({"n": np.nan}, (), id="nullable-integer-null"),
        pytest.param({"n": "7"}, ("n",), id="integer-as-text"),
        pytest.param({"x": " 42 "}, ("x",), id="padded-number-text"),
        pytest.param({"x": 0.0}, (), id="on-min"),
        pytest.param({"x": 100.0}, (), id="on-max"),
        pytest.param({"free": None}, (), id="nullable-categorical-null"),
        pytest.param({"free": "zz_new"}, (), id="unknown-category-allowed"),
    ],
)
def test_allowed_by_the_spec(row: dict[str, Any], text: tuple[str, ...]) -> None:
    frame = toy_frame({}, row, text=text)
    result = validate(frame, TOY)
    assert result.rejected.empty
    assert len(result.valid) == 2


def test_text_numeric_columns_only_reject_the_bad_rows() -> None:
    frame = toy_frame({"x": "12.5"}, {"x": "abc"}, {"x": "NaN"}, {"x": None}, {"x": "Infinity"}, {"x": "7"}, text=("x",))
    assert frame["x"].dtype == object
    assert reasons_by_id(frame) == {
        "k1": "x is not a number (wrong type)",
        "k2": "x is null or NaN",
        "k3": "x is null or NaN",
        "k4": "x is infinite",
    }
    assert validate(frame, TOY).valid["id"].tolist() == ["k0", "k5"]


def test_all_failures_of_a_row_are_listed_in_check_order() -> None:
    frame = toy_frame({"id": None, "x": "abc", "n": 2.5, "c": None}, {"x": -1.0, "n": -3.0, "c": "zz"}, {}, text=("x",))
    result = validate(frame, TOY)
    assert result.reasons.tolist() == [
        "id is null; x is not a number (wrong type); n is not an integer (wrong type); c is null",
        "x is below the minimum 0; n is below the minimum 0.5; c has an unknown category",
    ]
    assert result.rejected.index.tolist() == [0, 1]
    assert result.valid["id"].tolist() == ["k2"]


def test_duplicate_keys_keep_the_first_row() -> None:
    frame = toy_frame({"id": "a"}, {"id": "b"}, {"id": "a", "x": 1.0}, {"id": "a", "x": 2.0}, {"id": None}, {"id": None})
    result = validate(frame, TOY)
    assert result.valid["id"].tolist() == ["a", "b"]
    assert result.valid.index.tolist() == [0, 1]
    assert result.rejected.index.tolist() == [2, 3, 4, 5]
    assert result.reasons.tolist() == [
        "id is duplicated in the batch",
        "id is duplicated in the batch",
        "id is null",
        "id is null",
    ]


def test_a_key_seen_in_an_earlier_chunk_is_a_duplicate() -> None:
    frame = toy_frame({"id": "a"}, {"id": "b"}, {"id": "c"})
    result = validate(frame, TOY, seen_before=np.array([False, True, False]))
    assert result.valid["id"].tolist() == ["a", "c"]
    assert result.reasons.tolist() == ["id is duplicated in the batch"]


def test_duplicate_of_a_rejected_row_is_still_a_duplicate() -> None:
    frame = toy_frame({"id": "a", "x": -5.0}, {"id": "a"})
    assert validate(frame, TOY).reasons.tolist() == ["x is below the minimum 0", "id is duplicated in the batch"]


def test_rejected_rows_are_the_raw_rows_with_their_index() -> None:
    frame = toy_frame({}, {"x": "abc"}, {}, {"c": "q"}, text=("x",))
    frame.index = [10, 20, 30, 40]
    result = validate(frame, TOY)
    pd.testing.assert_frame_equal(result.rejected, frame.loc[[20, 40]])
    pd.testing.assert_frame_equal(result.valid, frame.loc[[10, 30]])
    assert result.reasons.to_dict() == {20: "x is not a number (wrong type)", 40: "c has an unknown category"}


def test_empty_frame() -> None:
    frame = toy_frame({}).iloc[:0]
    result = validate(frame, TOY)
    assert result.valid.empty and result.rejected.empty and result.reasons.empty


# --- the simulator's malformed rows against the fraud spec --------------------------------------

EXPECTED_REASON = {
    "nan": "amount is null or NaN",
    "pos_inf": "avg_amount_7d is infinite",
    "neg_inf": "avg_amount_7d is infinite",
    "negative_amount": "amount is below the minimum 0",
    "hour_out_of_range": "hour is above the maximum 23",
    "unknown_category": "merchant_category has an unknown category",
    "wrong_type": "txn_count_30d is not an integer (wrong type)",
}


def test_expected_reasons_cover_every_malformed_kind() -> None:
    assert set(EXPECTED_REASON) == set(MALFORMED_KINDS)


@pytest.mark.parametrize("seed", [pytest.param(7, id="seed-7"), pytest.param(13, id="seed-13")])
def test_simulated_malformed_rows_are_rejected_with_their_reason(fraud_spec, seed: int) -> None:
    batch = simulate(D1, D1 + timedelta(days=2), rows_per_day=4000, seed=seed, malformed_rate=0.02)
    result = validate(batch.transactions, fraud_spec)

    malformed = batch.malformed.dropna()
    assert len(malformed) == 160
    assert result.rejected.index.equals(malformed.index)  # no clean row rejected, no malformed row passed
    expected = malformed.map(EXPECTED_REASON).astype(object)
    pd.testing.assert_series_equal(result.reasons, expected, check_names=False)
    for kind in MALFORMED_KINDS:
        assert (malformed == kind).sum() >= 20, kind
    assert result.valid.index.equals(batch.malformed.index[batch.malformed.isna().to_numpy()])


def test_simulated_clean_rows_all_pass_including_their_nulls(fraud_spec) -> None:
    batch = simulate(D1, D1 + timedelta(days=1), rows_per_day=5000, seed=3)
    tx = batch.transactions
    assert tx["avg_amount_7d"].isna().any() and tx["country"].isna().any()  # nulls the spec allows
    result = validate(tx, fraud_spec)
    assert result.rejected.empty
    assert len(result.valid) == 5000


def test_simulated_rows_as_text_give_the_same_verdicts(fraud_spec) -> None:
    """The same batch with every numeric feature as text (as a loosely typed source delivers it)."""
    batch = simulate(D1, D1 + timedelta(days=1), rows_per_day=3000, seed=5, malformed_rate=0.03)
    typed = batch.transactions
    as_text = typed.copy()
    for name in ("amount", "hour", "day_of_week", "txn_count_30d", "avg_amount_7d"):
        as_text[name] = typed[name].map(lambda v: None if pd.isna(v) else repr(float(v))).astype(object)
    assert as_text.loc[batch.malformed.eq("pos_inf").to_numpy(), "avg_amount_7d"].eq("inf").all()
    typed_result, text_result = validate(typed, fraud_spec), validate(as_text, fraud_spec)
    assert text_result.rejected.index.equals(typed_result.rejected.index)
    pd.testing.assert_series_equal(text_result.reasons, typed_result.reasons)
