"""The JSON API inside Airflow's real API app, with the plugin loaded: Airflow's auth on every route."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from batchwatch import queries

PASSWORDS = {"admin": "admin-secret", "outsider": "outsider-secret"}
MODEL_ROUTES = ("overview", "drift", "volume", "versions", "alias-history", "promotions", "incidents", "performance", "volume/checks",
                "releases", "drills/latest")


@pytest.fixture(scope="module")
def client(world, airflow_db, tmp_path_factory):
    """Airflow's API server app (auth manager, plugins) over the module's warehouse, and a token per user."""
    from fastapi.testclient import TestClient

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.web.restricted_auth_manager.RestrictedAuthManager")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,outsider:viewer")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        patch.setenv("AIRFLOW_CONN_WAREHOUSE", world["url"])
        # The API server signs its tokens with this; set here so no earlier test's configuration decides it.
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "batchwatch-tests-" + "s" * 64)
        from airflow.api_fastapi.app import create_app

        with TestClient(create_app(), base_url="http://localhost") as test_client:
            tokens = {}
            for user, password in PASSWORDS.items():
                response = test_client.post("/auth/token", json={"username": user, "password": password})
                assert response.status_code == 201, response.text
                tokens[user] = response.json()["access_token"]
            yield test_client, tokens


def _get(client, path: str, user: str | None = None, *, cookie: bool = False, **params):
    test_client, tokens = client
    test_client.cookies.clear()
    headers = {}
    if user and cookie:
        test_client.cookies.set("_token", tokens[user])
    elif user:
        headers["Authorization"] = f"Bearer {tokens[user]}"
    return test_client.get(f"/batchwatch/api{path}", headers=headers, params=params)


@pytest.mark.parametrize("path", ["/models", *(f"/models/fraud/{route}" for route in MODEL_ROUTES)])
def test_anonymous_requests_are_refused(client, path):
    assert _get(client, path).status_code == 401
    assert _get(client, "/models/nobody/overview").status_code == 401  # not even whether a model exists


def test_a_bad_token_is_refused(client):
    test_client, _ = client
    assert test_client.get("/batchwatch/api/models", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403


def test_the_admin_sees_every_model_through_a_bearer_token_or_the_ui_cookie(client):
    for cookie in (False, True):
        response = _get(client, "/models", "admin", cookie=cookie)
        assert response.status_code == 200
        names = [model["name"] for model in response.json()]
        assert "fraud" in names and "churn" in names
    fraud = next(model for model in response.json() if model["name"] == "fraud")
    assert fraud["dag_ids"] == [
        "fraud_chaos_drill", "fraud_daily_performance", "fraud_hourly_drift", "fraud_nightly_predict", "fraud_release", "fraud_rollback",
        "fraud_weekly_retrain",
    ]


@pytest.mark.parametrize("route", MODEL_ROUTES)
def test_the_admin_reads_every_route_of_a_model(client, route):
    assert _get(client, f"/models/fraud/{route}", "admin").status_code == 200


def test_the_routes_serve_the_read_layer(client, world):
    overview = _get(client, "/models/fraud/overview", "admin").json()
    assert overview["champion"]["version"] == world["first"] and overview["open_incidents"] == 0
    assert overview["latest_day"]["rows_scored"] == world["summaries"][-1]["rows_scored"]
    heatmap = _get(client, "/models/fraud/drift", "admin", days=90).json()
    assert [datetime.fromisoformat(w.replace("Z", "+00:00")) for w in heatmap["windows"]] == world["windows"]
    checks = {(check["column"], check["test"]): check for check in heatmap["checks"]}
    assert checks[("country", "null_rate")]["verdicts"] == ["ok", "drifted", "ok"]
    assert len(checks[("amount", "ks")]["effect_sizes"]) == len(world["windows"])
    versions = _get(client, "/models/fraud/versions", "admin").json()
    assert [v["version"] for v in versions] == [world["third"], world["candidate"], world["first"]]
    history = _get(client, "/models/fraud/alias-history", "admin").json()
    assert history[-1]["event"] == "rollback" and history[-1]["actor"] == "cli by tester"
    [decision] = _get(client, "/models/fraud/promotions", "admin").json()
    assert decision["decision"] == "rejected" and decision["failed_gates"] == world["decision"]["failed_gates"]
    [incident] = _get(client, "/models/fraud/incidents", "admin").json()
    assert incident["status"] == "resolved"
    volume = _get(client, "/models/fraud/volume", "admin", days=30).json()
    assert [day["rows_scored"] for day in volume] == [summary["rows_scored"] for summary in world["summaries"]]


def test_a_drift_check_and_its_validation(client, world):
    window = world["windows"][1].isoformat()
    detail = _get(client, "/models/fraud/drift/check", "admin", window_end=window, column="country", test="null_rate")
    assert detail.status_code == 200 and detail.json()["verdict"] == "drifted"
    expected = queries.drift_check(world["engine"], "fraud", window_end=world["windows"][1], column="country", test="null_rate")
    assert detail.json()["p_adjusted"] == expected.p_adjusted
    missing = _get(client, "/models/fraud/drift/check", "admin", window_end=window, column="country", test="ks")
    assert missing.status_code == 404 and "no drift test 'ks'" in missing.json()["detail"]
    naive = _get(client, "/models/fraud/drift/check", "admin", window_end="2026-10-14T00:00:00", column="country", test="null_rate")
    assert naive.status_code == 422
    assert _get(client, "/models/fraud/volume", "admin", days=0).status_code == 422
    assert _get(client, "/models/nobody/overview", "admin").status_code == 404


def test_a_user_without_the_models_dags_neither_sees_nor_reads_it(client):
    listed = [model["name"] for model in _get(client, "/models", "outsider").json()]
    assert "fraud" not in listed and "churn" in listed
    for route in MODEL_ROUTES:
        response = _get(client, f"/models/fraud/{route}", "outsider")
        assert response.status_code == 403 and "fraud_nightly_predict" in response.json()["detail"]
    assert _get(client, "/models/churn/versions", "outsider").status_code == 200


def test_a_model_with_no_release_and_no_drill_says_how_to_start_them(client):
    assert _get(client, "/models/fraud/releases", "admin").json() == {"model_name": "fraud", "current": None, "earlier": [], "looks": []}
    assert _get(client, "/models/fraud/drills/latest", "admin").json() is None
    page = _page(client, "/models/fraud", "admin").text
    assert re.search(r'No release yet\. A canary lets a registered version serve a growing share of entities\s+\(5% → 25% → 50% → promote\)', page)
    assert '<code>bin/batchwatch canary start fraud --version N --reason "..."</code>' in page
    assert "or set\n  <code>release.canary.enabled: true</code>" in page
    assert "No release decision yet" in page and '<a href="/dags/fraud_release" target="_top">fraud_release</a>' in page
    assert re.search(r'No chaos drill yet\. Trigger\s+<a href="/dags/fraud_chaos_drill" target="_top">fraud_chaos_drill</a> in Airflow', page)


def _page(client, path: str, user: str | None = None):
    """A page of the plugin as the browser asks for it: with the UI's session cookie, or anonymous."""
    test_client, tokens = client
    test_client.cookies.clear()
    if user:
        test_client.cookies.set("_token", tokens[user])
    return test_client.get(f"/batchwatch{path}")


