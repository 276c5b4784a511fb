"""Partition retention: the nightly run drops the days older than the spec keeps, with their rejects, audited; nothing else moves."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
import yaml

from batchwatch.demo.seed import simulate_into
from batchwatch.scoring import predict_interval
from batchwatch.scoring.retention import apply_retention
from batchwatch.spec import get_spec
from batchwatch.spec.model import DEFAULT_SPEC_DIR

from .conftest import DAY, ROWS_PER_DAY, count, run_day

DAYS = [DAY + timedelta(days=offset) for offset in range(3)]


@pytest.fixture
def short_retention(tmp_path, monkeypatch):
    """The fraud spec keeping two scored days (the shortest its performance check allows once it looks back one day, labels at once)."""
    data = yaml.safe_load((DEFAULT_SPEC_DIR / "fraud.yaml").read_text())
    data["performance"]["lookback_days"] = 1
    data["label"]["delay_days"] = 0
    data["retention"] = {"predictions_days": 2}
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    return get_spec("fraud")


def partitions(engine) -> list[str]:
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        return sorted(connection.execute(
            sa.text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'predictions'::regclass")
        ).scalars())


def test_the_nightly_run_keeps_the_last_days_and_audits_the_drop(fraud_world, short_retention):
    engine = fraud_world["engine"]
    simulate_into(engine, start=DAYS[2], end=DAYS[2] + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    for day in DAYS[:2]:
        predict_interval(engine, short_retention, start=day, end=day + timedelta(days=1), run_id=f"nightly-{day:%d}")
    first = {"ds": DAYS[0].date()}
    kept_rows = count(engine, "predictions", "ds = :ds", ds=DAYS[1].date())
    dropped_rows = count(engine, "predictions", "ds = :ds", **first)
    assert dropped_rows > 0 and count(engine, "rejected_rows", "ds = :ds", **first) > 0

    # The third night runs through Airflow: predict, then apply_retention keeps days two and three.
    state, results = run_day("fraud_nightly_predict", DAYS[2])
    assert state == "success"
    outcome = results["apply_retention"]
    assert outcome["dropped"]["days"] == [DAYS[0].date().isoformat()] and outcome["dropped"]["predictions"] == dropped_rows
    assert count(engine, "predictions", "ds = :ds", **first) == 0 and count(engine, "rejected_rows", "ds = :ds", **first) == 0
    assert count(engine, "predictions", "ds = :ds", ds=DAYS[1].date()) == kept_rows
    assert count(engine, "daily_scoring", "ds = :ds", **first) == 1, "the day's summary outlives its rows"
    if engine.dialect.name == "postgresql":
        left = partitions(engine)
        assert f"predictions_fraud_{DAYS[0]:%Y%m%d}" not in left and {f"predictions_fraud_{day:%Y%m%d}" for day in DAYS[1:]} <= set(left)
    with engine.connect() as connection:
        (event,) = connection.execute(
            sa.text("SELECT reason, actor, details FROM model_events WHERE event = 'retention'").columns(details=sa.JSON)
        ).all()
    assert event.details["rejected_rows"] > 0 and event.actor.startswith("fraud_nightly_predict/")
    assert "retention.predictions_days 2" in event.reason

    # Idempotent: again, nothing is left to drop and nothing more is recorded.
    again = apply_retention(engine, short_retention, scored_day=DAYS[2].date(), actor="test")
    assert again["dropped"]["days"] == [] and count(engine, "model_events", "event = 'retention'") == 1


def test_a_retention_shorter_than_the_performance_check_reads_back_is_refused():
    from batchwatch.spec import SpecError, parse_spec

    data = yaml.safe_load((DEFAULT_SPEC_DIR / "fraud.yaml").read_text())
    data["retention"] = {"predictions_days": 10}
    with pytest.raises(SpecError, match=r"retention.predictions_days \(10\) is shorter .* keep at least 19"):
        parse_spec(data)
