"""Test environment: a private Airflow home, the test specs, and real warehouses.

Environment variables are set before anything imports Airflow, so the tests never touch the
project's own .airflow or var/. PostgreSQL on 127.0.0.1:5432 is required: without it the
warehouse fixtures fail, they do not skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = Path(tempfile.mkdtemp(prefix="batchwatch-tests-"))
POSTGRES_SERVER = os.environ.get("BATCHWATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

os.environ.update(
    {
        "AIRFLOW_HOME": str(SCRATCH / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "BATCHWATCH_SPEC_DIRS": os.pathsep.join([str(ROOT / "include" / "models"), str(ROOT / "tests" / "specs")]),
        "BATCHWATCH_ARTIFACT_ROOT": str(SCRATCH / "artifacts"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT)]),
    }
)
os.environ.pop("AIRFLOW_CONN_WAREHOUSE", None)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite) in the scratch AIRFLOW_HOME."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test PostgreSQL server's URL, for a test that names and makes its own databases."""
    return POSTGRES_SERVER


@pytest.fixture(scope="session")
def postgres_database():
    """A fresh database on the test PostgreSQL server, dropped at the end."""
    import psycopg

    name = f"batchwatch_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_SERVER} (start it: pg_ctlcluster ... main start): {error}")
    admin.execute(f"CREATE DATABASE {name}")
    yield f"{POSTGRES_SERVER}/{name}"
    admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def postgres_server_database():
    """Make fresh databases on the test PostgreSQL server (each dropped at the end of the session), for worlds a module builds once."""
    import psycopg

    admin = psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True, connect_timeout=5)
    made: list[str] = []

    def make() -> str:
        name = f"batchwatch_test_{uuid.uuid4().hex[:8]}"
        admin.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{POSTGRES_SERVER}/{name}"

    yield make
    for name in made:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


WAREHOUSE_TABLES = (
    "scoring_stages",
    "release_steps",
    "releases",
    "drill_reports",
    "performance_daily",
    "volume_daily",
    "daily_scoring",
    "alert_escalations",
    "alert_deliveries",
    "alerts",
    "drift_results",
    "reference_profiles",
    "model_events",
    "model_aliases",
    "model_versions",
    "rejected_rows",
    "predictions",
    "outcomes",
    "transactions",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path, monkeypatch) -> str:
    """A migrated, empty warehouse of each kind, also exposed as the Airflow connection `warehouse`."""
    from batchwatch.warehouse import make_engine, migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
        migrate(make_engine(url))
    else:
        url = request.getfixturevalue("postgres_database")
        engine = make_engine(url)
        migrate(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(WAREHOUSE_TABLES)} RESTART IDENTITY")
            # Shard stages an earlier test left staged (the tables scoring_stages named).
            for (stage,) in connection.exec_driver_sql("SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^stage_[0-9a-f]{20}_[pr]$'"):
                connection.exec_driver_sql(f"DROP TABLE {stage}")
        engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", url)
    monkeypatch.setenv("BATCHWATCH_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    return url