@pytest.mark.parametrize("path", ["/", "/models/fraud", "/models/churn"])
def test_pages_refuse_anonymous_visitors(client, path):
    assert _page(client, path).status_code == 401


def test_pages_show_a_user_only_the_models_whose_dags_they_may_read(client, world):
    index = _page(client, "/", "outsider")
    assert index.status_code == 200 and "churn" in index.text and "/batchwatch/models/fraud" not in index.text
    assert _page(client, "/models/fraud", "outsider").status_code == 403
    admin = _page(client, "/models/fraud", "admin")
    assert admin.status_code == 200 and "Overview" in admin.text and f"v{world['first']}" in admin.text


def _report(client, window: str, user: str | None = None):
    test_client, tokens = client
    test_client.cookies.clear()
    headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
    return test_client.get(f"/batchwatch/models/fraud/reports/drift/{window}", headers=headers)


def test_a_drift_report_is_served_only_to_who_may_read_the_model(client, world):
    drifted = world["windows"][1]
    window = f"{drifted:%Y%m%dT%H%MZ}"
    assert world["checks"][1]["status"] == "drifted"
    assert _report(client, window).status_code == 401
    assert _report(client, window, "outsider").status_code == 403
    response = _report(client, window, "admin")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'class="status drifted"' in response.text and '<tr class="drifted">' in response.text
    assert f"window ending {drifted.isoformat()}" in response.text


def test_a_missing_or_malformed_report_window_is_refused(client, world):
    assert _report(client, "20200101T0000Z", "admin").status_code == 404
    for bad in ("..%2F..%2Fetc%2Fpasswd", "20261399T0000Z", "latest"):
        assert _report(client, bad, "admin").status_code in (404, 422), bad
    assert _report(client, "20261399T0000Z", "admin").status_code == 422
