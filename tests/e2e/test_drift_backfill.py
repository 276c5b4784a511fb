"""A backfilled drift check is judged by the version that was champion when its window ended, on PostgreSQL and on SQLite.

v1 learns clean amounts, v2 amounts 65% larger (a mean shift). v2 is promoted at PROMOTED and rolled back
from at ROLLED_BACK; each window's verdict on `amount` tells whose reference judged it, and the stored
n_reference of the positive rate is that version's number of validation scores.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion, read_labelled, train
from batchwatch.monitoring import drift
from batchwatch.monitoring.report import report_relpath
from batchwatch.promotion.retrain import rollback
from batchwatch.scoring import NoChampion
from batchwatch.spec import get_spec

from .conftest import HISTORY_START, count
from .test_faults import run_with_retries

# Enough rows a day that a clean window can be called ok: KS needs ~2,500 to see a 0.1 SD shift with 80% power.
ROWS_PER_DAY = 4_000

V1_TRAINED_UNTIL = datetime(2026, 10, 11, tzinfo=timezone.utc)
SHIFT = V1_TRAINED_UNTIL  # amounts grow from here ...
V2_TRAINED_FROM, V2_TRAINED_UNTIL = datetime(2026, 10, 12, tzinfo=timezone.utc), datetime(2026, 10, 21, tzinfo=timezone.utc)
CLEAN_AGAIN = datetime(2026, 10, 23, tzinfo=timezone.utc)  # ... to here
DATA_END = datetime(2026, 10, 26, tzinfo=timezone.utc)
# When the champion moved: v1 took office late (a bootstrap that replays history), then v2, then back to v1.
V1_IN_OFFICE = datetime(2026, 10, 21, 6, tzinfo=timezone.utc)
PROMOTED = datetime(2026, 10, 22, 12, tzinfo=timezone.utc)
ROLLED_BACK = datetime(2026, 10, 24, 12, tzinfo=timezone.utc)
# Window ends (24-hour windows) and the version that must judge each.
BEFORE_V1_TRAINED = datetime(2026, 10, 8, tzinfo=timezone.utc)  # no version can judge it
REPLAYED = datetime(2026, 10, 21, tzinfo=timezone.utc)  # before v1 took office, after its training data: v1, shifted data
BEFORE_PROMOTION = datetime(2026, 10, 22, tzinfo=timezone.utc)  # v1, shifted data
BETWEEN = datetime(2026, 10, 24, tzinfo=timezone.utc)  # v2, clean data
AFTER_ROLLBACK = datetime(2026, 10, 25, tzinfo=timezone.utc)  # v1, clean data


def date_champion_moves(engine, *moments: datetime) -> None:
    """Date the champion moves, oldest first: the registry records each at the wall clock, the history replayed here is in the past."""
    query = sa.text("SELECT id FROM model_events WHERE model_name = 'fraud' AND event IN :events ORDER BY id").bindparams(
        sa.bindparam("events", expanding=True)
    )
    with engine.begin() as connection:
        moves = connection.execute(query, {"events": list(registry.CHAMPION_EVENTS)}).scalars().all()
        for move, moment in zip(moves, moments, strict=True):
            connection.execute(sa.text("UPDATE model_events SET created_at = :t WHERE id = :id"), {"t": moment, "id": move})


def promote(engine, spec, *, start: datetime, end: datetime) -> int:
    """Train on [start, end), register the version and promote it, as the weekly retrain's promote step does."""
    trained = train(spec, read_labelled(engine, spec, start, end, end))
    trained_on = {"start": start.isoformat(), "end": end.isoformat(), "labels_as_of": end.isoformat()}
    version = registry.register(engine, spec, trained.pipeline, metrics=trained.metrics, trained_on=trained_on, parent_version=1,
                                reference=trained.reference)
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        registry.point_alias(connection, spec.name, "champion", version, event="promoted", reason="beat v1", actor="test", details={})
    return version


@pytest.fixture
def champion_history(engine):
    spec = get_spec("fraud")
    simulate_into(engine, start=HISTORY_START, end=SHIFT, rows_per_day=ROWS_PER_DAY)
    simulate_into(engine, start=SHIFT, end=CLEAN_AGAIN, rows_per_day=ROWS_PER_DAY, seed=8, scenarios=(Scenario("mean_shift", SHIFT, "amount", 1.0),))
    simulate_into(engine, start=CLEAN_AGAIN, end=DATA_END, rows_per_day=ROWS_PER_DAY, seed=9)
    assert bootstrap_champion(engine, spec, start=HISTORY_START, end=V1_TRAINED_UNTIL) == 1
    assert promote(engine, spec, start=V2_TRAINED_FROM, end=V2_TRAINED_UNTIL) == 2
    rollback(engine, "fraud", to_version=1, reason="v2 flags too many large purchases", actor="test")
    date_champion_moves(engine, V1_IN_OFFICE, PROMOTED, ROLLED_BACK)
    return engine, spec


