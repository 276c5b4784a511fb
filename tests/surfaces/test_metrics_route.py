"""GET /batchwatch/metrics: authenticated like any Airflow API client, limited to the readable models."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_a_scraper_with_a_token_reads_the_warehouse_gauges(served_world, web):
    client, login = web
    engine = served_world["engine"]
    response = client.get("/batchwatch/metrics", headers=login("scraper"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    metrics = samples(response.text)

    with engine.connect() as connection:
        open_alerts = connection.execute(
            sa.text("SELECT COUNT(*) FROM alerts WHERE model_name = 'fraud' AND status = 'open' AND kind = 'drift'")
        ).scalar_one()
        drifted = connection.execute(
            sa.text("SELECT column_name, test FROM drift_results WHERE model_name = 'fraud' AND verdict = 'drifted'")
        ).all()
    assert metrics["batchwatch_open_incidents"] == {
        **{(("kind", kind), ("model", model)): 0.0 for kind in ("drift", "performance", "volume", "release") for model in ("churn", "fraud")},
        (("kind", "drift"), ("model", "fraud")): float(open_alerts),
    } and open_alerts == 1
    assert metrics["batchwatch_model_version"] == {(("alias", "champion"), ("model", "fraud")): float(served_world["champion"])}
    flagged = {(dict(key)["column"], dict(key)["test"]) for key, value in metrics["batchwatch_drift_verdict"].items()
               if value == 1.0 and dict(key)["verdict"] == "drifted"}
    assert flagged == set(drifted) and ("country", "null_rate") in flagged


def test_anonymous_and_forged_callers_are_refused(served_world, web):
    client, _ = web
    assert client.get("/batchwatch/metrics").status_code == 401
    assert client.get("/batchwatch/metrics", headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_a_user_sees_only_the_models_whose_dags_they_may_read(served_world, web):
    client, login = web
    response = client.get("/batchwatch/metrics", headers=login("outsider"))
    assert response.status_code == 200
    models = {dict(key)["model"] for family in samples(response.text).values() for key in family}
    assert models == {"churn"}, "outsider may not read fraud's DAGs"


def test_a_user_who_may_read_no_dag_sees_no_model(served_world, web):
    client, login = web
    response = client.get("/batchwatch/metrics", headers=login("nobody"))
    assert response.status_code == 200
    assert not any(family.samples for family in text_string_to_metric_families(response.text))
