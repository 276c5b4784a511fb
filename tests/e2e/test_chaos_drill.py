"""The chaos drill, on PostgreSQL and on SQLite: every fault is caught by the monitor meant for it, the control stays quiet
(or, with a real fault in the window, fires and makes the drill inconclusive), and the real warehouse is left as it was but
for the report's row.

A world of its own: three weeks of labelled history train the champion, then the nightly run scores the five days the
drill copies (the fewest that give flipped_labels a day whose labels have matured by the last deadline). The drills that
run drift windows use the fraud spec without the multivariate domain classifier: it is nearly half of each window's
cost, and the 72 windows of a drill of every fault dominate this module's time.
"""

from __future__ import annotations

import re
import shutil
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from sklearn.metrics import roc_auc_score

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.hashing import BUCKETS, CHAOS_DRILL
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring.drill import FLIP_SHARE, latest_drill, run_drill
from batchwatch.monitoring.faults import FAULTS, minimum_days
from batchwatch.scoring import predict_interval
from batchwatch.spec import get_spec, parse_spec
from batchwatch.warehouse import make_engine, migrate
from batchwatch.warehouse.read import bucket_sql
from batchwatch.warehouse.sandbox import SCHEMA_PREFIX

ROOT = Path(__file__).resolve().parents[2]
HISTORY_START = datetime(2026, 9, 14, tzinfo=timezone.utc)
FIRST_DAY = datetime(2026, 10, 5, tzinfo=timezone.utc)
DAYS = 5
WINDOW_END = FIRST_DAY + timedelta(days=DAYS)
LAST_DAY = WINDOW_END - timedelta(days=1)
ROWS_PER_DAY = 1_500
# What the drill must leave as it found it: every table a monitor, the nightly run or the drill itself reads or writes.
REAL_TABLES = (
    "transactions", "outcomes", "predictions", "rejected_rows", "daily_scoring", "alerts", "alert_escalations", "drift_results",
    "performance_daily", "volume_daily", "model_versions", "model_aliases", "model_events", "reference_profiles",
)
DEADLINE_DELAY = 30.0  # hours from a day's start to its deadline, the next day at 06:00


@pytest.fixture(scope="module")
def world(postgres_server_database):
    """The module's warehouse: history, a champion, and the drill's window scored night by night."""
    url = postgres_server_database()
    engine = make_engine(url)
    migrate(engine)
    spec = get_spec("fraud")
    assert minimum_days(spec) == DAYS
    simulate_into(engine, start=HISTORY_START, end=WINDOW_END, rows_per_day=ROWS_PER_DAY)
    bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"nightly-{offset}")
    yield {"url": url, "engine": engine, "spec": spec, "artifacts": registry.artifact_root()}
    engine.dispose()


def snapshot(engine) -> dict[str, tuple[int, str | None]]:
    """Each table's row count and a checksum of its rows in a fixed order."""
    with engine.connect() as connection:
        return {
            table: tuple(connection.execute(sa.text(f"SELECT COUNT(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t")).one())
            for table in REAL_TABLES
        }


def sandboxes(engine) -> list[str]:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": f"{SCHEMA_PREFIX}%"}).scalars().all()


