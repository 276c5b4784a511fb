"""Is the model still right? The daily performance and volume check, end to end on PostgreSQL.

A month of labelled history trains the champion; then three weeks are scored night by night and checked
each morning at the deadline (06:00 UTC), with the labels observed by then. The labels turn against the
model (concept drift) on DRIFT_DAY; one day loses 40% of its rows and one has none; a third of one
day's labels come a week late. A quiet world with other seeds must raise nothing.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, precision_score, recall_score, roc_auc_score

from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.monitoring.performance import check_performance, matured
from batchwatch.monitoring.volume import check_volume
from batchwatch.scoring import predict_interval
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine, migrate

HISTORY_START = datetime(2026, 8, 3, tzinfo=timezone.utc)  # a Monday: four whole weeks of history per weekday
FIRST_DAY = datetime(2026, 8, 31, tzinfo=timezone.utc)
DAYS = 21
ROWS_PER_DAY = 3_000
DRIFT_DAY = FIRST_DAY + timedelta(days=12)
THIN_DAY = FIRST_DAY + timedelta(days=3)  # 40% of its rows never arrive
EMPTY_DAY = FIRST_DAY + timedelta(days=5)  # none do
LATE_LABELS_DAY = FIRST_DAY + timedelta(days=1)  # a third of its labels come a week late
DEADLINE = timedelta(hours=6)


def deadline_of(day: datetime) -> datetime:
    return day + timedelta(days=1) + DEADLINE


@pytest.fixture(scope="module")
def database(postgres_server_database):
    """A PostgreSQL database of this module's own: its world is built once and read by every test here."""
    url = postgres_server_database()
    engine = make_engine(url)
    migrate(engine)
    yield url, engine
    engine.dispose()


def build_world(engine, *, seed: int, days: int = DAYS, scenarios: tuple[Scenario, ...] = (), damage: bool = False) -> dict:
    """History, a champion, and DAYS days scored each night and checked each morning; what each morning's checks returned."""
    spec = get_spec("fraud")
    end = FIRST_DAY + timedelta(days=days)
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, seed=seed)
    simulate_into(engine, start=FIRST_DAY, end=end, rows_per_day=ROWS_PER_DAY, seed=seed + 1, scenarios=scenarios)
    if damage:
        with engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM transactions WHERE event_time >= :a AND event_time < :b AND transaction_id % 5 < 2"),
                               {"a": THIN_DAY, "b": THIN_DAY + timedelta(days=1)})
            connection.execute(sa.text("DELETE FROM transactions WHERE event_time >= :a AND event_time < :b"),
                               {"a": EMPTY_DAY, "b": EMPTY_DAY + timedelta(days=1)})
            connection.execute(
                sa.text("UPDATE outcomes SET observed_at = observed_at + INTERVAL '7 days' WHERE CAST(entity_id AS BIGINT) % 3 = 0"
                        " AND entity_id IN (SELECT CAST(transaction_id AS TEXT) FROM transactions WHERE event_time >= :a AND event_time < :b)"),
                {"a": LATE_LABELS_DAY, "b": LATE_LABELS_DAY + timedelta(days=1)},
            )
    bootstrap_champion(engine, spec, start=HISTORY_START, end=FIRST_DAY)
    mornings = []
    for offset in range(days):
        day = FIRST_DAY + timedelta(days=offset)
        predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"nightly-{offset}")
        run_id = f"morning-{offset}"
        volume = check_volume(engine, spec, day.date(), run_id=run_id).summary()
        performance = check_performance(engine, spec, day.date(), as_of=deadline_of(day), run_id=run_id).summary(spec.name)
        mornings.append({"day": day, "volume": volume, "performance": performance})
    return {"spec": spec, "mornings": mornings}


@pytest.fixture(scope="module")
def drifting_world(database):
    url, engine = database
    world = build_world(engine, seed=21, scenarios=(Scenario("concept_drift", DRIFT_DAY),), damage=True)
    return {**world, "engine": engine, "url": url}


def incidents(engine, kind: str) -> list[dict]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(
            sa.text("SELECT id, status, opened_window_end, resolved_window_end, drifted FROM alerts WHERE model_name = 'fraud' AND kind = :k"
                    " ORDER BY id").columns(drifted=sa.JSON),
            {"k": kind},
        ).mappings()]


def stored(engine, ds: date, source: str, role: str = "champion") -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql(
            sa.text("SELECT * FROM performance_daily WHERE model_name = 'fraud' AND ds = :ds AND source = :s AND role = :r"),
            connection, params={"ds": ds, "s": source, "r": role},
        ).set_index("metric")


def labelled_rows(engine, ds: date, as_of: datetime) -> pd.DataFrame:
    """The day's champion predictions with the labels observed by `as_of`: what scikit-learn is given."""
    with engine.connect() as connection:
        return pd.read_sql(
            sa.text("SELECT p.score, p.predicted_label, o.label FROM predictions p JOIN outcomes o ON o.entity_id = p.entity_id"
                    " AND o.observed_at <= :as_of WHERE p.model_name = 'fraud' AND p.ds = :ds AND p.role = 'champion'"),
            connection, params={"ds": ds, "as_of": as_of},
        )


def test_concept_drift_opens_a_performance_incident_once_the_first_drifted_day_matures(drifting_world):
    engine, spec = drifting_world["engine"], drifting_world["spec"]
    opened = incidents(engine, "performance")
    assert len(opened) == 1, opened
    incident = opened[0]
    # The first morning whose labels cover DRIFT_DAY: its deadline is the label delay plus one day after the day began, plus 6 hours.
    first_matured = next(m["day"] for m in drifting_world["mornings"] if matured(spec, DRIFT_DAY.date(), deadline_of(m["day"])))
    assert incident["opened_window_end"] == first_matured + timedelta(days=1)
    assert deadline_of(first_matured) - DRIFT_DAY == timedelta(days=spec.label.delay_days + 1) + DEADLINE
    assert any(line.startswith("realized roc_auc") and f"on {DRIFT_DAY.date()}" in line for line in incident["drifted"]), incident
    # No morning before it found anything.
    before = [m for m in drifting_world["mornings"] if m["day"] < first_matured]
    assert [m["performance"]["degraded"] for m in before] == [[] for _ in before]


