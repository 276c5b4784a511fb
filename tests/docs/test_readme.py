"""The README's commands work as pasted: every block marked `<!-- runnable -->` runs from the repository root.

A marked block runs with bash (or, for SQL, statement by statement against the warehouse) on a
scratch copy of what `make demo` leaves: a small simulated warehouse, a champion and a version
before it, and the Airflow metadata of a nightly run and a drift check, all made with the project's
own commands (`bin/batchwatch`, `bin/airflow`). The wrappers take the scratch paths from the
environment, so the user's own var/ and .airflow/ are never touched. Each block's first command
names what a user expects to see after it; an unmarked command block fails the test unless it is
one of the few that cannot run here.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- runnable -->"
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}

# Command blocks that cannot run in a test, by their first command, and why.
NOT_RUNNABLE = {
    "make demo": "creates .venv and runs the whole demo; the scratch copy below stands in for what it leaves",
    "make airflow": "serves the web UI until it is stopped",
    "docker compose up -d --build": "needs a Docker engine; tests/docs/test_compose.py checks the compose file's structure",
    "psql -h 127.0.0.1 -U postgres batchwatch <<'SQL'": "grants the roles to a deployment's login users; tests/e2e/test_roles.py does the same",
}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    runnable: bool

    @property
    def first_command(self) -> str:
        """The first line's command without its comment, e.g. `bin/batchwatch versions fraud`."""
        return self.text.splitlines()[0].split("#", 1)[0].strip()


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = re.fullmatch(r"```(\w*)\s*", lines[index])
        if opening is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        runnable = index > 0 and lines[index - 1].strip() == MARKER
        blocks.append(Block(opening.group(1), "\n".join(lines[index + 1 : end]), index + 1, runnable))
        index = end + 1
    return blocks


BLOCKS = readme_blocks()
RUNNABLE = [pytest.param(block, id=f"{block.language}-line{block.line}") for block in BLOCKS if block.runnable]


def test_every_command_block_is_marked_runnable_or_cannot_run_here() -> None:
    unmarked = [block for block in BLOCKS if not block.runnable]
    unexplained = [
        f"README.md:{block.line}: {block.first_command}"
        for block in unmarked
        if block.language == "sql" or (block.language in SHELL_LANGUAGES and block.first_command not in NOT_RUNNABLE)
    ]
    assert not unexplained, f"mark these blocks {MARKER} (and say in this test what they show), or explain them in NOT_RUNNABLE: {unexplained}"
    stale = set(NOT_RUNNABLE) - {block.first_command for block in unmarked}
    assert not stale, f"NOT_RUNNABLE names blocks the README no longer has: {stale}"
    assert all(block.language in SHELL_LANGUAGES | {"sql"} for block in BLOCKS if block.runnable)


@dataclass(frozen=True)
class Scratch:
    """What `make demo` leaves, in a temporary directory, and the environment that points bin/ at it."""

    root: Path
    env: dict[str, str]
    today: date

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.db"

    @property
    def airflow_db(self) -> Path:
        return self.root / "airflow" / "airflow.db"

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run `script` with bash from the repository root, as a user pastes it."""
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{script}\nexited {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def python(self, program: str) -> None:
        """Run `program` with the venv's Python in the environment bin/env gives the wrappers."""
        self.run(f'source bin/env\n"$BATCHWATCH_VENV/bin/python" - <<\'PYTHON\'\n{program}PYTHON\n')


