"""The volume check's arithmetic and verdicts, with no warehouse: the robust score against scipy, and what each day is called.

tests/e2e/test_volume_check.py runs the same rules over simulated source rows and real nightly runs.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats

from batchwatch.errors import InvalidArgument
from batchwatch.monitoring.volume import HIGH, INSUFFICIENT, LATE, LOW, MISSING, OK, check_volume, judge_day, robust_score
from batchwatch.spec.model import Volume

MONDAY = date(2026, 11, 2)
SETTINGS = Volume()


def mondays(*counts: int) -> list[tuple[date, int]]:
    """The trailing Mondays before MONDAY with these rows, newest first."""
    return [(MONDAY - timedelta(weeks=week), count) for week, count in enumerate(counts, start=1)]


@pytest.mark.parametrize(
    "rows, history",
    [
        pytest.param(2_400, [3_900, 3_950, 4_050, 4_100], id="a-drop"),
        pytest.param(5_100, [4_000, 4_400, 3_700, 4_100, 3_950, 4_020], id="a-rise-even-history"),
        pytest.param(1_500, [1_480, 1_510, 12_000], id="an-outlier-in-the-history"),
        pytest.param(2_000, [1_999, 2_001], id="two-weeks"),
    ],
)
def test_the_robust_score_is_the_median_and_scipys_normal_scaled_mad(rows: int, history: list[int]) -> None:
    median = float(np.median(history))
    mad = stats.median_abs_deviation(history, scale="normal")
    score = robust_score(rows, history)
    assert score.median == median
    assert score.mad == pytest.approx(mad, rel=1e-12)
    assert score.z == pytest.approx((rows - median) / mad, rel=1e-12)
    assert score.relative_change == pytest.approx(rows / median - 1, rel=1e-12)


def test_an_outlier_week_moves_neither_the_median_nor_the_mad_much() -> None:
    clean, with_outlier = robust_score(1_500, [1_480, 1_510, 1_495]), robust_score(1_500, [1_480, 1_510, 1_495, 12_000])
    assert with_outlier.median == pytest.approx(clean.median, rel=0.01)
    assert with_outlier.mad < 2 * clean.mad


def test_with_a_mad_of_0_any_difference_is_an_infinite_z_and_none_is_0() -> None:
    history = [2_000, 2_000, 2_000, 1_700]
    assert stats.median_abs_deviation(history) == 0
    assert robust_score(2_000, history).z == 0
    assert robust_score(1_999, history).z == -math.inf
    assert robust_score(2_001, history).z == math.inf
    assert robust_score(2_001, history).relative_change == pytest.approx(0.0005)


@pytest.mark.parametrize("history", [[], [2_000, 0], [2_000, -1]])
def test_a_history_without_rows_cannot_score(history: list[int]) -> None:
    with pytest.raises(InvalidArgument, match="positive counts"):
        robust_score(2_000, history)


def test_a_drop_far_outside_the_history_is_low_and_says_by_how_much() -> None:
    history = mondays(3_900, 3_950, 4_050, 4_100)
    z = (2_400 - 4_000) / stats.median_abs_deviation([3_900, 3_950, 4_050, 4_100], scale="normal")
    day = judge_day(MONDAY, 2_400, history, SETTINGS)
    assert (day.verdict, day.late_rows, day.late_reason) == (LOW, None, None)
    assert day.reason == f"2,400 rows, 40% below the median 4,000 of 4 Mondays (robust z {z:.1f})"
    assert day.score.median == 4_000 and day.score.relative_change == pytest.approx(-0.4)


def test_a_rise_far_outside_the_history_is_high() -> None:
    day = judge_day(MONDAY, 6_000, mondays(3_900, 3_950, 4_050, 4_100), SETTINGS)
    assert day.verdict == HIGH
    assert day.reason.startswith("6,000 rows, 50% above the median 4,000 of 4 Mondays (robust z ")


@pytest.mark.parametrize(
    "rows, history, z",
    [
        # A perfectly regular feed: MAD 0 makes every difference infinitely unusual; only the change decides.
        pytest.param(1_900, mondays(2_000, 2_000, 2_000, 2_000), -math.inf, id="mad-0-small-change"),
        # A noisy feed: a third less is within its weekly spread.
        pytest.param(1_500, mondays(1_000, 3_000, 2_000, 2_500), (1_500 - 2_250) / (500 * 1.482602218505602), id="large-change-small-z"),
    ],
)
def test_a_day_needs_both_a_large_robust_z_and_a_large_change_to_be_unusual(rows: int, history: list, z: float) -> None:
    day = judge_day(MONDAY, rows, history, SETTINGS)
    assert day.verdict == OK
    assert day.score.z == pytest.approx(z, rel=1e-12)
    assert abs(day.score.z) <= SETTINGS.max_robust_z or abs(day.score.relative_change) < SETTINGS.min_relative_change


def test_the_same_rows_as_the_median_is_ok() -> None:
    day = judge_day(MONDAY, 2_000, mondays(2_000, 2_000, 2_000, 2_000), SETTINGS)
    assert (day.verdict, day.reason) == (OK, "2,000 rows, the same as the median 2,000 of 4 Mondays (robust z 0.0)")


def test_with_a_mad_of_0_the_reason_says_so() -> None:
    day = judge_day(MONDAY, 1_200, mondays(2_000, 2_000, 2_000, 2_000), SETTINGS)
    assert (day.verdict, day.reason) == (LOW, "1,200 rows, 40% below the median 2,000 of 4 Mondays (robust z -inf, MAD 0)")


@pytest.mark.parametrize(
    "history, reason",
    [
        pytest.param(mondays(2_000, 2_100, 1_900), "no rows by the deadline, against the median 2,000 of 3 Mondays", id="with-history"),
        pytest.param(mondays(0, 0, 0, 0), "no rows by the deadline", id="without-history"),
    ],
)
def test_no_rows_at_all_is_missing_whatever_the_history(history: list, reason: str) -> None:
    day = judge_day(MONDAY, 0, history, SETTINGS)
    assert (day.verdict, day.reason) == (MISSING, reason)


def test_weekdays_without_rows_are_not_history() -> None:
    """Mondays before the model's data began are not Mondays with zero rows: with one left, the day cannot be judged."""
    day = judge_day(MONDAY, 2_000, mondays(2_000, 0, 0, 0), SETTINGS)
    assert (day.verdict, day.score) == (INSUFFICIENT, None)
    assert day.reason == "2,000 rows; 1 of the 4 previous Mondays had rows, 2 needed (volume.min_history) to judge the volume"
    assert judge_day(MONDAY, 2_000, mondays(2_000, 0, 2_000, 0), SETTINGS).verdict == OK


