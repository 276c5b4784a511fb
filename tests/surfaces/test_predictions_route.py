"""The served-prediction routes: the nightly job's values, auth, validation and the per-user rate limit."""

from __future__ import annotations

import time

import sqlalchemy as sa

from batchwatch.data.validation import MAX_KEY_LENGTH
from batchwatch.serving import MAX_BATCH

from .conftest import DRIFT_DAY

URL = "/batchwatch/api/models/fraud/predictions"


def champion_rows(engine) -> dict[str, dict]:
    query = "SELECT * FROM predictions WHERE model_name = 'fraud' AND ds = :ds AND role = 'champion' ORDER BY entity_id"
    with engine.connect() as connection:
        return {row["entity_id"]: dict(row) for row in connection.execute(sa.text(query), {"ds": DRIFT_DAY.date()}).mappings()}


def test_one_entity_is_served_what_the_nightly_job_wrote(served_world, web):
    client, login = web
    headers = login("scraper")
    rows = champion_rows(served_world["engine"])
    entity_id = list(rows)[3]
    response = client.get(f"{URL}/{entity_id}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    row = rows[entity_id]
    assert body["score"] == row["score"] and body["predicted_label"] == row["predicted_label"]
    assert (body["model_version"], body["role"], body["ds"], body["entity_id"], body["model_name"]) == (
        served_world["champion"], "champion", DRIFT_DAY.date().isoformat(), entity_id, "fraud"
    )

    missing = client.get(f"{URL}/no-such-entity", headers=headers)
    assert missing.status_code == 404 and "no served prediction for entity 'no-such-entity'" in missing.json()["detail"]
    assert client.get(f"/batchwatch/api/models/nope/predictions/{entity_id}", headers=headers).status_code == 404


def test_a_batch_by_query_or_body_answers_in_order_with_the_missing_ids(served_world, web):
    client, login = web
    headers = login("scraper")
    rows = champion_rows(served_world["engine"])
    ids = [*list(rows)[:3], "unknown", list(rows)[-1]]
    by_query = client.get(URL, params=[("entity_id", entity_id) for entity_id in ids], headers=headers)
    by_body = client.post(URL, json={"entity_ids": ids}, headers=headers)
    for response in (by_query, by_body):
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["entity_id"] for p in body["predictions"]] == [entity_id for entity_id in ids if entity_id != "unknown"]
        assert [p["score"] for p in body["predictions"]] == [rows[p["entity_id"]]["score"] for p in body["predictions"]]
        assert body["missing"] == ["unknown"]


def test_bad_input_is_a_422_that_says_what_is_wrong(served_world, web):
    client, login = web
    headers = login("scraper")
    long_id = client.get(f"{URL}/{'k' * (MAX_KEY_LENGTH + 1)}", headers=headers)
    assert long_id.status_code == 422 and f"stored ids have at most {MAX_KEY_LENGTH}" in long_id.json()["detail"]
    too_many = client.post(URL, json={"entity_ids": [str(n) for n in range(MAX_BATCH + 1)]}, headers=headers)
    assert too_many.status_code == 422 and too_many.json()["detail"] == (
        f"{MAX_BATCH + 1} entity ids given; a batch lookup takes at most {MAX_BATCH}, split the request"
    )
    none = client.get(URL, headers=headers)
    assert none.status_code == 422 and "no entity ids given" in none.json()["detail"]
    blank = client.get(URL, params={"entity_id": "  "}, headers=headers)
    assert blank.status_code == 422 and "entity id #1: the entity id is empty" in blank.json()["detail"]
    not_a_list = client.post(URL, json={"entity_ids": "abc"}, headers=headers)
    assert not_a_list.status_code == 422


def test_anonymous_and_unauthorised_users_are_refused(served_world, web):
    client, login = web
    assert client.get(f"{URL}/1").status_code == 401
    assert client.post(URL, json={"entity_ids": ["1"]}).status_code == 401
    for user in ("outsider", "nobody"):
        forbidden = client.get(f"{URL}/1", headers=login(user))
        assert forbidden.status_code == 403 and "may not read the DAGs" in forbidden.json()["detail"]
        assert client.post(URL, json={"entity_ids": ["1"]}, headers=login(user)).status_code == 403


def test_a_burst_past_the_limit_gets_429_with_retry_after_per_user(served_world, web, monkeypatch):
    monkeypatch.setenv("AIRFLOW__BATCHWATCH__PREDICTIONS_BURST", "5")
    monkeypatch.setenv("AIRFLOW__BATCHWATCH__PREDICTIONS_PER_SECOND", "0.5")
    client, login = web
    scraper, admin = login("scraper"), login("admin")
    entity_id = next(iter(champion_rows(served_world["engine"])))

    started = time.monotonic()
    statuses = [client.get(f"{URL}/{entity_id}", headers=scraper) for _ in range(12)]
    assert time.monotonic() - started < 2, "the burst must be faster than one refill for the count below to hold"
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 7
    refused = statuses[-1]
    assert refused.headers["Retry-After"] == "2"
    assert "5 at once, then 0.5 a second" in refused.json()["detail"]
    assert client.post(URL, json={"entity_ids": [entity_id]}, headers=scraper).status_code == 429, "batch lookups share the bucket"

    assert client.get(f"{URL}/{entity_id}", headers=admin).status_code == 200, "another user has a bucket of their own"
    time.sleep(int(refused.headers["Retry-After"]))
    assert client.get(f"{URL}/{entity_id}", headers=scraper).status_code == 200