def user_environment(**overrides: str) -> dict[str, str]:
    """A shell's environment with nothing of Airflow or Batchwatch in it (the test session sets both), plus `overrides`."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith(("AIRFLOW", "BATCHWATCH", "PYTHONPATH"))}
    return {**kept, **overrides}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    root = tmp_path_factory.mktemp("readme")
    env = user_environment(
        BATCHWATCH_AIRFLOW_HOME=str(root / "airflow"),
        BATCHWATCH_ARTIFACT_ROOT=str(root / "artifacts"),
        AIRFLOW_CONN_WAREHOUSE=f"sqlite:///{root / 'warehouse.db'}",
    )
    today = datetime.now(timezone.utc).date()
    scratch = Scratch(root, env, today)
    day = {offset: (today - timedelta(days=offset)).isoformat() for offset in (1, 4, 5, 14)}
    # Airflow's metadata database migrates while the warehouse is filled: they are separate files.
    airflow_migrate = subprocess.Popen(
        ["bin/airflow", "db", "migrate"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # The commands of bin/batchwatch, in one process to start Python once.
    scratch.python(
        "from batchwatch.cli import main\n"
        "main(['migrate'])\n"
        f"main(['simulate', '--start', '{day[14]}', '--end', '{day[1]}', '--rows-per-day', '2000'])\n"
        # A damaged last day, so the drift check opens an incident for the alerts query to find.
        f"main(['simulate', '--start', '{day[1]}', '--end', '{today}', '--rows-per-day', '2000', '--malformed-rate', '0.3'])\n"
        f"main(['bootstrap', 'fraud', '--start', '{day[14]}', '--end', '{day[5]}'])\n"
        # A second champion, so rollback has one before it to restore (the demo's weekly retrain makes one).
        f"main(['bootstrap', 'fraud', '--start', '{day[14]}', '--end', '{day[4]}', '--force'])\n"
    )
    output, _ = airflow_migrate.communicate(timeout=300)
    assert airflow_migrate.returncode == 0, output
    # What `bin/airflow dags test` does, for the three DAGs in one process. A manual run scores the last whole
    # interval before its logical date: the day before yesterday, and the 24 hours that ended at midnight.
    scratch.python(
        "from datetime import datetime\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "dags = DagBag().dags\n"
        f"for dag_id, moment in [('fraud_nightly_predict', '{day[1]}T00:01:00+00:00'), ('fraud_hourly_drift', '{today}T00:01:00+00:00'),\n"
        # The daily check at the scored day's deadline: its volume and its estimated performance.
        f"                       ('fraud_daily_performance', '{day[1]}T06:01:00+00:00')]:\n"
        "    run = dags[dag_id].test(logical_date=datetime.fromisoformat(moment), run_after=datetime.fromisoformat(moment))\n"
        "    assert str(run.state) == 'success', (dag_id, run.state)\n"
    )
    return scratch


def query(database: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql, params).fetchall()


def shows_queued_backfill_of_the_last_seven_days(scratch: Scratch, result: subprocess.CompletedProcess[str]) -> None:
    assert query(scratch.airflow_db, "SELECT is_paused FROM dag WHERE dag_id = 'fraud_nightly_predict'") == [(0,)]
    runs = query(
        scratch.airflow_db,
        "SELECT logical_date, state FROM dag_run WHERE dag_id = 'fraud_nightly_predict' AND run_type = 'backfill' ORDER BY logical_date",
    )
    expected_days = [scratch.today - timedelta(days=offset) for offset in range(7, 0, -1)]
    assert [datetime.fromisoformat(logical_date).date() for logical_date, _ in runs] == expected_days
    assert {state for _, state in runs} == {"queued"}, "no scheduler runs in the test, so every run waits for one"


def lists_versions_and_rolls_back_to_the_first(scratch: Scratch, result: subprocess.CompletedProcess[str]) -> None:
    versions, _, history = result.stdout.partition("\nid ")
    assert re.search(r"^\s*1\s", versions, re.MULTILINE) and re.search(r"^\s*2\s+champion", versions, re.MULTILINE), versions
    assert "set_champion" in history
    assert query(scratch.warehouse, "SELECT version FROM model_aliases WHERE model_name = 'fraud' AND alias = 'champion'") == [(1,)]
    reasons = query(scratch.warehouse, "SELECT reason FROM model_events WHERE model_name = 'fraud' ORDER BY id DESC LIMIT 1")
    assert reasons == [("flags too many grocery purchases",)]


def starts_lists_and_stops_a_canary(scratch: Scratch, result: subprocess.CompletedProcess[str]) -> None:
    started, listed, stopped = result.stdout.splitlines()
    # The README's rollback block ran before: v1 is champion again, so v2 is the challenger under test.
    assert started.startswith("fraud: canary #1 of v2 against v1: 5% of entities from"), result.stdout
    assert listed.startswith("#1 canary v2 vs v1: running, share 5%") and stopped.startswith("fraud: canary #1 stopped"), result.stdout
    ended = query(scratch.warehouse, "SELECT kind, status, reason FROM releases")
    assert ended == [("canary", "cancelled", f"stopped by {_cli_actor()}: done trying")]
    assert query(scratch.warehouse, "SELECT COUNT(*) FROM release_steps WHERE effective_until IS NULL") == [(0,)]


def _cli_actor() -> str:
    import getpass

    return f"cli by {getpass.getuser()}"


def compares_two_frames_offline(scratch: Scratch, result: subprocess.CompletedProcess[str]) -> None:
    first, *table = result.stdout.splitlines()
    assert first.startswith("drifted ['distribution:Amount: ks"), result.stdout
    verdicts = {tuple(line.split()[1:3]): line.split()[-1] for line in table[1:]}
    assert verdicts[("Amount", "wasserstein")] == "drifted" and verdicts[("Country", "chi2")] == "ok", result.stdout


# What a user expects after each runnable shell block, by its first command.
EXPECTED: dict[str, Callable[[Scratch, subprocess.CompletedProcess[str]], None]] = {
    "bin/airflow dags unpause fraud_nightly_predict": shows_queued_backfill_of_the_last_seven_days,
    "bin/batchwatch versions fraud": lists_versions_and_rolls_back_to_the_first,
    'bin/batchwatch canary start fraud --version 2 --reason "try v2 on 5% of transactions"': starts_lists_and_stops_a_canary,
    'source bin/env && "$BATCHWATCH_VENV/bin/python" - <<\'PY\'': compares_two_frames_offline,
}


@pytest.fixture
def postgres_database_name() -> Iterator[str]:
    """A unique name for the database the README's PostgreSQL block creates; dropped afterwards."""
    import psycopg

    name = f"batchwatch_readme_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("block", RUNNABLE)