def test_rows_that_came_after_scoring_make_the_day_late() -> None:
    day = judge_day(MONDAY, 4_000, mondays(4_000, 4_000, 4_000, 4_000), SETTINGS, rows_at_scoring=3_688)
    assert (day.verdict, day.late_rows, day.late_share) == (LATE, 312, 312 / 4_000)
    assert day.late_reason == "312 rows (7.8%) arrived after the nightly run scored the day"
    assert day.reason == "4,000 rows, the same as the median 4,000 of 4 Mondays (robust z 0.0); " + day.late_reason


def test_a_few_late_rows_are_tolerated_and_rows_deleted_since_are_not_late() -> None:
    tolerated = judge_day(MONDAY, 4_000, mondays(4_000, 4_000), SETTINGS, rows_at_scoring=3_960)
    assert (tolerated.verdict, tolerated.late_rows, tolerated.late_share, tolerated.late_reason) == (OK, 40, 0.01, None)
    deleted = judge_day(MONDAY, 4_000, mondays(4_000, 4_000), SETTINGS, rows_at_scoring=4_100)
    assert (deleted.verdict, deleted.late_rows, deleted.late_share) == (OK, 0, 0.0)
    emptied = judge_day(MONDAY, 0, mondays(4_000, 4_000), SETTINGS, rows_at_scoring=4_000)
    assert (emptied.verdict, emptied.late_rows, emptied.late_share, emptied.late_reason) == (MISSING, 0, 0.0, None)


def test_late_rows_are_counted_now_against_the_rows_judged_at_the_deadline() -> None:
    """An earlier day keeps the rows its own check judged; its late rows are what has arrived since its nightly run."""
    day = judge_day(MONDAY, 4_000, mondays(4_000, 4_000), SETTINGS, rows_at_scoring=4_000, rows_now=4_400)
    assert (day.rows, day.late_rows, day.late_share, day.verdict) == (4_000, 400, 400 / 4_400, LATE)


def test_late_rows_do_not_hide_a_low_day_and_a_first_week_can_be_late() -> None:
    low = judge_day(MONDAY, 2_000, mondays(4_000, 4_000, 4_000), SETTINGS, rows_at_scoring=1_000)
    assert low.verdict == LOW
    assert low.reason == (
        "2,000 rows, 50% below the median 4,000 of 3 Mondays (robust z -inf, MAD 0); "
        "1,000 rows (50%) arrived after the nightly run scored the day"
    )
    first_week = judge_day(MONDAY, 2_000, mondays(0, 0, 0, 0), SETTINGS, rows_at_scoring=1_900)
    assert (first_week.verdict, first_week.late_rows) == (LATE, 100)


def test_the_check_judges_a_date_not_a_time(sqlite_engine, fraud_spec) -> None:
    with pytest.raises(InvalidArgument, match="judges a UTC date"):
        check_volume(sqlite_engine, fraud_spec, datetime(2026, 11, 2, 6, tzinfo=timezone.utc), run_id="manual")
