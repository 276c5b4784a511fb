"""Drift alerts reach people: Airflow's own SMTP, Slack-webhook and HTTP notifiers, named in a spec,
deliver one message per incident open and one on recovery to real local receivers.

The receivers are started here: an SMTP sink (aiosmtpd) and one HTTP server standing in for the Slack
webhook and for a generic endpoint. Airflow connections (AIRFLOW_CONN_...) point at them; the hourly
drift DAG runs through Airflow (tools/runs.py) on a drifted window, then a clean one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from aiosmtpd.controller import Controller

from batchwatch.monitoring import drift
from batchwatch.monitoring.messages import check_line

from . import test_hourly_drift
from .test_hourly_drift import CLEAN_DAY, DRIFT_DAY, run_hour

# The drift e2e world (two weeks of history and a champion, a drifted day, then a clean day), shared.
monitored_world = test_hourly_drift.monitored_world
drifting_world = test_hourly_drift.drifting_world

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "https://airflow.example.test/ui"
PAGE = f"{BASE_URL}/batchwatch/models/fraud"
DRIFTED_END = DRIFT_DAY + timedelta(days=1)  # the window is exactly the drifted day
CLEAN_END = CLEAN_DAY + timedelta(days=1)


class SmtpSink:
    """aiosmtpd handler keeping every message; while `refuse` is set it answers 451 (try again later)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        self.refuse = False

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.refuse:
            return "451 4.3.0 mailbox busy, try again later"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