def test_runnable_block(block: Block, scratch: Scratch, request: pytest.FixtureRequest) -> None:
    if block.language == "sql":
        statements = [statement.strip() for statement in block.text.split(";") if statement.strip()]
        for statement in statements:
            assert query(scratch.warehouse, statement), f"README.md:{block.line}: no rows from {statement}"
        return
    if block.first_command.startswith("createdb"):
        check_postgres_block(block, scratch, request.getfixturevalue("postgres_database_name"))
        return
    assert block.first_command in EXPECTED, f"README.md:{block.line}: say in EXPECTED what `{block.first_command}` shows a user"
    EXPECTED[block.first_command](scratch, scratch.run(block.text))


def check_postgres_block(block: Block, scratch: Scratch, database: str) -> None:
    """The block as written, on a uniquely named database of the test server instead of `batchwatch`."""
    import psycopg

    script, renamed = re.subn(r"(?<=-U postgres )batchwatch$|(?<=:5432/)batchwatch$", database, block.text, flags=re.MULTILINE)
    assert renamed == 2, f"README.md:{block.line}: expected the database name `batchwatch` in createdb and the URL:\n{block.text}"
    result = scratch.run(script)
    assert "warehouse schema is at the latest migration" in result.stdout
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}") as connection:
        tables = {row[0] for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"predictions", "model_versions", "drift_results"} <= tables


ENVIRONMENT = ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES", "PYTHONPATH",
               "BATCHWATCH_ARTIFACT_ROOT", "AIRFLOW_CONN_WAREHOUSE")


def wrapper_environment(env: dict[str, str]) -> dict[str, str]:
    script = f"source bin/env; for name in {' '.join(ENVIRONMENT)}; do printf '%s=%s\\n' \"$name\" \"${{!name}}\"; done"
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def make_environment(env: dict[str, str]) -> dict[str, str]:
    rule = "print-environment: ; @" + "; ".join(f"echo '{name}='\"$${name}\"" for name in ENVIRONMENT)
    result = subprocess.run(
        ["make", "--no-print-directory", "--eval", rule, "print-environment"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"AIRFLOW_HOME": "/home/someone/airflow"}, id="a-profile-AIRFLOW_HOME-is-ignored"),
        pytest.param(
            {"BATCHWATCH_AIRFLOW_HOME": "/scratch/airflow", "BATCHWATCH_ARTIFACT_ROOT": "/scratch/artifacts",
             "AIRFLOW_CONN_WAREHOUSE": "postgresql://postgres@127.0.0.1:5432/batchwatch"},
            id="overrides-are-kept",
        ),
    ],
)
def test_make_and_the_wrappers_share_one_environment(overrides: dict[str, str]) -> None:
    env = user_environment(**overrides)
    wrappers = wrapper_environment(env)
    assert make_environment(env) == wrappers
    assert wrappers["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert wrappers["PYTHONPATH"].split(":") == [str(ROOT), str(ROOT / "include"), str(ROOT / "plugins")]
    assert wrappers["AIRFLOW_HOME"] == overrides.get("BATCHWATCH_AIRFLOW_HOME", str(ROOT / ".airflow"))
    assert wrappers["BATCHWATCH_ARTIFACT_ROOT"] == overrides.get("BATCHWATCH_ARTIFACT_ROOT", str(ROOT / "var" / "artifacts"))
    assert wrappers["AIRFLOW_CONN_WAREHOUSE"] == overrides.get("AIRFLOW_CONN_WAREHOUSE", f"sqlite:///{ROOT / 'var' / 'warehouse.db'}")
