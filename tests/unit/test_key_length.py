"""An entity key longer than the predictions' unique index can hold is a rejected row, not a failed day."""

from __future__ import annotations

import pandas as pd
import pytest

from batchwatch.data.validation import MAX_KEY_LENGTH, validate
from batchwatch.spec import parse_spec

SPEC = parse_spec(
    {
        "name": "keyed",
        "source": {"table": "events", "entity_key": "id", "event_time": "ts"},
        "features": [{"name": "x", "type": "numeric"}, {"name": "c", "type": "categorical", "categories": ["a"]}],
    }
)


@pytest.mark.parametrize(
    ("key", "rejected"),
    [
        pytest.param("k" * MAX_KEY_LENGTH, False, id="at-the-limit"),
        pytest.param("\U0001f600" * MAX_KEY_LENGTH, False, id="at-the-limit-in-4-byte-characters"),
        pytest.param("k" * (MAX_KEY_LENGTH + 1), True, id="one-over"),
        pytest.param("k" * 3_000, True, id="3000-characters"),
    ],
)
def test_a_key_over_the_limit_is_rejected_with_the_limit_in_the_reason(key: str, rejected: bool) -> None:
    raw = pd.DataFrame({"id": pd.Series(["short", key, None], dtype=str), "x": [1.0, 2.0, 3.0], "c": ["a", "a", "a"]})
    checked = validate(raw, SPEC)
    expected = ["id is null"] + ([f"id longer than {MAX_KEY_LENGTH} characters"] if rejected else [])
    assert sorted(checked.reasons) == sorted(expected)
    assert checked.valid["id"].tolist() == ["short"] + ([] if rejected else [key])
    if rejected:
        assert checked.rejected.loc[checked.reasons == f"id longer than {MAX_KEY_LENGTH} characters", "id"].tolist() == [key]

