"""Releases on real traffic, end to end on PostgreSQL: a canary ramped by statistics, and a guard that rolls a bad promotion back.

One simulated month (shared by every scenario) scores night by night with a champion and a challenger;
each morning the release decision looks at the arms with the labels observed by then. Each scenario is
a model of its own over the same source rows (its own spec name), so one world serves them all:
a better challenger ramps and is promoted, a worse one is stopped at the first look with enough data,
an equal one ramps when the spec allows equal and holds when it asks for superiority, and a forced bad
promotion is rolled back by its guard.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.hashing import in_share
from batchwatch.modeling.training import LABEL, read_labelled, train
from batchwatch.promotion import canary, releases
from batchwatch.promotion.retrain import existing_candidate, promote_candidate
from batchwatch.scoring import predict_interval
from batchwatch.spec import parse_spec
from batchwatch.spec.model import DEFAULT_SPEC_DIR
from batchwatch.warehouse import make_engine, migrate

HISTORY_START = datetime(2026, 9, 1, tzinfo=timezone.utc)
FIRST_DAY = datetime(2026, 9, 15, tzinfo=timezone.utc)
DAYS = 26
ROWS_PER_DAY = 6_000
MORNING = timedelta(days=1, hours=7)  # the release decision of a day runs at 07:00 the day after


def release_spec(name: str, **canary) -> object:
    """The fraud spec under another name, with a canary fit for a month of 6,000 rows a day."""
    data = yaml.safe_load((DEFAULT_SPEC_DIR / "fraud.yaml").read_text())
    data["name"] = name
    data["release"] = {
        "canary": {"enabled": True, "steps": [0.3, 0.6], "margin": 0.05, "min_positives": 20, "max_days_per_step": 12,
                   "guardrails": {"positive_rate": 0.02, "brier": 0.02, "reject_rate": 0.02}, **canary},
        "guard_days": 7, "guard_margin": 0.05,
    }
    return parse_spec(data)


@pytest.fixture(scope="module")
def world(postgres_server_database, tmp_path_factory):
    url = postgres_server_database()
    engine = make_engine(url)
    migrate(engine)
    import os

    os.environ["BATCHWATCH_ARTIFACT_ROOT"] = str(tmp_path_factory.mktemp("artifacts"))
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY + timedelta(days=DAYS), rows_per_day=ROWS_PER_DAY, seed=11, malformed_rate=0.002)
    yield engine
    engine.dispose()


def register(engine, spec, start_day: int, days: int, *, permuted: bool = False) -> int:
    """A version trained on `days` days of the history from `start_day`; `permuted` shuffles its labels (a useless model)."""
    start = HISTORY_START + timedelta(days=start_day)
    end = start + timedelta(days=days)
    labelled = read_labelled(engine, spec, start, end, FIRST_DAY)
    if permuted:
        labelled[LABEL] = np.random.default_rng(3).permutation(labelled[LABEL].to_numpy())
    trained = train(spec, labelled)
    return registry.register(
        engine, spec, trained.pipeline, metrics=trained.metrics, parent_version=None, reference=trained.reference,
        trained_on={"start": start.isoformat(), "end": end.isoformat(), "labels_as_of": FIRST_DAY.isoformat(), "permuted": permuted},
        threshold_policy=trained.threshold_policy, calibration=trained.calibration.to_json(),
    )


def run_release(engine, spec, champion: int, challenger: int, *, days: int = DAYS) -> list[dict]:
    """Champion set, a canary of the challenger from the first day, then each night's scoring and each morning's decision."""
    registry.set_alias(engine, spec.name, "champion", champion, reason="test world", actor="test")
    releases.start_canary(engine, spec, challenger, starts_on=FIRST_DAY.date(), actor="test", reason="test canary")
    return run_days(engine, spec, range(days))


def run_days(engine, spec, offsets) -> list[dict]:
    looks = []
    for offset in offsets:
        day = FIRST_DAY + timedelta(days=offset)
        predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"nightly-{offset}")
        look = canary.decide(engine, spec, today=(day + timedelta(days=1)).date(), as_of=day + MORNING, run_id=f"morning-{offset}", actor="test")
        looks.append(look)
    return looks


def events(engine, model: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT event, version, reason, actor, details FROM model_events WHERE model_name = :m ORDER BY id").columns(details=sa.JSON),
            {"m": model},
        ).mappings().all()
    return [dict(row) for row in rows]


def verdicts(looks: list[dict]) -> list[str | None]:
    return [look.get("verdict") for look in looks]


@pytest.fixture(scope="module")
def better(world):
    spec = release_spec("fraud_better")
    weak, strong = register(world, spec, 8, 1), register(world, spec, 0, 10)
    return spec, weak, strong, run_release(world, spec, weak, strong)


def test_a_better_challenger_ramps_and_is_promoted(world, better):
    spec, weak, strong, looks = better
    seen = verdicts(looks)
    assert seen[0] == "insufficient_data"  # no label has matured on the first morning
    assert "advance" in seen and "promote" in seen and "stop" not in seen
    assert seen.index("advance") < seen.index("promote")
    assert registry.alias_version(world, spec.name, "champion") == strong
    history = releases.release_history(world, spec.name)
    canary_release = next(r for r in history if r.kind == "canary")
    assert canary_release.status == "promoted" and canary_release.step == 1
    advanced = looks[seen.index("advance")]
    primary = next(t for t in advanced["tests"] if t["role"] == "primary")
    assert primary["test"] == "delong_unpaired" and primary["cs_lower"] > -spec.release.canary.margin
    assert advanced["power"] >= spec.release.canary.power
    # every look is an audited event with its numbers, and the promotion names the canary
    recorded = [e for e in events(world, spec.name) if e["event"] == "release_decision"]
    assert [e["details"]["verdict"] for e in recorded][: len(seen)] == seen[: len(recorded)]
    promoted = [e for e in events(world, spec.name) if e["event"] == "promoted"]
    assert promoted and promoted[-1]["actor"] == "test" and "canary passed every step" in promoted[-1]["reason"]
    # a guard starts: the previous champion shadows the new one
    guard = next(r for r in history if r.kind == "guard")
    assert (guard.version, guard.baseline_version) == (strong, weak)


def test_arms_never_change_for_an_entity(world, better):
    """Each row's arm is its key's bucket under the release salt at the share in force that day; a rerun draws the same arms,
    and the larger share only adds entities."""
    spec = better[0]
    with world.connect() as connection:
        release = next(r for r in releases.release_history(world, spec.name) if r.kind == "canary")
        steps = releases.steps_of(connection, release.id)
        rows = connection.execute(
            sa.text("SELECT ds, entity_id, arm FROM predictions WHERE model_name = :m AND role = 'champion' AND arm IS NOT NULL"
                    " ORDER BY ds, entity_id"),
            {"m": spec.name},
        ).all()
    assert rows
    for step in steps:
        days = [row for row in rows if step["effective_from"] <= row.ds < (step["effective_until"] or FIRST_DAY.date() + timedelta(days=DAYS))]
        expected = in_share([row.entity_id for row in days], release.salt, step["share"])
        assert [row.arm == "treatment" for row in days] == expected.tolist()
    keys = [row.entity_id for row in rows]
    assert not (in_share(keys, release.salt, 0.3) & ~in_share(keys, release.salt, 0.6)).any()
    # a rerun of the first day, after the ramp moved on, serves that day's arms again
    first = FIRST_DAY.date()
    before = {row.entity_id: row.arm for row in rows if row.ds == first}
    predict_interval(world, spec, start=FIRST_DAY, end=FIRST_DAY + timedelta(days=1), run_id="rerun")
    with world.connect() as connection:
        after = dict(connection.execute(
            sa.text("SELECT entity_id, arm FROM predictions WHERE model_name = :m AND ds = :d AND role = 'champion'"), {"m": spec.name, "d": first}
        ).all())
    assert after == before
    # the served view shows, per entity and day, the prediction of the model its arm was served by
    with world.connect() as connection:
        served = connection.execute(
            sa.text("SELECT arm, role, COUNT(*) FROM served_predictions WHERE model_name = :m AND ds = :d GROUP BY arm, role"),
            {"m": spec.name, "d": first},
        ).all()
    assert {(arm, role) for arm, role, _ in served} == {("control", "champion"), ("treatment", "shadow")}


def test_a_worse_challenger_is_stopped_at_the_first_look_with_enough_data(world):
    spec = release_spec("fraud_worse")
    good, useless = register(world, spec, 0, 10), register(world, spec, 0, 10, permuted=True)
    looks = run_release(world, spec, good, useless, days=12)
    seen = verdicts(looks)
    first_verdict = next(i for i, v in enumerate(seen) if v != "insufficient_data")
    assert seen[first_verdict] == "stop", seen
    stop = looks[first_verdict]
    primary = next(t for t in stop["tests"] if t["role"] == "primary")
    assert primary["outcome"] == "worse" and primary["cs_upper"] < 0
    # share back to 0: the days after the stop are served by the champion alone
    stopped_on = stop["decided_on"]
    with world.connect() as connection:
        arms_after = connection.execute(
            sa.text("SELECT COUNT(*) FROM predictions WHERE model_name = :m AND ds >= :d AND arm IS NOT NULL"), {"m": spec.name, "d": stopped_on}
        ).scalar_one()
        alert = connection.execute(sa.text("SELECT kind, status, summary FROM alerts WHERE model_name = :m"), {"m": spec.name}).one()
    assert arms_after == 0
    assert alert.kind == "release" and alert.status == "open" and "stopped" in alert.summary
    assert registry.alias_version(world, spec.name, "champion") == good
    assert releases.release_history(world, spec.name)[0].status == "stopped"


@pytest.mark.parametrize(("superiority", "ramps"), [(False, True), (True, False)])
def test_an_equal_challenger_ramps_only_when_equal_is_allowed(world, superiority, ramps):
    spec = release_spec(f"fraud_equal_{int(superiority)}", require_superiority=superiority, max_days_per_step=30)
    first, second = register(world, spec, 0, 5), register(world, spec, 5, 5)
    looks = run_release(world, spec, first, second, days=16)
    seen = verdicts(looks)
    assert "stop" not in seen
    assert ("advance" in seen) is ramps, seen
    if not ramps:
        held = [look for look in looks if look["verdict"] == "hold"]
        assert held and all(next(t for t in look["tests"] if t["role"] == "primary")["outcome"] in ("non_inferior", "undecided") for look in held)


def test_a_bad_promotion_is_rolled_back_within_the_guard(world):
    spec = release_spec("fraud_guarded", enabled=False)
    good, useless = register(world, spec, 0, 10), register(world, spec, 0, 10, permuted=True)
    registry.set_alias(world, spec.name, "champion", good, reason="test world", actor="test")
    candidate = existing_candidate(world, spec, useless, as_of=FIRST_DAY, window_days=None, dry_run=False)
    outcome = promote_candidate(world, spec, candidate, [], force_reason=None, actor="test", today=FIRST_DAY.date())
    assert outcome["decision"] == "promoted"
    assert registry.alias_version(world, spec.name, "challenger") == good  # the previous champion shadows during the guard
    looks = run_days(world, spec, range(10))
    seen = verdicts(looks)
    assert "stop" in seen, [look["reason"] for look in looks]
    stopped = looks[seen.index("stop")]
    assert stopped["applied"].startswith("rolled back")
    assert registry.alias_version(world, spec.name, "champion") == good
    assert registry.get_version(world, spec.name, useless)["rolled_back_at"] is not None
    guard = releases.release_history(world, spec.name)[0]
    assert guard.kind == "guard" and guard.status == "rolled_back"
    rollback = [e for e in events(world, spec.name) if e["event"] == "rollback"]
    assert rollback and rollback[-1]["reason"].startswith(f"guard of release #{guard.id}")
    with world.connect() as connection:
        opened = connection.execute(sa.text("SELECT kind FROM alerts WHERE model_name = :m AND status = 'open'"), {"m": spec.name}).scalar_one()
    assert opened == "release"
