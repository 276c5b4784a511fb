"""How much of its time span a drift window's rows must cover before the check gives a verdict."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from batchwatch.monitoring import drift
from batchwatch.spec import SpecError, parse_spec

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
END = START + timedelta(hours=24)


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        pytest.param(START, END - timedelta(seconds=36), 0.9995833, id="whole-window"),
        pytest.param(START, START + timedelta(hours=1), 1 / 24, id="only-the-first-hour"),
        pytest.param(END - timedelta(hours=1), END - timedelta(seconds=1), (3600 - 1) / 86400, id="only-the-last-hour"),
        pytest.param(START + timedelta(hours=2), END, 22 / 24, id="began-two-hours-late"),
        pytest.param(None, None, 0.0, id="no-rows"),
    ],
)
def test_span_coverage_is_the_share_of_the_window_between_its_first_and_last_row(first, last, expected):
    assert drift.span_coverage(first, last, START, END) == pytest.approx(expected, rel=1e-6)


def test_a_window_under_the_minimum_coverage_says_why(fraud_spec):
    assert fraud_spec.drift.min_window_coverage == 0.95
    last = START + timedelta(hours=1)
    reason = drift.partial_window_reason(fraud_spec, 1 / 24, START, last)
    assert reason is not None
    assert "2026-10-01 00:00 to 2026-10-01 01:00 UTC" in reason and "4.2% of its 24 h" in reason
    assert "drift.min_window_coverage (95%)" in reason
    # One hour of lag in a day is tolerated; an empty window is left to drift.min_rows.
    assert drift.partial_window_reason(fraud_spec, 23 / 24, START, END - timedelta(hours=1)) is None
    assert drift.partial_window_reason(fraud_spec, 0.0, None, None) is None


def test_the_minimum_coverage_is_configurable_and_zero_turns_it_off(fraud_data):
    fraud_data["drift"]["min_window_coverage"] = 0
    spec = parse_spec(fraud_data)
    assert drift.partial_window_reason(spec, 0.0, START, START) is None
    fraud_data["drift"]["min_window_coverage"] = 1.5
    with pytest.raises(SpecError, match="drift.min_window_coverage"):
        parse_spec(fraud_data)