def stored(engine, window_end: datetime) -> dict[tuple[str, str], dict]:
    query = sa.text("SELECT * FROM drift_results WHERE model_name = 'fraud' AND window_end = :e")
    with engine.connect() as connection:
        return {(row["column_name"], row["test"]): dict(row) for row in connection.execute(query, {"e": window_end}).mappings()}


def test_champion_at_follows_every_move_of_the_alias(champion_history):
    engine, _ = champion_history
    assert [(term.version, term.event) for term in registry.champion_terms(engine, "fraud")] == [
        (1, "set_champion"), (2, "promoted"), (1, "rollback"),
    ]
    moment = timedelta(microseconds=1)
    assert registry.champion_at(engine, "fraud", V1_IN_OFFICE - moment) is None
    assert registry.champion_at(engine, "fraud", V1_IN_OFFICE) == 1, "a move counts from the instant it was recorded"
    assert registry.champion_at(engine, "fraud", PROMOTED - moment) == 1
    assert registry.champion_at(engine, "fraud", PROMOTED) == 2
    assert registry.champion_at(engine, "fraud", ROLLED_BACK - moment) == 2
    assert registry.champion_at(engine, "fraud", ROLLED_BACK) == 1
    assert registry.champion_at(engine, "fraud", datetime.now(timezone.utc)) == registry.alias_version(engine, "fraud", "champion") == 1
    assert registry.champion_at(engine, "another_model", ROLLED_BACK) is None


def test_each_window_is_judged_by_the_reference_of_the_version_champion_when_it_ended(champion_history):
    engine, spec = champion_history
    scored = {version: drift.load_reference(engine, "fraud", version).scored for version in (1, 2)}
    assert scored[1] != scored[2], "the versions' references differ, so n_reference tells which one judged a window"

    # Backfilled out of order: the window v2 judged comes first and opens an incident under v2, although v1 is champion today.
    expected = {BETWEEN: (2, drift.DRIFTED), AFTER_ROLLBACK: (1, drift.OK), REPLAYED: (1, drift.DRIFTED), BEFORE_PROMOTION: (1, drift.DRIFTED)}
    summaries = {end: drift.check_window(engine, spec, window_end=end, run_id=f"backfill__{end:%F}") for end in expected}

    for end, (version, amount_verdict) in expected.items():
        rows = stored(engine, end)
        assert summaries[end]["model_version"] == version
        assert {row["model_version"] for row in rows.values()} == {version}
        assert rows["amount", "ks"]["verdict"] == amount_verdict, f"amount in the window ending {end:%F}, judged by v{version}"
        assert rows[drift.SCORES, "positive_rate"]["n_reference"] == scored[version]
    assert summaries[BETWEEN]["incident"]["status"] == "open" and summaries[AFTER_ROLLBACK]["incident"]["status"] == "resolved"
    with engine.connect() as connection:
        incidents = connection.execute(sa.text("SELECT model_version, status FROM alerts WHERE model_name = 'fraud'")).all()
    assert [tuple(incident) for incident in incidents] == [(2, "resolved")], "the incident names the version that judged its window"


def test_a_window_older_than_the_first_champions_training_data_fails_on_its_first_try_and_writes_nothing(champion_history, airflow_db):
    engine, spec = champion_history
    message = (
        r"^fraud: the window \[2026-10-07 00:00, 2026-10-08 00:00\) UTC ended before the model's first champion, v1, took office on "
        r"2026-10-21 06:00 UTC, and the window begins before its training data end \(2026-10-11 00:00 UTC\): no version's reference "
        r"can judge it. Check windows that begin at or after 2026-10-11 00:00 UTC.$"
    )
    with pytest.raises(drift.BeforeFirstChampion, match=message):
        drift.check_window(engine, spec, window_end=BEFORE_V1_TRAINED, run_id="backfill__early")

    state, tasks = run_with_retries("fraud_hourly_drift", BEFORE_V1_TRAINED)
    assert (state, tasks["check_drift"]) == ("failed", ("failed", 1)), "permanent: a retry would read the same registry"
    assert count(engine, "drift_results") == 0 and count(engine, "alerts") == 0
    assert not (registry.artifact_root() / report_relpath("fraud", BEFORE_V1_TRAINED)).exists()


def test_with_no_champion_move_recorded_the_alias_is_all_there_is(champion_history):
    engine, spec = champion_history
    start, end = drift.window_of(spec, BEFORE_V1_TRAINED)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM model_events WHERE model_name = 'fraud'"))
    assert drift.champion_of_window(engine, spec, start, end).version == registry.alias_version(engine, "fraud", "champion") == 1

    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM model_aliases WHERE model_name = 'fraud'"))
    with pytest.raises(NoChampion, match="^model 'fraud' has no champion, so there is no reference to check drift against$"):
        drift.champion_of_window(engine, spec, start, end)
