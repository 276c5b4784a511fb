"""The daily volume and freshness check over simulated source rows, on PostgreSQL (and SQLite where the SQL is the point).

The simulator gives every day exactly `rows_per_day` rows, so with it a feed's MAD is 0 and min_relative_change
decides; the quiet month draws each day's rows from a weekly cycle with Poisson noise instead, one day at a time.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from batchwatch import scoring, warehouse
from batchwatch.demo import simulate
from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring.volume import INSUFFICIENT, LATE, LOW, MISSING, OK, check_volume
from batchwatch.spec import get_spec, parse_spec
from batchwatch.spec.model import ModelSpec
from batchwatch.warehouse import QueryRefused

from .conftest import count

START = datetime(2026, 10, 5, tzinfo=timezone.utc)  # a Monday
ROWS = 2_000
MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY = (date(2026, 11, 2) + timedelta(days=i) for i in range(5))  # the fifth week
POSTGRES = pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
FRAUD = get_spec("fraud")
FRAUD_YAML = Path(__file__).resolve().parents[2] / "include" / "models" / "fraud.yaml"


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


@pytest.fixture
def five_weeks(engine):
    """Five weeks of 2,000 rows a day from a Monday, labelled up to the fourth week."""
    simulate_into(engine, start=START, end=START + timedelta(weeks=5), rows_per_day=ROWS, labels_as_of=START + timedelta(weeks=4))
    return engine


def stored(engine, ds: date) -> dict:
    query = sa.text("SELECT * FROM volume_daily WHERE model_name = 'fraud' AND ds = :ds").columns(history=sa.JSON)
    with engine.connect() as connection:
        row = dict(connection.execute(query, {"ds": ds}).mappings().one())
    row["ds"] = date.fromisoformat(str(row["ds"]))
    return row


def delete_rows(engine, day: date, where: str = "1 = 1") -> int:
    with engine.begin() as connection:
        return connection.execute(
            sa.text(f"DELETE FROM transactions WHERE event_time >= :s AND event_time < :e AND {where}"),
            {"s": midnight(day), "e": midnight(day + timedelta(days=1))},
        ).rowcount


def add_rows(engine, day: date, extra: int) -> None:
    """`extra` more rows of `day` that were not there before: the simulator's rows past the day's first ROWS ids."""
    batch = simulate.simulate(midnight(day), midnight(day + timedelta(days=1)), rows_per_day=ROWS + extra)
    warehouse.load_frame(engine, "transactions", batch.transactions.iloc[ROWS:])


def with_source(**source) -> ModelSpec:
    data = yaml.safe_load(FRAUD_YAML.read_text())
    data["source"] = {"entity_key": "transaction_id", "event_time": "event_time", **source}
    return parse_spec(data)


def test_a_normal_day_is_ok_a_thinned_one_low_and_an_empty_one_missing(five_weeks) -> None:
    engine = five_weeks
    assert delete_rows(engine, WEDNESDAY, "transaction_id % 5 < 2") == 800
    assert delete_rows(engine, FRIDAY) == ROWS

    normal = check_volume(engine, FRAUD, MONDAY, run_id="monday")
    assert (normal.verdict, normal.findings, normal.judged) == (OK, {}, True)
    row = stored(engine, MONDAY)
    assert (row["rows"], row["expected_rows"], row["mad"], row["robust_z"], row["relative_change"]) == (ROWS, ROWS, 0, 0, 0)
    assert row["history"] == [{"ds": (MONDAY - timedelta(weeks=w)).isoformat(), "rows": ROWS} for w in range(1, 5)]
    assert (row["verdict"], row["reason"], row["rows_at_scoring"], row["late_rows"]) == (
        OK, "2,000 rows, the same as the median 2,000 of 4 Mondays (robust z 0.0)", None, None
    )

    low = check_volume(engine, FRAUD, WEDNESDAY, run_id="wednesday")
    reason = "1,200 rows, 40% below the median 2,000 of 4 Wednesdays (robust z -inf, MAD 0)"
    assert (low.verdict, low.findings, low.judged) == (LOW, {f"volume:{WEDNESDAY}": reason}, True)
    row = stored(engine, WEDNESDAY)
    assert (row["rows"], row["robust_z"], row["relative_change"], row["verdict"], row["reason"]) == (1_200, -math.inf, -0.4, LOW, reason)
    summary = json.loads(json.dumps(low.summary(), allow_nan=False))
    assert summary["days"][-1] == {
        "ds": WEDNESDAY.isoformat(), "rows": 1_200, "expected_rows": ROWS, "robust_z": None, "relative_change": -0.4, "late_share": None,
        "verdict": LOW,
    }

    missing = check_volume(engine, FRAUD, FRIDAY, run_id="friday")
    reason = "no rows by the deadline, against the median 2,000 of 4 Fridays"
    assert (missing.verdict, missing.findings, missing.judged) == (MISSING, {f"volume:{FRIDAY}": reason}, True)
    assert (stored(engine, FRIDAY)["rows"], stored(engine, FRIDAY)["verdict"]) == (0, MISSING)
    # Friday's check re-counted the week before it: Wednesday keeps the verdict its own check gave (and is not
    # reported again); the days no check had judged are judged now.
    assert [(day.ds, day.verdict) for day in missing.days] == [
        (FRIDAY - timedelta(days=offset), OK if offset != 2 else LOW) for offset in range(7, 0, -1)
    ] + [(FRIDAY, MISSING)]
    assert stored(engine, WEDNESDAY)["run_id"] == "friday"
    assert count(engine, "volume_daily") == 12  # Monday to Friday, and the week before each


@POSTGRES
def test_rows_that_arrive_after_the_nightly_run_scored_the_day_make_it_late(five_weeks) -> None:
    engine = five_weeks
    delete_rows(engine, TUESDAY)
    delete_rows(engine, WEDNESDAY)
    simulate_into(engine, start=midnight(TUESDAY), end=midnight(THURSDAY), rows_per_day=ROWS, malformed_rate=0.01)
    bootstrap_champion(engine, FRAUD, start=START, end=START + timedelta(weeks=3))
    for day in (TUESDAY, WEDNESDAY):
        summary = scoring.predict_interval(engine, FRAUD, start=midnight(day), end=midnight(day + timedelta(days=1)), run_id=f"nightly {day}")
        assert (summary["rows_read"], summary["rows_rejected"]) == (ROWS, 20)

    on_time = check_volume(engine, FRAUD, TUESDAY, run_id="tuesday")
    assert (on_time.verdict, on_time.findings) == (OK, {})
    row = stored(engine, TUESDAY)
    assert (row["rows_at_scoring"], row["late_rows"], row["late_share"]) == (ROWS, 0, 0)

    add_rows(engine, WEDNESDAY, 160)
    late = check_volume(engine, FRAUD, WEDNESDAY, run_id="wednesday")
    reason = "160 rows (7.4%) arrived after the nightly run scored the day"
    assert (late.verdict, late.findings, late.judged) == (LATE, {f"late:{WEDNESDAY}": reason}, True)
    row = stored(engine, WEDNESDAY)
    assert (row["rows"], row["rows_at_scoring"], row["late_rows"], row["late_share"]) == (2_160, ROWS, 160, pytest.approx(160 / 2_160))
    assert row["reason"] == "2,160 rows, 8% above the median 2,000 of 4 Wednesdays (robust z inf, MAD 0); " + reason

    # Thursday's check (Thursday not yet scored) re-counts both days: Tuesday's rows came later than its check.
    add_rows(engine, TUESDAY, 40)
    thursday = check_volume(engine, FRAUD, THURSDAY, run_id="thursday")
    assert (thursday.verdict, thursday.judged) == (OK, True)
    assert thursday.findings == {
        f"late:{TUESDAY}": "40 rows (2%) arrived after the nightly run scored the day",
        f"late:{WEDNESDAY}": reason,
    }
    row = stored(engine, TUESDAY)
    assert (row["rows"], row["expected_rows"], row["rows_at_scoring"], row["late_rows"], row["verdict"]) == (ROWS, ROWS, ROWS, 40, LATE)
    assert row["late_share"] == pytest.approx(40 / 2_040)
    assert stored(engine, THURSDAY)["rows_at_scoring"] is None


@POSTGRES
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_quiet_month_under_a_weekly_cycle_and_poisson_noise_has_no_findings_and_a_cut_still_shows(engine, seed: int) -> None:
    """Four weeks of history, then every day of four weeks checked; the simulator is constant, so each day's rows are drawn here."""
    weekly = np.array([2_000, 2_100, 2_050, 2_200, 2_600, 1_500, 1_300])
    rng = np.random.default_rng(seed)
    for offset in range(8 * 7):
        day = START + timedelta(days=offset)
        simulate_into(engine, start=day, end=day + timedelta(days=1), rows_per_day=int(rng.poisson(weekly[day.weekday()])), seed=seed)

    checks = [check_volume(engine, FRAUD, (START + timedelta(days=offset)).date(), run_id=f"day {offset}") for offset in range(28, 56)]
    assert [check.findings for check in checks] == [{}] * 28
    assert {check.verdict for check in checks} == {OK}
    scores = [check.days[-1].score for check in checks]
    assert all(score.mad > 0 for score in scores)
    # The MAD of four weekdays is itself noisy: the robust z alone would have alerted on some of these days.
    assert any(abs(score.z) > FRAUD.volume.max_robust_z for score in scores)
    assert max(abs(score.relative_change) for score in scores) < FRAUD.volume.min_relative_change

    last = checks[-1].day
    delete_rows(engine, last, "transaction_id % 5 < 2")
    assert check_volume(engine, FRAUD, last, run_id="again").verdict == LOW


