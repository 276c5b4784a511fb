"""A scored and monitored fraud warehouse, written by the jobs' own core functions, for the web surfaces."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring.drift import check_window
from batchwatch.scoring import predict_interval
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine

HISTORY_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
FIRST_DAY = datetime(2026, 10, 15, tzinfo=timezone.utc)
DRIFT_DAY = FIRST_DAY + timedelta(days=1)
ROWS_PER_DAY = 2_000


@pytest.fixture
def engine(warehouse_url):
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def served_world(engine):
    """Two weeks of history and a champion; a clean day and a drifted day scored by the nightly job's
    core (1% malformed rows, so some are rejected), the drifted day checked (an open incident), and
    the clean day scored again by a later run (the served row is the latest day's)."""
    spec = get_spec("fraud")
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    champion = bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=DRIFT_DAY, rows_per_day=ROWS_PER_DAY, malformed_rate=0.01, seed=11)
    scenarios = (Scenario("null_burst", DRIFT_DAY, "country", 0.5),)
    simulate_into(engine, start=DRIFT_DAY, end=DRIFT_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01,
                  scenarios=scenarios, seed=12)
    runs = []
    for day in (FIRST_DAY, DRIFT_DAY):
        runs.append(predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"scheduled__{day.date()}"))
    drift = check_window(engine, spec, window_end=DRIFT_DAY + timedelta(days=1), run_id="scheduled__drift")
    return {"engine": engine, "spec": spec, "champion": champion, "runs": runs, "drift": drift}


@pytest.fixture
def sqlite_engine_only(tmp_path):
    """An empty migrated SQLite warehouse, for checks that never reach the data."""
    from batchwatch.warehouse import migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


USERS = "admin:admin,scraper:viewer,outsider:viewer,nobody:"


@pytest.fixture
def web(airflow_db, warehouse_url, monkeypatch, tmp_path):
    """The Batchwatch app with the metrics and predictions routers, mounted at /batchwatch beside Airflow's
    own auth routes. The auth manager is Airflow's simple one with a per-DAG rule (tests/web): `admin`,
    the viewer `scraper`, the viewer `outsider` who may not read fraud's DAGs, and `nobody`, who has no role.

    Returns (TestClient, login) where login(user) gets a JWT from POST /auth/token, as a scraper would.
    """
    import json

    from airflow.api_fastapi.app import init_auth_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from batchwatch_airflow.web import metrics, predictions
    from batchwatch_airflow.web.app import create_app

    passwords = tmp_path / "passwords.json"
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.web.restricted_auth_manager.RestrictedAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", USERS)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    batchwatch = create_app()
    mounted = {route.path for route in batchwatch.routes}
    for router in (metrics.router, predictions.router):
        if not {route.path for route in router.routes} <= mounted:  # the lead's create_app may include them already
            batchwatch.include_router(router)
    host = FastAPI()
    init_auth_manager(host).init()
    host.mount("/batchwatch", batchwatch)
    client = TestClient(host)

    def login(user: str) -> dict[str, str]:
        password = json.loads(passwords.read_text())[user]
        response = client.post("/auth/token", json={"username": user, "password": password})
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return client, login
