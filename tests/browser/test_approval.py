"""A person approves a canary's promotion in Airflow's own UI, in a real browser, and the warehouse records who and why.

The fraud spec asks for approval. Its canary has passed its last step (the look that says so is made by
the real judge, on simulated arms); `airflow dags test fraud_release` runs the day's decision, whose
approval task waits (Airflow's human-in-the-loop, no worker slot held) while the test opens the task's
Required Actions page in chromium, reads the gate table there, gives a reason and clicks Approve.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.modeling.training import bootstrap_champion, read_labelled, train
from batchwatch.promotion import canary, releases
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine, migrate
from tests.browser.test_page import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, ensure_chromium, serve_airflow

HISTORY_START = datetime(2026, 10, 1, tzinfo=timezone.utc)
TRAINED_UNTIL = datetime(2026, 10, 11, tzinfo=timezone.utc)
TODAY = date(2026, 10, 30)


def arms_frame(rows: int = 40_000, seed: int = 5) -> pd.DataFrame:
    """A month of served rows in two arms whose models rank equally well, every label matured."""
    rng = np.random.default_rng(seed)
    labels = rng.random(rows) < 0.03
    scores = np.clip(rng.normal(0.1 + 0.5 * labels, 0.15), 0, 1)
    arm = np.where(rng.random(rows) < 0.5, "treatment", "control")
    return pd.DataFrame({
        "ds": TODAY - timedelta(days=10), "entity_id": np.arange(rows).astype(str), "role": np.where(arm == "treatment", "shadow", "champion"),
        "arm": arm, "score": scores, "predicted_label": (scores >= 0.4).astype(int), "label": labels.astype(float), "matured": True,
    })


@pytest.fixture(scope="module")
def awaiting_approval(tmp_path_factory, airflow_db):
    """A fraud warehouse whose canary of v2 passed its last step and waits for a person."""
    url = f"sqlite:///{tmp_path_factory.mktemp('approval') / 'warehouse.db'}"
    os.environ["AIRFLOW_CONN_WAREHOUSE"] = url
    engine = make_engine(url)
    migrate(engine)
    spec = get_spec("fraud")
    assert spec.release.approval
    simulate_into(engine, start=HISTORY_START, end=TRAINED_UNTIL, rows_per_day=2_000, labels_as_of=TRAINED_UNTIL)
    champion = bootstrap_champion(engine, spec, start=HISTORY_START, end=TRAINED_UNTIL)
    start = HISTORY_START + timedelta(days=2)
    trained = train(spec, read_labelled(engine, spec, start, TRAINED_UNTIL, TRAINED_UNTIL))
    challenger = registry.register(
        engine, spec, trained.pipeline, metrics=trained.metrics, parent_version=champion, reference=trained.reference,
        trained_on={"start": start.isoformat(), "end": TRAINED_UNTIL.isoformat(), "labels_as_of": TRAINED_UNTIL.isoformat()},
        threshold_policy=trained.threshold_policy, calibration=trained.calibration.to_json(),
    )
    release = releases.start_canary(engine, spec, challenger, starts_on=TODAY - timedelta(days=20), actor="test", reason="approval test")
    with engine.begin() as connection:
        for _ in release.steps[1:]:
            releases.advance(connection, releases.get_release(connection, release.id), effective_from=TODAY - timedelta(days=10))
        last = releases.get_release(connection, release.id)
        look = canary.judge_step(spec, last, arms_frame(), {"control": 0, "treatment": 0}, days_in_step=10, decided_on=TODAY)
        assert look.verdict == "promote", look.reason
        releases.set_status(connection, last, "awaiting_approval")
        registry.record_event(connection, spec.name, "release_decision", version=challenger, previous_version=champion,
                              reason=look.reason, actor="test", details=look.to_dict())
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


def test_a_person_approves_the_promotion_in_the_airflow_ui(awaiting_approval):
    from playwright.sync_api import expect, sync_playwright

    ensure_chromium()
    engine = awaiting_approval["engine"]
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
                page.goto(f"{base}/")
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", password)
                page.keyboard.press("Enter")
                expect(page.get_by_text("Dags").first).to_be_visible()
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

    assert registry.alias_version(engine, "fraud", "champion") == awaiting_approval["challenger"]
    with engine.connect() as connection:
        release = releases.get_release(connection, awaiting_approval["release_id"])
        approval = connection.execute(
            sa.text("SELECT actor, reason, details FROM model_events WHERE model_name = 'fraud' AND event = 'approval'").columns(details=sa.JSON)
        ).one()
        guard = releases.active_release(connection, "fraud")
    assert release.status == "promoted"
    assert approval.actor.startswith("admin in the Airflow UI") and approval.details["approved"] is True
    assert "on-call agrees" in approval.reason
    assert guard.kind == "guard" and guard.baseline_version == awaiting_approval["champion"]