def test_rerunning_a_day_writes_the_same_row(five_weeks) -> None:
    engine = five_weeks
    delete_rows(engine, WEDNESDAY, "transaction_id % 2 = 0")
    first = check_volume(engine, FRAUD, WEDNESDAY, run_id="first")
    rows = {day.ds: stored(engine, day.ds) for day in first.days}
    again = check_volume(engine, FRAUD, WEDNESDAY, run_id="retry")
    assert first.incident["status"] == "open" and again.incident is None, "the rerun finds the incident the first run opened"
    assert replace(again, incident=None) == replace(first, incident=None)
    assert count(engine, "volume_daily") == len(rows) == FRAUD.volume.late_days + 1
    for ds, row in rows.items():
        assert {**stored(engine, ds), "run_id": "first", "checked_at": row["checked_at"]} == row


def test_the_first_weeks_of_a_model_are_insufficient_history_not_alerts(five_weeks) -> None:
    engine = five_weeks
    first = check_volume(engine, FRAUD, START.date(), run_id="first day")
    assert (first.verdict, first.findings, first.judged) == (INSUFFICIENT, {}, False)
    # The week before the model's data began has no rows and no scoring: nothing is judged there.
    assert [day.ds for day in first.days] == [START.date()]
    assert stored(engine, START.date())["reason"] == (
        "2,000 rows; 0 of the 4 previous Mondays had rows, 2 needed (volume.min_history) to judge the volume"
    )

    second = check_volume(engine, FRAUD, START.date() + timedelta(weeks=1), run_id="second monday")
    assert (second.verdict, second.findings, second.judged) == (INSUFFICIENT, {}, False)
    assert {day.verdict for day in second.days} == {INSUFFICIENT}
    third = check_volume(engine, FRAUD, START.date() + timedelta(weeks=2), run_id="third monday")
    assert (third.verdict, third.findings, third.judged) == (OK, {}, True)


def test_a_source_query_is_counted_like_a_table_and_its_sql_errors_name_the_spec_field(five_weeks) -> None:
    engine = five_weeks
    online = with_source(query="SELECT * FROM transactions WHERE channel = 'online'")
    check = check_volume(engine, online, MONDAY, run_id="query")
    with engine.connect() as connection:
        expected = connection.execute(
            sa.text("SELECT COUNT(*) FROM transactions WHERE channel = 'online' AND event_time >= :s AND event_time < :e"),
            {"s": midnight(MONDAY), "e": midnight(MONDAY + timedelta(days=1))},
        ).scalar_one()
    assert 0 < check.days[-1].rows == expected < ROWS

    broken = with_source(query="SELECT * FROM no_such_table")
    with pytest.raises(QueryRefused, match=r"model spec fraud: source\.query: the database refused the query"):
        check_volume(engine, broken, MONDAY, run_id="broken")
    assert count(engine, "volume_daily", "run_id = 'broken'") == 0