class Posts:
    """What the HTTP receiver was sent, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.refuse: set[str] = set()  # paths answered with 503 (and not counted as received)

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [json.loads(body) for p, _, body in self.received if p == path]

    def headers(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [headers for p, headers, _ in self.received if p == path]


@pytest.fixture
def smtp_sink() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with socket.socket() as probe:  # aiosmtpd needs a real port up front: take a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def http_receiver() -> Iterator[tuple[Posts, int]]:
    posts = Posts()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with posts.lock:
                refused = self.path in posts.refuse
                if not refused:
                    posts.received.append((self.path, dict(self.headers), body))
            self.send_response(503 if refused else 200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"unavailable" if refused else b"ok")  # "ok": what Slack's incoming webhooks answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield posts, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alerting_spec(tmp_path, monkeypatch, smtp_sink, http_receiver) -> Path:
    """The spec file: the fraud spec with Airflow's three notifiers, their connections pointing at the local receivers."""
    _, smtp_port = smtp_sink
    _, http_port = http_receiver
    monkeypatch.setenv(
        "AIRFLOW_CONN_BATCHWATCH_SMTP",
        json.dumps(
            {
                "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "batchwatch@example.test", "retry_limit": 0, "timeout": 5},
            }
        ),
    )
    # The webhook token goes in the password, as for Slack; the host is the receiver instead of hooks.slack.com.
    monkeypatch.setenv(
        "AIRFLOW_CONN_BATCHWATCH_SLACK",
        json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{http_port}/slack", "password": "T000/B000/XXXX"}),
    )
    monkeypatch.setenv("AIRFLOW_CONN_BATCHWATCH_HTTP", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": http_port, "schema": "http"}))

    data = yaml.safe_load((ROOT / "include" / "models" / "fraud.yaml").read_text())
    data["drift"]["alert_base_url"] = BASE_URL
    data["drift"]["notifiers"] = [
        {
            "class": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
            "params": {"smtp_conn_id": "batchwatch_smtp", "to": "oncall@example.test"},
        },
        {
            "class": "airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier",
            "params": {"slack_webhook_conn_id": "batchwatch_slack"},
        },
        {
            "class": "airflow.providers.http.notifications.http.HttpNotifier",
            "params": {"http_conn_id": "batchwatch_http", "endpoint": "/incidents"},
        },
    ]
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("BATCHWATCH_SPEC_DIRS", str(specs))
    return specs / "fraud.yaml"


def drift_rows(engine, window_end, verdict: str | None = None) -> list[dict]:
    query = "SELECT * FROM drift_results WHERE model_name = 'fraud' AND window_end = :e" + (" AND verdict = :v" if verdict else "")
    with engine.connect() as connection:
        rows = connection.execute(sa.text(query + " ORDER BY column_name, test"), {"e": window_end, "v": verdict}).mappings().all()
    return [dict(row) for row in rows]


def delivered(sink: SmtpSink, posts: Posts) -> tuple[int, int, int]:
    """How many emails, Slack posts and HTTP posts have arrived."""
    return len(sink.messages), len(posts.to("/slack/T000/B000/XXXX")), len(posts.to("/incidents"))


def test_one_message_per_channel_on_open_and_on_recovery_with_the_numbers(drifting_world, alerting_spec, smtp_sink, http_receiver):
    engine = drifting_world["engine"]
    sink, _ = smtp_sink
    posts, _ = http_receiver

    state, task_results = run_hour(DRIFTED_END)
    assert state == "success" and task_results["check_drift"]["incident"]["status"] == "open"
    assert delivered(sink, posts) == (1, 1, 1)
    drifted = drift_rows(engine, DRIFTED_END, "drifted")
    assert {("country", "null_rate"), ("merchant_category", "unseen_share")} <= {(r["column_name"], r["test"]) for r in drifted}

    # The email: subject names the model and the change; the body every drifted check with its numbers, and the link.
    email = sink.messages[0]
    assert sink.recipients[0] == ["oncall@example.test"] and email["From"] == "batchwatch@example.test"
    columns = ", ".join(dict.fromkeys(r["column_name"] for r in drifted))
    assert email["Subject"] == f"[Batchwatch] fraud: drift incident #1 opened, drifted: {columns}" and "country" in columns
    body = email.get_body(("html",)).get_content()
    assert f'href="{PAGE}"' in body and "fraud" in body
    null_rate = next(r for r in drifted if (r["column_name"], r["test"]) == ("country", "null_rate"))
    for number in ("statistic", "p_adjusted", "effect_size", "threshold"):
        assert f"<td>{null_rate[number]:.3g}</td>" in body, number

    # Slack: the same text, one line per drifted check.
    (slack,) = posts.to("/slack/T000/B000/XXXX")
    text = slack["text"]
    assert text.startswith("Drift incident #1 opened for model fraud (champion v1).")
    assert f"Window: {pd.Timestamp(DRIFT_DAY).isoformat()} to {pd.Timestamp(DRIFTED_END).isoformat()} (UTC)" in text
    assert all(f"- {check_line(row)}" in text for row in drifted) and text.endswith(f"Batchwatch page: {PAGE}")
    assert "p_adj" in check_line(null_rate) and f"effect {null_rate['effect_size']:.3g} >= threshold 0.1" in check_line(null_rate)

    # The generic endpoint: a JSON document with the numbers as numbers.
    (document,) = posts.to("/incidents")
    assert posts.headers("/incidents")[0]["Content-Type"] == "application/json"
    assert {k: document[k] for k in ("event", "alert_id", "status", "model_name", "model_version", "link")} == {
        "event": "batchwatch.drift_incident.open", "alert_id": 1, "status": "open", "model_name": "fraud",
        "model_version": drifting_world["champion"], "link": PAGE,
    }
    assert document["text"] == text
    sent = {(c["column_name"], c["test"]): c for c in document["checks"]}
    assert set(sent) == {(r["column_name"], r["test"]) for r in drifted}
    assert sent["country", "null_rate"]["p_adjusted"] == pytest.approx(null_rate["p_adjusted"])
    assert sent["country", "null_rate"]["effect_size"] == pytest.approx(null_rate["effect_size"])

    # An extended incident and a rerun of the first window send nothing.
    for end in (DRIFTED_END + timedelta(hours=1), DRIFTED_END):
        assert run_hour(end)[1]["check_drift"]["status"] == drift.DRIFTED
    assert delivered(sink, posts) == (1, 1, 1)

    # The first clean window: one recovery message per channel, then none on its rerun.
    state, task_results = run_hour(CLEAN_END)
    assert state == "success" and task_results["check_drift"]["incident"]["status"] == "resolved"
    assert delivered(sink, posts) == (2, 2, 2)
    run_hour(CLEAN_END)
    assert delivered(sink, posts) == (2, 2, 2)

    assert sink.messages[1]["Subject"] == "[Batchwatch] fraud: drift incident #1 resolved"
    recovery = posts.to("/incidents")[1]
    assert recovery["event"] == "batchwatch.drift_incident.resolved" and recovery["link"] == PAGE
    # The checks that had drifted in the incident's last drifted window, as the clean window measured them.
    last_drifted = {(r["column_name"], r["test"]) for r in drift_rows(engine, DRIFTED_END + timedelta(hours=1), "drifted")}
    assert {(c["column_name"], c["test"]) for c in recovery["checks"]} == last_drifted
    assert {c["verdict"] for c in recovery["checks"]} == {"ok"}
    clean_null_rate = next(r for r in drift_rows(engine, CLEAN_END) if (r["column_name"], r["test"]) == ("country", "null_rate"))
    assert f"- {check_line(clean_null_rate)}" in posts.to("/slack/T000/B000/XXXX")[1]["text"]
    assert "< threshold 0.1" in check_line(clean_null_rate)


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("refusing", "before_retry"),
    [
        pytest.param("smtp", (0, 0, 0), id="smtp-451-first-notifier"),
        pytest.param("http", (1, 1, 0), id="http-503-last-notifier"),
    ],
)
def test_a_refusing_receiver_leaves_the_change_pending_and_the_retry_sends_it_once(
    drifting_world, alerting_spec, smtp_sink, http_receiver, monkeypatch, refusing, before_retry
):
    """A receiver refuses: the task fails and the change stays pending; the retry delivers to the notifiers that had
    not delivered it, and only to them. With no base URL in the spec, the link is under Airflow's [api] base_url.
    """
    engine = drifting_world["engine"]
    sink, _ = smtp_sink
    posts, _ = http_receiver
    data = yaml.safe_load(alerting_spec.read_text())
    del data["drift"]["alert_base_url"]
    alerting_spec.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.internal:8080/")

    if refusing == "smtp":
        sink.refuse = True
    else:
        posts.refuse.add("/incidents")
    state, _ = run_hour(DRIFTED_END)
    assert state == "failed"
    assert delivered(sink, posts) == before_retry
    with engine.connect() as connection:
        alert = connection.execute(sa.text("SELECT status, open_notified_at FROM alerts WHERE model_name = 'fraud'")).mappings().one()
        recorded = connection.execute(sa.text("SELECT notifier FROM alert_deliveries ORDER BY notifier")).scalars().all()
    assert alert["status"] == "open" and alert["open_notified_at"] is None, "the change stays pending for the retry"
    assert len(recorded) == sum(before_retry)

    sink.refuse = False
    posts.refuse.clear()
    state, _ = run_hour(DRIFTED_END)  # what the task's retry does
    assert state == "success"
    assert delivered(sink, posts) == (1, 1, 1), "each receiver has the open message once"
    assert posts.to("/incidents")[0]["link"] == "http://airflow.internal:8080/batchwatch/models/fraud"
    assert sink.messages[0]["Subject"].startswith("[Batchwatch] fraud: drift incident #1 opened")
    with engine.connect() as connection:
        recorded = connection.execute(sa.text("SELECT notifier FROM alert_deliveries WHERE status = 'open' ORDER BY notifier")).scalars().all()
    assert recorded == [
        "0:airflow.providers.smtp.notifications.smtp.SmtpNotifier",
        "1:airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier",
        "2:airflow.providers.http.notifications.http.HttpNotifier",
    ]
    run_hour(DRIFTED_END)
    assert delivered(sink, posts) == (1, 1, 1)


