"""The warehouse gauges, parsed back with prometheus-client's own text parser, equal the warehouse's numbers."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batchwatch.observability.metrics import VERDICTS, metrics_registry
from batchwatch.warehouse import replace_interval, utc_timestamp

from .conftest import DRIFT_DAY, FIRST_DAY


def scrape(engine, models, **kwargs) -> dict[str, dict[tuple, float]]:
    """{metric name: {sorted label items: value}} from the text exposition."""
    text = generate_latest(metrics_registry(engine, models, **kwargs)).decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(**items: str) -> tuple:
    return tuple(sorted(items.items()))


def rows(engine, query: str, **params) -> list:
    with engine.connect() as connection:
        return connection.execute(sa.text(query), params).all()


def test_gauges_equal_the_warehouse(served_world):
    engine = served_world["engine"]
    now = DRIFT_DAY + timedelta(days=1, hours=3)
    metrics = scrape(engine, ["fraud"], now=now)

    window_end = DRIFT_DAY + timedelta(days=1)
    assert metrics["batchwatch_drift_window_end_timestamp_seconds"] == {labels(model="fraud"): window_end.timestamp()}
    stored = rows(engine, "SELECT column_name, test, verdict, effect_size, threshold, p_adjusted FROM drift_results WHERE model_name = 'fraud'")
    assert len(stored) == served_world["drift"]["tests"] > 0
    drifted = 0
    for column, test, verdict, effect, threshold, p_adjusted in stored:
        for state in VERDICTS:
            key = labels(model="fraud", column=column, test=test, verdict=state)
            assert metrics["batchwatch_drift_verdict"][key] == (1.0 if state == verdict else 0.0)
        check = labels(model="fraud", column=column, test=test)
        assert metrics["batchwatch_drift_effect_size"].get(check) == effect
        assert metrics["batchwatch_drift_threshold"].get(check) == threshold
        assert metrics["batchwatch_drift_p_adjusted"].get(check) == p_adjusted
        drifted += verdict == "drifted"
    assert drifted > 0, "the drifted day must show as drift"
    assert metrics["batchwatch_drift_verdict"][labels(model="fraud", column="country", test="null_rate", verdict="drifted")] == 1.0

    assert metrics["batchwatch_open_incidents"] == {
        labels(model="fraud", kind="drift"): 1.0, labels(model="fraud", kind="performance"): 0.0, labels(model="fraud", kind="volume"): 0.0,
        labels(model="fraud", kind="release"): 0.0,
    }
    assert metrics["batchwatch_model_version"] == {labels(model="fraud", alias="champion"): float(served_world["champion"])}
    assert metrics["batchwatch_canary_share"] == {labels(model="fraud"): 0.0} and "batchwatch_release_active" not in metrics

    scored = rows(engine, "SELECT ds, role, COUNT(*) FROM predictions WHERE model_name = 'fraud' GROUP BY ds, role")
    assert {labels(model="fraud", role=role, ds=str(ds)): float(n) for ds, role, n in scored} == metrics["batchwatch_rows_scored"]
    for run in served_world["runs"]:
        assert metrics["batchwatch_rows_scored"][labels(model="fraud", role="champion", ds=run["ds"])] == run["rows_scored"]
        assert metrics["batchwatch_rows_rejected"][labels(model="fraud", ds=run["ds"])] == run["rows_rejected"] > 0

    last_scored = rows(engine, "SELECT MAX(scored_at) FROM predictions WHERE model_name = 'fraud' AND ds = :ds", ds=DRIFT_DAY.date())[0][0]
    checked = rows(engine, "SELECT MAX(checked_at) FROM drift_results WHERE model_name = 'fraud'")[0][0]
    assert metrics["batchwatch_last_success_timestamp_seconds"] == {
        labels(model="fraud", job="predict"): utc_timestamp(last_scored).timestamp(),
        labels(model="fraud", job="drift"): utc_timestamp(checked).timestamp(),
    }, "no retrain decided yet, so no retrain sample"


def test_only_the_latest_days_and_only_the_given_models(served_world):
    engine = served_world["engine"]
    one_day = scrape(engine, ["fraud"], days=1, now=DRIFT_DAY + timedelta(hours=5))
    assert {dict(key)["ds"] for key in one_day["batchwatch_rows_scored"]} == {str(DRIFT_DAY.date())}
    assert {dict(key)["ds"] for key in one_day["batchwatch_rows_rejected"]} == {str(DRIFT_DAY.date())}
    both = scrape(engine, ["fraud"], days=7, now=DRIFT_DAY + timedelta(hours=5))
    assert {dict(key)["ds"] for key in both["batchwatch_rows_scored"]} == {str(FIRST_DAY.date()), str(DRIFT_DAY.date())}

    nothing = scrape(engine, [])
    assert not any(name.startswith("batchwatch_") for name in nothing), "a user who may read no model sees no model's numbers"
    unknown = scrape(engine, ["churn"])
    assert unknown["batchwatch_open_incidents"] == {labels(model="churn", kind=kind): 0.0 for kind in ("drift", "performance", "volume", "release")}
    assert "batchwatch_drift_verdict" not in unknown and "batchwatch_rows_scored" not in unknown


def test_days_must_include_the_latest_day(served_world):
    with pytest.raises(ValueError, match="days must be at least 1"):
        metrics_registry(served_world["engine"], ["fraud"], days=0)


def test_a_rescored_day_is_counted_again(served_world):
    """A day's counts may be kept per partition, but a new run of that day shows at the next scrape."""
    engine = served_world["engine"]
    now = DRIFT_DAY + timedelta(days=1, hours=3)
    day = labels(model="fraud", role="champion", ds=str(DRIFT_DAY.date()))
    assert scrape(engine, ["fraud"], now=now)["batchwatch_rows_scored"][day] == served_world["runs"][1]["rows_scored"]
    rerun_at = DRIFT_DAY + timedelta(days=1, hours=2)
    with replace_interval(engine, "fraud", DRIFT_DAY.date(), "manual__rerun", rerun_at) as writer:
        writer.write_predictions(served_world["champion"], "champion", ["a", "b", "c"], np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1]))
    again = scrape(engine, ["fraud"], now=now)
    assert again["batchwatch_rows_scored"][day] == 3.0
    assert again["batchwatch_rows_rejected"][labels(model="fraud", ds=str(DRIFT_DAY.date()))] == 0.0
    assert again["batchwatch_last_success_timestamp_seconds"][labels(model="fraud", job="predict")] == rerun_at.timestamp()
    first_day = labels(model="fraud", role="champion", ds=str(FIRST_DAY.date()))
    assert again["batchwatch_rows_scored"][first_day] == served_world["runs"][0]["rows_scored"]
