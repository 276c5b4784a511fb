"""The outcome gauges (performance, volume, incidents per kind) report the rows stored in the warehouse, written here by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from batchwatch.observability.metrics import VOLUME_VERDICTS
from batchwatch.warehouse.schema import alerts, performance_daily, volume_daily

from .test_metrics_core import labels, scrape

NOW = datetime(2026, 11, 20, 6, tzinfo=timezone.utc)
REALIZED_DAY = date(2026, 11, 12)  # labels take about a week to mature
ESTIMATED_DAY = date(2026, 11, 19)


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


def figure(model: str, ds: date, version: int, role: str, source: str, metric: str, value: float | None,
           lower: float | None = None, upper: float | None = None, computed_at: datetime = NOW) -> dict:
    return {
        "model_name": model, "ds": ds, "model_version": version, "role": role, "source": source, "metric": metric, "value": value,
        "lower": lower, "upper": upper, "threshold": 0.42, "rows_scored": 1000, "rows_labelled": 900 if source == "realized" else 0,
        "positives": 12, "estimation_error": None, "labels_as_of": None, "computed_at": computed_at, "run_id": f"scheduled__{ds}",
    }


def volume_day(model: str, ds: date, rows: int, expected: float | None, late_share: float | None, verdict: str, checked_at: datetime) -> dict:
    return {
        "model_name": model, "ds": ds, "rows": rows, "expected_rows": expected, "mad": None, "robust_z": None, "relative_change": None,
        "history": [], "rows_at_scoring": None, "late_rows": None, "late_share": late_share, "verdict": verdict, "reason": "by hand",
        "checked_at": checked_at, "run_id": f"scheduled__{ds}",
    }


def incident(model: str, kind: str, status: str) -> dict:
    return {
        "model_name": model, "kind": kind, "status": status, "opened_window_end": NOW, "last_drifted_window_end": NOW, "model_version": 1,
        "drifted": [], "summary": f"{kind} by hand", "opened_at": NOW, "run_id": "manual__by_hand",
    }


def insert(engine, table: sa.Table, rows: list[dict]) -> None:
    with engine.begin() as connection:
        connection.execute(table.insert(), rows)


def test_performance_reports_the_latest_day_of_each_source_and_role(engine):
    older = REALIZED_DAY - timedelta(days=1)
    insert(engine, performance_daily, [
        # An older realized day of the previous champion: neither its figures nor its version show.
        figure("fraud", older, 1, "champion", "realized", "roc_auc", 0.99, 0.98, 0.995),
        figure("fraud", REALIZED_DAY, 2, "champion", "realized", "roc_auc", 0.91, 0.89, 0.93),
        figure("fraud", REALIZED_DAY, 2, "champion", "realized", "precision", 0.35, 0.30, 0.41),
        figure("fraud", REALIZED_DAY, 2, "champion", "realized", "label_coverage", 0.9),
        # A figure undefined that day (no positive labelled) has no sample, nor has a bound left NULL.
        figure("fraud", REALIZED_DAY, 2, "champion", "realized", "recall", None),
        figure("fraud", REALIZED_DAY, 3, "shadow", "realized", "roc_auc", 0.93, 0.91, None),
        figure("fraud", ESTIMATED_DAY, 3, "champion", "estimated", "roc_auc", 0.88, 0.86, 0.90),
        figure("fraud", ESTIMATED_DAY, 3, "champion", "estimated", "brier", 0.011, 0.010, 0.012),
        # A re-estimate of an older day ran last: the newest computed_at, though not the latest day.
        figure("fraud", older, 2, "champion", "estimated", "roc_auc", 0.5, computed_at=NOW + timedelta(hours=1)),
        figure("churn", ESTIMATED_DAY, 1, "champion", "estimated", "roc_auc", 0.7),
    ])
    metrics = scrape(engine, ["fraud"], now=NOW)

    def key(role: str, source: str, metric: str) -> tuple:
        return labels(model="fraud", role=role, source=source, metric=metric)

    assert metrics["batchwatch_performance"] == {
        key("champion", "realized", "roc_auc"): 0.91,
        key("champion", "realized", "precision"): 0.35,
        key("champion", "realized", "label_coverage"): 0.9,
        key("shadow", "realized", "roc_auc"): 0.93,
        key("champion", "estimated", "roc_auc"): 0.88,
        key("champion", "estimated", "brier"): 0.011,
    }
    assert metrics["batchwatch_performance_lower"] == {
        key("champion", "realized", "roc_auc"): 0.89,
        key("champion", "realized", "precision"): 0.30,
        key("shadow", "realized", "roc_auc"): 0.91,
        key("champion", "estimated", "roc_auc"): 0.86,
        key("champion", "estimated", "brier"): 0.010,
    }
    assert metrics["batchwatch_performance_upper"] == {
        key("champion", "realized", "roc_auc"): 0.93,
        key("champion", "realized", "precision"): 0.41,
        key("champion", "estimated", "roc_auc"): 0.90,
        key("champion", "estimated", "brier"): 0.012,
    }
    assert metrics["batchwatch_performance_day_timestamp_seconds"] == {
        labels(model="fraud", role="champion", source="realized"): midnight(REALIZED_DAY),
        labels(model="fraud", role="shadow", source="realized"): midnight(REALIZED_DAY),
        labels(model="fraud", role="champion", source="estimated"): midnight(ESTIMATED_DAY),
    }
    assert metrics["batchwatch_performance_version"] == {
        labels(model="fraud", role="champion", source="realized"): 2.0,
        labels(model="fraud", role="shadow", source="realized"): 3.0,
        labels(model="fraud", role="champion", source="estimated"): 3.0,
    }
    assert metrics["batchwatch_last_success_timestamp_seconds"] == {
        labels(model="fraud", job="performance"): (NOW + timedelta(hours=1)).timestamp(),
    }


def test_a_day_stored_for_two_versions_reports_the_newer_one_only(engine):
    insert(engine, performance_daily, [
        figure("fraud", ESTIMATED_DAY, 4, "champion", "estimated", "roc_auc", 0.8),
        figure("fraud", ESTIMATED_DAY, 5, "champion", "estimated", "roc_auc", 0.9),
        figure("fraud", ESTIMATED_DAY, 4, "champion", "estimated", "brier", 0.02),
    ])
    metrics = scrape(engine, ["fraud"], now=NOW)
    assert metrics["batchwatch_performance"] == {labels(model="fraud", role="champion", source="estimated", metric="roc_auc"): 0.9}
    assert metrics["batchwatch_performance_version"] == {labels(model="fraud", role="champion", source="estimated"): 5.0}


@pytest.mark.parametrize("verdict", VOLUME_VERDICTS)
def test_volume_reports_the_latest_judged_day(engine, verdict):
    checked = NOW - timedelta(hours=3)
    insert(engine, volume_daily, [
        # The newest check re-counted the day before for late rows, after judging its own day.
        volume_day("fraud", ESTIMATED_DAY - timedelta(days=1), 2100, 2000.0, 0.0, "ok", checked + timedelta(minutes=1)),
        volume_day("fraud", ESTIMATED_DAY, 1200, 2050.0, 0.25, verdict, checked),
        volume_day("churn", ESTIMATED_DAY + timedelta(days=1), 10, 11.0, 0.0, "ok", NOW),
    ])
    metrics = scrape(engine, ["fraud"], now=NOW)
    assert metrics["batchwatch_volume_rows"] == {labels(model="fraud"): 1200.0}
    assert metrics["batchwatch_volume_expected_rows"] == {labels(model="fraud"): 2050.0}
    assert metrics["batchwatch_volume_late_ratio"] == {labels(model="fraud"): 0.25}
    assert metrics["batchwatch_volume_verdict"] == {
        labels(model="fraud", verdict=state): 1.0 if state == verdict else 0.0 for state in VOLUME_VERDICTS
    }
    assert metrics["batchwatch_last_success_timestamp_seconds"] == {
        labels(model="fraud", job="volume"): (checked + timedelta(minutes=1)).timestamp(),
    }


def test_a_day_without_history_or_scoring_has_no_expected_rows_nor_late_ratio(engine):
    insert(engine, volume_daily, [volume_day("fraud", ESTIMATED_DAY, 1800, None, None, "insufficient_history", NOW)])
    metrics = scrape(engine, ["fraud"], now=NOW)
    assert metrics["batchwatch_volume_rows"] == {labels(model="fraud"): 1800.0}
    assert "batchwatch_volume_expected_rows" not in metrics and "batchwatch_volume_late_ratio" not in metrics
    assert metrics["batchwatch_volume_verdict"][labels(model="fraud", verdict="insufficient_history")] == 1.0


def test_open_incidents_are_counted_per_kind(engine):
    insert(engine, alerts, [
        incident("fraud", "drift", "resolved"),
        incident("fraud", "drift", "open"),
        incident("fraud", "performance", "open"),
        incident("fraud", "volume", "resolved"),
        incident("churn", "volume", "open"),
    ])
    metrics = scrape(engine, ["fraud", "churn"], now=NOW)
    assert metrics["batchwatch_open_incidents"] == {
        labels(model="fraud", kind="drift"): 1.0,
        labels(model="fraud", kind="performance"): 1.0,
        labels(model="fraud", kind="volume"): 0.0,
        labels(model="fraud", kind="release"): 0.0,
        labels(model="churn", kind="drift"): 0.0,
        labels(model="churn", kind="performance"): 0.0,
        labels(model="churn", kind="volume"): 1.0,
        labels(model="churn", kind="release"): 0.0,
    }


def test_a_model_with_no_outcomes_yet_reports_no_outcome_figures(engine):
    metrics = scrape(engine, ["fraud"], now=NOW)
    assert metrics["batchwatch_open_incidents"] == {labels(model="fraud", kind=kind): 0.0 for kind in ("drift", "performance", "volume", "release")}
    assert not any(name.startswith(("batchwatch_performance", "batchwatch_volume", "batchwatch_last_success")) for name in metrics)
