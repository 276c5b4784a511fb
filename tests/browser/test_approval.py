"""A canary earns its promotion, a person is asked through a webhook, and approves in Airflow's own UI, in a real browser.

The fraud spec asks for approval; here its canary has one step a small world can decide. Ten days are
scored with the arms; then `airflow dags test fraud_release` runs the morning's decision, which finds the
challenger non-inferior, asks for a person through the spec's HTTP notifier (a local receiver) and waits
in its approval task (Airflow's human-in-the-loop: no worker slot held) while the test opens the task's
Required Actions page in chromium, reads the gate table there, gives a reason and clicks Approve. The
warehouse then records who and why, and the guard starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion, read_labelled, train
from batchwatch.promotion import releases
from batchwatch.scoring import predict_interval
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine, migrate
from tests.browser.test_page import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, ensure_chromium, log_in, serve_airflow

HISTORY_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
TRAINED_UNTIL = datetime(2026, 10, 11, tzinfo=timezone.utc)
CANARY_DAYS = 10
TODAY = (TRAINED_UNTIL + timedelta(days=CANARY_DAYS)).date()  # the morning after the canary's last scored day
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def webhook() -> Iterator[list[dict]]:
    """A local HTTP receiver standing in for the team's webhook: every JSON document posted to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_RELEASE_HOOK", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1]}))
        try:
            yield received
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def canary_earned(tmp_path_factory, airflow_db, webhook):
    """The fraud spec, with a one-step canary a small world can decide and an HTTP notifier; ten days scored with the arms."""
    specs = tmp_path_factory.mktemp("specs")
    data = yaml.safe_load((ROOT / "include" / "models" / "fraud.yaml").read_text())
    data["release"]["canary"] = {"steps": [0.5], "margin": 0.08, "power": 0.6, "min_positives": 10,
                                 "guardrails": {"positive_rate": 0.05, "brier": 0.03, "reject_rate": 0.05}}
    data["drift"]["notifiers"] = [{"class": "airflow.providers.http.notifications.http.HttpNotifier",
                                   "params": {"http_conn_id": "release_hook", "endpoint": "/releases"}}]
    (specs / "fraud.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    url = f"sqlite:///{tmp_path_factory.mktemp('approval') / 'warehouse.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BATCHWATCH_SPEC_DIRS", str(specs))
        patch.setenv("AIRFLOW_CONN_WAREHOUSE", url)
        yield build_canary(url)


def build_canary(url: str) -> dict:
    """History, a champion, a challenger trained on part of it, and the canary's ten days scored night by night."""
    engine = make_engine(url)
    migrate(engine)
    spec = get_spec("fraud")
    assert spec.release.approval
    simulate_into(engine, start=HISTORY_START, end=TRAINED_UNTIL + timedelta(days=CANARY_DAYS), rows_per_day=3_000)
    champion = bootstrap_champion(engine, spec, start=HISTORY_START, end=TRAINED_UNTIL)
    start = HISTORY_START + timedelta(days=2)
    trained = train(spec, read_labelled(engine, spec, start, TRAINED_UNTIL, TRAINED_UNTIL))
    challenger = registry.register(
        engine, spec, trained.pipeline, metrics=trained.metrics, parent_version=champion, reference=trained.reference,
        trained_on={"start": start.isoformat(), "end": TRAINED_UNTIL.isoformat(), "labels_as_of": TRAINED_UNTIL.isoformat()},
        threshold_policy=trained.threshold_policy, calibration=trained.calibration.to_json(),
    )
    release = releases.start_canary(engine, spec, challenger, starts_on=TRAINED_UNTIL.date(), actor="test", reason="approval test")
    for offset in range(CANARY_DAYS):
        day = TRAINED_UNTIL + timedelta(days=offset)
        predict_interval(engine, spec, start=day, end=day + timedelta(days=1), run_id=f"nightly-{offset}")
    return {"engine": engine, "champion": champion, "challenger": challenger, "release_id": release.id}


def wait_for_approval_task(run: subprocess.Popen, timeout: float = 180) -> None:
    """Until fraud_release's approval task waits for input; fails with the run's output if the run ends first."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stdout.read()[-4000:]
        with create_session() as session:
            waiting = session.query(TaskInstance).filter_by(dag_id="fraud_release", task_id="approve", state=TaskInstanceState.AWAITING_INPUT).first()
            if waiting is not None:
                return
        time.sleep(1)
    raise AssertionError("the approval task never waited for input")


def test_a_person_approves_the_promotion_in_the_airflow_ui(canary_earned, webhook):
    from playwright.sync_api import expect, sync_playwright

    ensure_chromium()
    engine = canary_earned["engine"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    with serve_airflow() as (base, password):
        run = subprocess.Popen([airflow, "dags", "test", "fraud_release", f"{TODAY}T07:00:00+00:00"], env=os.environ.copy(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(30_000)
                log_in(page, base, password)
                # The approval waits under Browse -> Required Actions, with the gate table the decision wrote.
                wait_for_approval_task(run)
                page.goto(f"{base}/required_actions?response_received=false")
                page.screenshot(path=str(SCREENSHOTS / "19-required-actions.png"), full_page=True)
                page.get_by_text("Promote fraud's canary challenger to champion?").first.click()
                expect(page.get_by_text("roc_auc (delong_unpaired)").first).to_be_visible()
                expect(page.get_by_text("always-valid interval").first).to_be_visible()
                page.screenshot(path=str(SCREENSHOTS / "20-approval-required-action.png"), full_page=True)
                page.get_by_role("textbox").first.fill("arms equal within the margin for 10 days; on-call agrees")
                page.get_by_role("button", name="Approve").click()
                page.wait_for_timeout(1_000)
                page.screenshot(path=str(SCREENSHOTS / "21-approval-answered.png"), full_page=True)
                browser.close()
            output, _ = run.communicate(timeout=240)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, 9)
    assert run.returncode == 0, output[-4000:]

    assert registry.alias_version(engine, "fraud", "champion") == canary_earned["challenger"]
    with engine.connect() as connection:
        release = releases.get_release(connection, canary_earned["release_id"])
        approval = connection.execute(
            sa.text("SELECT actor, reason, details FROM model_events WHERE model_name = 'fraud' AND event = 'approval'").columns(details=sa.JSON)
        ).one()
        guard = releases.active_release(connection, "fraud")
    assert release.status == "promoted"
    assert approval.actor.startswith("admin in the Airflow UI") and approval.details["approved"] is True
    assert "on-call agrees" in approval.reason
    assert guard.kind == "guard" and guard.baseline_version == canary_earned["champion"]
    # The morning's look earned the promotion and asked for a person through the spec's notifier, once, with the tests and the link.
    (asked,) = [message for message in webhook if message["event"] == "batchwatch.release.awaiting_approval"]
    assert asked["version"] == canary_earned["challenger"] and asked["decided_on"] == TODAY.isoformat()
    assert {test["metric"] for test in asked["tests"]} == {"roc_auc", "positive_rate", "brier", "reject_rate"}
    assert asked["required_actions"].endswith("/tasks/approve/required_actions") and "/dags/fraud_release/runs/" in asked["required_actions"]
