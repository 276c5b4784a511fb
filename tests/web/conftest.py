"""A warehouse the real jobs filled, shared by the read-layer and web tests of one module.

Built once per module and warehouse kind (it trains models and runs drift checks, which take
seconds): two weeks of labelled history and a champion v1; three scored days, the last with a null
burst and a new category; drift checks of a clean window (ok), the drifted day (opens an incident)
and the next clean day (resolves it); a weekly retrain that registers v2 and decides on it; a
re-bootstrap on another window making v3 champion and a CLI-style rollback from it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

HISTORY_START = datetime(2026, 9, 27, tzinfo=timezone.utc)
FIRST_DAY = datetime(2026, 10, 11, tzinfo=timezone.utc)
DRIFT_DAY = FIRST_DAY + timedelta(days=2)
CLEAN_DAY = DRIFT_DAY + timedelta(days=1)
ROWS_PER_DAY = 3_000
POSTGRES_SERVER = os.environ.get("BATCHWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
SCORED_DAYS = (FIRST_DAY, FIRST_DAY + timedelta(days=1), DRIFT_DAY)


def _fill(engine) -> dict:
    from batchwatch.demo.seed import simulate_into
    from batchwatch.demo.simulate import Scenario
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.monitoring.drift import check_window
    from batchwatch.promotion.retrain import promote_candidate, rollback, train_candidate, validate_candidate
    from batchwatch.scoring.batch import predict_interval
    from batchwatch.spec import get_spec

    spec = get_spec("fraud")
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=DRIFT_DAY, rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    scenarios = (Scenario("null_burst", DRIFT_DAY, "country", 0.5), Scenario("new_category", DRIFT_DAY, "merchant_category", 0.03))
    simulate_into(engine, start=DRIFT_DAY, end=CLEAN_DAY, rows_per_day=ROWS_PER_DAY, scenarios=scenarios, seed=8)
    simulate_into(engine, start=CLEAN_DAY, end=CLEAN_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, seed=9)
    first = bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    summaries = [predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"scheduled__{day:%F}") for day in SCORED_DAYS]
    windows = [FIRST_DAY + timedelta(days=1), DRIFT_DAY + timedelta(days=1), CLEAN_DAY + timedelta(days=1)]
    checks = [check_window(engine, spec, window_end=end, run_id=f"scheduled__{end:%FT%H}") for end in windows]
    candidate = train_candidate(engine, spec, as_of=FIRST_DAY, window_days=10, dry_run=False, run_id="manual__retrain")
    gates = validate_candidate(engine, spec, candidate)
    decision = promote_candidate(engine, spec, candidate, gates, force_reason=None, actor="fraud_weekly_retrain")
    third = bootstrap_champion(engine, spec, start=HISTORY_START + timedelta(days=2), end=FIRST_DAY)
    rollback(engine, "fraud", to_version=first, reason="flags too many grocery purchases", actor="cli by tester")
    return {"first": first, "candidate": candidate.version, "third": third, "decision": decision, "gates": gates, "summaries": summaries,
            "windows": windows, "checks": checks}


@contextmanager
def filled_warehouse(kind: str, scratch: Path, fill: Callable[[Any], dict]) -> Iterator[dict]:
    """A migrated warehouse of `kind` filled by `fill(engine)`, exposed as the Airflow connection `warehouse` while it lasts."""
    import psycopg

    from batchwatch.warehouse import make_engine, migrate

    database = None
    if kind == "sqlite":
        url = f"sqlite:///{scratch / 'warehouse.db'}"
    else:
        database = f"batchwatch_web_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        url = f"{POSTGRES_SERVER}/{database}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_WAREHOUSE", url)
        patch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(scratch / "artifacts"))
        engine = make_engine(url)
        migrate(engine)
        yield {"engine": engine, "url": url, "kind": kind, **fill(engine)}
        engine.dispose()
    if database:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {database} WITH (FORCE)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """The filled warehouse, exposed as the Airflow connection `warehouse` for the module."""
    with filled_warehouse(request.param, tmp_path_factory.mktemp(f"world-{request.param}"), _fill) as filled:
        yield filled