def task_log(window_end) -> str:
    """The drift task's log of the run for `window_end`, where a worker writes it and the UI reads it."""
    run_id = f"manual__{(window_end + timedelta(minutes=1)).isoformat()}"
    folder = Path(os.environ["AIRFLOW_HOME"]) / "logs" / "dag_id=fraud_hourly_drift" / f"run_id={run_id}" / "task_id=check_drift"
    return max(folder.glob("attempt=*.log"), key=lambda path: path.stat().st_mtime).read_text()


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_notifier_params_that_do_not_fit_fail_the_task_naming_the_spec_field(drifting_world, alerting_spec, smtp_sink, http_receiver):
    """An SmtpNotifier without `to`: the task fails at once (no retry can fix it) and says which params to fix."""
    data = yaml.safe_load(alerting_spec.read_text())
    del data["drift"]["notifiers"][0]["params"]["to"]
    alerting_spec.write_text(yaml.safe_dump(data, sort_keys=False))
    sink, _ = smtp_sink
    posts, _ = http_receiver

    state, _ = run_hour(DRIFTED_END)
    assert state == "failed"
    log = task_log(DRIFTED_END)
    assert "drift.notifiers.0.params do not fit airflow.providers.smtp.notifications.smtp.SmtpNotifier" in log
    assert "missing 1 required positional argument: 'to'; fix the params in the spec" in log
    assert delivered(sink, posts) == (0, 0, 0)
    with drifting_world["engine"].connect() as connection:
        assert connection.execute(sa.text("SELECT open_notified_at FROM alerts")).scalar_one() is None