def test_realized_figures_equal_scikit_learn_on_the_same_rows(drifting_world):
    engine = drifting_world["engine"]
    ds = (FIRST_DAY + timedelta(days=8)).date()
    figures = stored(engine, ds, "realized")
    rows = labelled_rows(engine, ds, figures["labels_as_of"].iloc[0].to_pydatetime())
    labels, scores, predicted = rows["label"].to_numpy(), rows["score"].to_numpy(), rows["predicted_label"].to_numpy()
    expected = {
        "roc_auc": roc_auc_score(labels, scores),
        "average_precision": average_precision_score(labels, scores),
        "precision": precision_score(labels, predicted, zero_division=np.nan),
        "recall": recall_score(labels, predicted, zero_division=np.nan),
        "f1": f1_score(labels, predicted, zero_division=np.nan),
        "brier": brier_score_loss(labels, scores),
        "label_rate": labels.mean(),
    }
    for metric, value in expected.items():
        assert figures.loc[metric, "value"] == pytest.approx(value, abs=1e-9), metric
        assert figures.loc[metric, "lower"] <= figures.loc[metric, "value"] <= figures.loc[metric, "upper"], metric
    assert figures["rows_labelled"].iloc[0] == len(rows)
    assert figures.loc["label_coverage", "value"] == pytest.approx(len(rows) / figures["rows_scored"].iloc[0])


def test_late_labels_update_their_day_exactly(drifting_world):
    engine = drifting_world["engine"]
    ds = LATE_LABELS_DAY.date()
    figures = stored(engine, ds, "realized")
    as_of = figures["labels_as_of"].iloc[0].to_pydatetime()
    assert as_of >= LATE_LABELS_DAY + timedelta(days=5 + 7), "the last morning that re-evaluated the day saw its late labels"
    rows = labelled_rows(engine, ds, as_of)
    assert figures.loc["label_coverage", "value"] == pytest.approx(1.0)
    assert figures.loc["roc_auc", "value"] == pytest.approx(roc_auc_score(rows["label"], rows["score"]), abs=1e-12)
    # The morning the day first matured saw two thirds of its labels: that evaluation was replaced, not added to.
    first = next(m for m in drifting_world["mornings"] if ds.isoformat() in m["performance"]["realized_days"])
    early = labelled_rows(engine, ds, deadline_of(first["day"]))
    assert 0.6 < len(early) / len(rows) < 0.72
    with engine.connect() as connection:
        assert connection.execute(sa.text(
            "SELECT COUNT(*) FROM performance_daily WHERE model_name = 'fraud' AND ds = :ds AND source = 'realized' AND metric = 'roc_auc'"
        ), {"ds": ds}).scalar_one() == 1


def test_the_estimate_tracks_realized_auc_while_the_concept_holds(drifting_world):
    engine = drifting_world["engine"]
    with engine.connect() as connection:
        errors = pd.read_sql(sa.text(
            "SELECT ds, estimation_error FROM performance_daily WHERE model_name = 'fraud' AND source = 'estimated' AND metric = 'roc_auc'"
            " AND role = 'champion' AND estimation_error IS NOT NULL AND ds < :drift ORDER BY ds"
        ), connection, params={"drift": DRIFT_DAY.date()})
    assert len(errors) >= 7
    assert errors["estimation_error"].abs().mean() < 0.03, errors


def test_missing_rows_raise_the_volume_alert(drifting_world):
    engine = drifting_world["engine"]
    by_day = {m["day"]: m["volume"] for m in drifting_world["mornings"]}
    assert by_day[THIN_DAY]["verdict"] == "low"
    assert by_day[EMPTY_DAY]["verdict"] == "missing"
    opened = incidents(engine, "volume")
    assert [incident["opened_window_end"] for incident in opened][:2] == [THIN_DAY + timedelta(days=1), EMPTY_DAY + timedelta(days=1)]
    assert all(incident["status"] == "resolved" for incident in opened[:2])
    assert any("no rows" in line for line in opened[1]["drifted"])


def test_the_daily_dag_runs_through_airflow(drifting_world, airflow_db, monkeypatch):
    """The last morning again, through Airflow, at its deadline: both tasks succeed and say what they found."""
    from tools.runs import load_dag, run_latest_interval

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", drifting_world["url"])
    last = drifting_world["mornings"][-1]["day"]
    dag = load_dag("fraud_daily_performance")
    for task in dag.tasks:
        task.retries = 0
    state, results, interval = run_latest_interval(dag, deadline_of(last))
    assert interval == (last + DEADLINE, deadline_of(last))
    assert state == "success", results
    assert results["check_performance"]["day"] == last.date().isoformat()
    assert results["check_volume"]["verdict"] == "ok"


@pytest.mark.parametrize("seed", [31, 41, 51])
def test_a_quiet_month_raises_nothing(postgres_server_database, seed):
    engine = make_engine(postgres_server_database())
    migrate(engine)
    try:
        world = build_world(engine, seed=seed, days=28)
        assert incidents(engine, "performance") == []
        assert incidents(engine, "volume") == []
        assert all(m["volume"]["verdict"] in ("ok", "insufficient_history") for m in world["mornings"])
    finally:
        engine.dispose()