def reports(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT COUNT(*) FROM drill_reports")).scalar_one()


def files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def fraud_data(**sections: dict) -> dict:
    """The fraud spec's YAML data with some of its sections' keys replaced."""
    data = yaml.safe_load((ROOT / "include" / "models" / "fraud.yaml").read_text())
    return {**data, **{name: {**data.get(name, {}), **keys} for name, keys in sections.items()}}


def without_the_classifier() -> dict:
    return fraud_data(drift={"multivariate": {"enabled": False}})


def without_performance_limits() -> dict:
    return fraud_data(performance={"max_drop": {}, "floors": {}})


@pytest.fixture(scope="module")
def drilled(world):
    """Every fault drilled once, with what the real warehouse held before and after."""
    engine = world["engine"]
    before, artifacts, stored = snapshot(engine), files(world["artifacts"]), reports(engine)
    spec = parse_spec(without_the_classifier())
    report = run_drill(engine, spec, window_end=WINDOW_END, days=DAYS, faults=list(FAULTS), run_id="drill-all")
    return {"report": report, "before": before, "after": snapshot(engine), "artifacts": (artifacts, files(world["artifacts"])),
            "reports": (stored, reports(engine))}


def test_every_fault_is_caught_by_its_monitor_and_the_control_stays_quiet(drilled):
    report = drilled["report"]
    assert (report.status, report.unseen, report.inconclusive, report.failure()) == ("passed", [], False, None)
    results = {result.fault: result for result in report.faults}
    assert list(results) == list(FAULTS)
    for result in report.faults:
        assert result.caught and result.missed_expected == [], result.line()
    # Where each was expected, and how fast: drift within the first hours of the fault, the daily checks at their deadline.
    shifted, burst = results["shifted_feature"], results["null_burst"]
    assert (shifted.injected["column"], burst.injected["column"]) == ("amount", "country")
    for result, detector in ((shifted, "drift:distribution:amount"), (burst, "drift:null_rate:country")):
        first = {d.detector: d.delay_hours for d in reversed(result.detections)}
        assert result.detections[0].delay_hours <= first[detector] <= 3, result.line()
    assert {d.detector: d.delay_hours for d in results["corrupted_scores"].detections} == {"performance:estimated:brier": DEADLINE_DELAY}
    assert {d.detector: d.delay_hours for d in results["missing_day"].detections} == {"volume:missing": DEADLINE_DELAY}
    flipped = results["flipped_labels"]
    # Its day is the window's first, whose labels mature (4 days) by the last day's deadline: 4 days + that deadline.
    assert flipped.start == FIRST_DAY
    assert {d.detector for d in flipped.detections} >= {"performance:realized:roc_auc"}
    assert {d.delay_hours for d in flipped.detections} == {4 * 24 + DEADLINE_DELAY}
    assert [incident["kind"] for incident in flipped.incidents] == ["performance"]
    # The control ran every check any fault did, and nothing fired.
    assert report.control.detections == () and report.control.incidents == ()
    assert report.control.runs == {"nightly": 1, "drift": 24, "daily": DAYS}
    assert results["missing_day"].runs == {"nightly": 1, "drift": 24, "daily": 1}
    assert shifted.runs == {"nightly": 1, "drift": 12, "daily": 1}
    assert results["corrupted_scores"].runs == {"nightly": 0, "drift": 0, "daily": 1}


def test_the_faults_changed_the_rows_they_name(drilled, world):
    results = {result.fault: result for result in drilled["report"].faults}
    noon = LAST_DAY + timedelta(hours=12)
    with world["engine"].connect() as connection:
        def count(where: str, **params) -> int:
            return connection.execute(sa.text(f"SELECT COUNT(*) FROM transactions WHERE {where}"), params).scalar_one()

        assert results["shifted_feature"].injected["rows"] == count("event_time >= :a AND event_time < :b", a=noon, b=WINDOW_END)
        assert results["null_burst"].injected["rows"] == count(
            "event_time >= :a AND event_time < :b AND country IS NOT NULL", a=noon, b=noon + timedelta(hours=3)
        )
        assert results["missing_day"].injected["rows"] == ROWS_PER_DAY
        assert results["corrupted_scores"].injected["rows"] == ROWS_PER_DAY
    reference = results["shifted_feature"].injected
    assert reference["shift"] == pytest.approx(reference["reference_sd"]) and reference["reference_sd"] > 0
    assert 0.15 < results["flipped_labels"].injected["rows"] / ROWS_PER_DAY < 0.25


def test_the_realized_auc_of_the_flipped_day_is_scikit_learns(drilled, world):
    """The incident's AUC, recomputed here from the real rows with the drill's flips applied by the same salted hash."""
    engine = world["engine"]
    (incident,) = {result.fault: result for result in drilled["report"].faults}["flipped_labels"].incidents
    found = re.search(r"realized roc_auc (\d\.\d{3}) \[", incident["summary"])
    assert found, incident
    flipped = bucket_sql(engine, "o.entity_id", f"{CHAOS_DRILL}:labels")
    with engine.connect() as connection:
        rows = pd.read_sql(
            sa.text(f"SELECT p.score, o.label, {flipped} < :cut AS flipped FROM predictions p JOIN outcomes o ON o.entity_id = p.entity_id"
                    " AND o.observed_at <= :as_of WHERE p.model_name = 'fraud' AND p.ds = :ds AND p.role = 'champion'"),
            connection, params={"cut": int(FLIP_SHARE * BUCKETS), "as_of": WINDOW_END + timedelta(hours=6), "ds": FIRST_DAY.date()},
        )
    labels = np.where(rows["flipped"], 1 - rows["label"], rows["label"])
    assert float(found.group(1)) == pytest.approx(roc_auc_score(labels, rows["score"]), abs=5e-4)


def test_the_real_warehouse_is_unchanged_but_for_the_report(drilled, world):
    assert drilled["after"] == drilled["before"]
    assert drilled["reports"][1] == drilled["reports"][0] + 1
    assert drilled["artifacts"][1] == drilled["artifacts"][0], "the sandboxes' drift reports are not the page's"
    assert sandboxes(world["engine"]) == []


def test_the_stored_report_reads_back_as_returned(drilled, world):
    report = drilled["report"]
    assert latest_drill(world["engine"], "fraud").to_dict() == report.to_dict()
    with world["engine"].connect() as connection:
        row = connection.execute(sa.text("SELECT * FROM drill_reports WHERE id = :id"), {"id": report.id}).mappings().one()
    assert (row["status"], row["window_start"], row["window_end"], row["run_id"]) == ("passed", FIRST_DAY.date(), WINDOW_END.date(), "drill-all")
    assert [entry["fault"] for entry in row["faults"]] == [*FAULTS, "control"]


def test_a_fault_whose_detector_is_disabled_fails_the_drill_and_is_named(world):
    """With no performance limit, flipped labels are seen by nothing: the drill says so, and stores it."""
    blind = parse_spec(without_performance_limits())
    report = run_drill(world["engine"], blind, window_end=WINDOW_END, days=DAYS, faults=["flipped_labels"], run_id="drill-blind")
    assert (report.status, report.unseen, report.inconclusive) == ("failed", ["flipped_labels"], False)
    assert report.failure() == f"chaos drill of fraud failed: flipped_labels went unseen: no monitor fired on it (drill_reports id {report.id})"
    assert report.faults[0].missed_expected == ["performance:realized"]
    assert latest_drill(world["engine"], "fraud").status == "failed"
    assert sandboxes(world["engine"]) == []


def test_the_sandboxes_are_dropped_when_a_monitor_raises(world):
    """A champion artifact that fails its checksum stops the control's first drift window: no sandbox, no report is left."""
    engine = world["engine"]
    version = registry.alias_version(engine, "fraud", "champion")
    artifact = registry.artifact_path(registry.get_version(engine, "fraud", version)["artifact_uri"])
    kept = artifact.with_suffix(".kept")
    shutil.copy(artifact, kept)
    before, stored = snapshot(engine), reports(engine)
    try:
        with artifact.open("ab") as handle:
            handle.write(b"tampered")
        with pytest.raises(registry.ArtifactIntegrityError) as raised:
            run_drill(engine, world["spec"], window_end=WINDOW_END, days=DAYS, faults=["missing_day"], run_id="drill-raises")
    finally:
        shutil.move(kept, artifact)
    assert "check_window" in {frame.name for frame in traceback.extract_tb(raised.value.__traceback__)}, "raised inside a sandbox"
    assert sandboxes(engine) == []
    assert (snapshot(engine), reports(engine)) == (before, stored)


def test_the_dag_fails_naming_an_unseen_fault_and_passes_otherwise(world, airflow_db, monkeypatch, tmp_path):
    """Through Airflow, with the window's defaults (the latest scored day): a spec blind to flipped labels, then the real one."""
    from tools.runs import load_dag, run_latest_interval

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", world["url"])
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(without_performance_limits()))
    conf = {"faults": ["flipped_labels"]}

    def run() -> tuple[str, dict]:
        dag = load_dag("fraud_chaos_drill")
        for task in dag.tasks:
            task.retries = 0
        state, results, _ = run_latest_interval(dag, WINDOW_END + timedelta(hours=8), conf)
        return state, results

    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(tmp_path))
    state, _ = run()
    failed = latest_drill(world["engine"], "fraud")
    assert state == "failed"
    assert (failed.status, failed.unseen, failed.window_end) == ("failed", ["flipped_labels"], WINDOW_END)

    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(ROOT / "include" / "models"))
    state, results = run()
    assert state == "success", results
    assert (results["drill"]["status"], results["drill"]["window_start"]) == ("passed", FIRST_DAY.isoformat())
    assert [fault["fault"] for fault in results["drill"]["faults"]] == ["flipped_labels"]
    assert latest_drill(world["engine"], "fraud").id == results["drill"]["id"] == failed.id + 1


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory):
    """The same world in a SQLite file."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'warehouse.db'}")
    migrate(engine)
    spec = get_spec("fraud")
    simulate_into(engine, start=HISTORY_START, end=WINDOW_END, rows_per_day=ROWS_PER_DAY)
    bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"nightly-{offset}")
    yield engine
    engine.dispose()


def test_the_drill_runs_on_sqlite_in_temporary_files(sqlite_world):
    """The sandboxes are temporary files, attached to the warehouse only to copy from it."""
    import tempfile

    engine, spec = sqlite_world, get_spec("fraud")
    scratch = set(Path(tempfile.gettempdir()).glob("batchwatch-sandbox-*"))

    def contents() -> dict:
        """Each table's rows, and the sums the faults would have moved: the scores and the labels."""
        with engine.connect() as connection:
            counts = {table: connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in REAL_TABLES}
            sums = connection.execute(sa.text("SELECT (SELECT SUM(score) FROM predictions), (SELECT SUM(label) FROM outcomes)")).one()
        return {**counts, "sums": tuple(sums)}

    before = contents()
    report = run_drill(engine, spec, window_end=WINDOW_END, days=DAYS, faults=["corrupted_scores", "flipped_labels"], run_id="sqlite")
    assert [result.line() for result in report.faults] == [
        "corrupted_scores: caught by performance:estimated:brier after 30 h",
        "flipped_labels: caught by performance:realized:brier after 126 h, performance:realized:roc_auc after 126 h",
    ]
    assert (report.status, report.control.detections) == ("passed", ())
    assert latest_drill(engine, "fraud").to_dict() == report.to_dict()
    assert contents() == before
    assert set(Path(tempfile.gettempdir()).glob("batchwatch-sandbox-*")) == scratch


def test_a_real_fault_in_the_window_makes_the_control_fire_and_the_drill_inconclusive(sqlite_world):
    """The last day's real scores are broken before the drill: the clean control sees it too, so a detection proves nothing."""
    engine = sqlite_world
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE predictions SET score = 0.5 WHERE ds = :ds AND role = 'champion'"), {"ds": LAST_DAY.date()})
    report = run_drill(engine, get_spec("fraud"), window_end=WINDOW_END, days=DAYS, faults=["corrupted_scores"], run_id="inconclusive")
    assert (report.status, report.unseen, report.inconclusive) == ("failed", [], True)
    deadline = LAST_DAY + timedelta(days=1, hours=6)
    fired = {(d.detector, d.at) for d in report.control.detections}
    assert fired == {("performance:estimated:brier", deadline), ("performance:estimated:roc_auc", deadline)}, "constant scores: all ties"
    assert report.failure() == (
        "chaos drill of fraud failed: inconclusive: the control sandbox, with no fault, fired performance:estimated:brier,"
        f" performance:estimated:roc_auc (drill_reports id {report.id})"
    )
