"""The roles of migration 0010 on PostgreSQL: the jobs run as a pipeline member, analysts read results only."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring.drift import check_window
from batchwatch.scoring import predict_interval, publish_shards, score_shard
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine, migrate
from tests.e2e.conftest import FIRST_DAY, HISTORY_START, ROWS_PER_DAY, count

INSUFFICIENT_PRIVILEGE = "42501"
OUR_ROLES = "('batchwatch_pipeline', 'batchwatch_analyst')"


def _login(admin: sa.Engine, url: str, group: str) -> tuple[str, sa.Engine]:
    user = f"bw_{group.removeprefix('batchwatch_')}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {user} LOGIN PASSWORD 'not-a-secret' IN ROLE {group}")
    return user, make_engine(sa.make_url(url).set(username=user, password="not-a-secret").render_as_string(hide_password=False))


@pytest.fixture(scope="module")
def roles_world(postgres_server_database, tmp_path_factory):
    """A warehouse whose champion was trained, and whose days were scored and checked, by pipeline members only."""
    url = postgres_server_database()
    admin = make_engine(url)
    migrate(admin)
    # The deployment's grant: the source and label tables are its own, so reading them is its decision.
    with admin.begin() as connection:
        connection.exec_driver_sql("GRANT SELECT ON transactions, outcomes TO batchwatch_pipeline")
    simulate_into(admin, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(admin, start=FIRST_DAY, end=FIRST_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    users = dict([_login(admin, url, "batchwatch_pipeline"), _login(admin, url, "batchwatch_pipeline"), _login(admin, url, "batchwatch_analyst")])
    (first_job, first), (second_job, second), (analyst_name, analyst) = users.items()
    spec = get_spec("fraud")
    champion = bootstrap_champion(first, spec, start=HISTORY_START, end=FIRST_DAY)
    runs = [
        predict_interval(first, spec, start=FIRST_DAY, end=FIRST_DAY + timedelta(days=1), run_id="first"),
        # Another member replaces the day: it detaches and drops the partition the first one attached.
        predict_interval(second, spec, start=FIRST_DAY, end=FIRST_DAY + timedelta(days=1), run_id="second"),
    ]
    drift = check_window(second, spec, window_end=FIRST_DAY + timedelta(days=1), run_id="drift", report_root=tmp_path_factory.mktemp("reports"))
    yield {"admin": admin, "first": first, "pipeline": second, "analyst": analyst, "champion": champion, "runs": runs, "drift": drift}
    for engine in users.values():
        engine.dispose()
    with admin.begin() as connection:
        for user in users:
            connection.exec_driver_sql(f"DROP OWNED BY {user}")
            connection.exec_driver_sql(f"DROP ROLE {user}")
    admin.dispose()


def test_pipeline_members_run_the_jobs(roles_world):
    admin, first, second = roles_world["admin"], *roles_world["runs"]
    assert roles_world["champion"] == 1
    assert first["rows_scored"] == second["rows_scored"] > 0 and second["rows_rejected"] > 0
    day = FIRST_DAY.date()
    assert count(admin, "predictions", "ds = :ds AND run_id = 'second'", ds=day) == second["rows_scored"]
    assert count(admin, "predictions", "ds = :ds AND run_id = 'first'", ds=day) == 0
    assert count(admin, "rejected_rows", "ds = :ds", ds=day) == second["rows_rejected"]
    assert count(admin, "drift_results", "run_id = 'drift'") > 0
    with admin.connect() as connection:
        owners = connection.exec_driver_sql(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'predictions'::regclass"
            " OR oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'predictions'::regclass)"
        ).scalars().all()
        stages = connection.exec_driver_sql("SELECT count(*) FROM pg_class WHERE right(relname, 5) = '_next'").scalar_one()
    assert owners == ["batchwatch_pipeline"]
    assert stages == 0


def test_shards_staged_by_two_members_publish_as_a_third_may(roles_world):
    """Each shard's stage belongs to the pipeline role, so any member may publish it, and drop it."""
    admin, first, second = roles_world["admin"], roles_world["first"], roles_world["pipeline"]
    day = FIRST_DAY + timedelta(days=1)
    simulate_into(admin, start=day, end=day + timedelta(days=1), rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    spec, end = get_spec("fraud"), day + timedelta(days=1)
    staged = [score_shard(member, spec, start=day, end=end, run_id="sharded", shard=shard, shards=2) for shard, member in enumerate((first, second))]
    published = publish_shards(first, spec, start=day, end=end, run_id="sharded", shards=2)
    assert published["rows_scored"] == sum(shard["rows_scored"] for shard in staged) > 0
    assert count(admin, "predictions", "ds = :ds AND run_id = 'sharded'", ds=day.date()) == published["rows_scored"]
    with admin.connect() as connection:
        stages = "SELECT count(*) FROM pg_class WHERE left(relname, 6) = 'stage_' OR right(relname, 5) = '_next'"
        left = connection.exec_driver_sql(stages).scalar_one()
    assert left == 0 and count(admin, "scoring_stages", "published_at IS NULL") == 0


def _refused(engine: sa.Engine, statement: str) -> str:
    with pytest.raises(sa.exc.DBAPIError) as raised, engine.begin() as connection:
        connection.exec_driver_sql(statement)
    assert raised.value.orig.sqlstate == INSUFFICIENT_PRIVILEGE, raised.value
    return str(raised.value.orig)


def test_analyst_reads_the_served_results(roles_world):
    analyst = roles_world["analyst"]
    with analyst.connect() as connection:
        served = connection.execute(sa.text("SELECT count(*) FROM served_predictions WHERE ds = :ds"), {"ds": FIRST_DAY.date()}).scalar_one()
        latest = connection.execute(sa.text("SELECT count(*) FROM champion_latest_predictions WHERE ds = :ds"), {"ds": FIRST_DAY.date()}).scalar_one()
        checked = connection.exec_driver_sql("SELECT count(*) FROM drift_results").scalar_one()
    assert served == latest == roles_world["runs"][1]["rows_scored"]
    assert checked > 0


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("SELECT payload FROM rejected_rows", id="read-rejected-payloads"),
        pytest.param("SELECT * FROM predictions", id="read-raw-predictions"),
        pytest.param("SELECT * FROM transactions", id="read-source"),
        pytest.param("SELECT * FROM reference_profiles", id="read-training-samples"),
        pytest.param("INSERT INTO model_aliases VALUES ('fraud', 'champion', 9, now())", id="insert"),
        pytest.param("UPDATE alerts SET status = 'resolved'", id="update"),
        pytest.param("DELETE FROM drift_results", id="delete"),
        pytest.param("TRUNCATE performance_daily", id="truncate"),
        pytest.param("CREATE TABLE notes (x int)", id="create"),
    ],
)
def test_analyst_cannot_write_or_read_raw_rows(roles_world, statement):
    assert "permission denied" in _refused(roles_world["analyst"], statement)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("TRUNCATE rejected_rows", id="truncate"),
        pytest.param("DROP TABLE model_versions", id="drop-a-table-it-writes"),
        pytest.param("DELETE FROM transactions", id="write-the-source"),
        pytest.param("ALTER TABLE served_predictions RENAME TO x", id="alter-a-view"),
    ],
)
def test_pipeline_cannot_go_beyond_its_writes(roles_world, statement):
    with pytest.raises(sa.exc.DBAPIError) as raised, roles_world["pipeline"].begin() as connection:
        connection.exec_driver_sql(statement)
    assert raised.value.orig.sqlstate == INSUFFICIENT_PRIVILEGE, raised.value


def test_downgrade_revokes_and_gives_predictions_back(postgres_server_database):
    engine = make_engine(postgres_server_database())
    migrate(engine)
    from alembic import command
    from alembic.config import Config

    from batchwatch.warehouse.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")
    with engine.connect() as connection:
        grants = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_class, aclexplode(relacl) AS acl"
            f" WHERE acl.grantee IN (SELECT oid FROM pg_roles WHERE rolname IN {OUR_ROLES})"
        ).scalar_one()
        owner = connection.exec_driver_sql("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'predictions'::regclass").scalar_one()
        # Roles are per server: dropped unless another warehouse on it (another test's) still holds grants.
        roles = connection.exec_driver_sql(f"SELECT rolname FROM pg_roles WHERE rolname IN {OUR_ROLES}").scalars().all()
        elsewhere = connection.exec_driver_sql(
            f"SELECT count(*) FROM pg_shdepend WHERE refobjid IN (SELECT oid FROM pg_roles WHERE rolname IN {OUR_ROLES})"
        ).scalar_one()
    engine.dispose()
    assert grants == 0
    assert owner == "postgres"
    assert roles == [] or elsewhere > 0
