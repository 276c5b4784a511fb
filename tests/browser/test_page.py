"""The Batchwatch page in a real browser: Debian's chromium driven by Playwright, through Airflow's own login.

The API server runs as `airflow api-server` on a free port, over a warehouse with a drifted day
scored and checked through Airflow (dag.test), so the page shows what a user would find after a
drift incident; three weeks of the daily performance and volume check's rows (tests/web/outcomes.py)
ending that day fill the outcome panels. Then a canary of a second version ramps by the core's daily
looks to await approval, and a chaos drill that missed a fault is stored (tests/web/releases.py).
Screenshots land in tests/browser/screenshots/ (kept by CI, ignored by git).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.demo.seed import simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.promotion import canary
from batchwatch.spec import get_spec
from batchwatch.warehouse import make_engine, migrate, schema
from tests.web import outcomes, releases

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
# Recent days: the heatmap shows the windows of the last 30 days.
FIRST_DAY = datetime.combine(datetime.now(timezone.utc).date(), datetime.min.time(), tzinfo=timezone.utc) - timedelta(days=3)
HISTORY_START = FIRST_DAY - timedelta(days=14)
DRIFT_DAY = FIRST_DAY + timedelta(days=1)
ROWS_PER_DAY = 3_000


def ensure_chromium() -> None:
    """Debian's chromium, installed with apt when missing (CI runs the tests as root); never `playwright install`."""
    if CHROMIUM.exists():
        return
    assert os.geteuid() == 0, f"{CHROMIUM} is missing and installing it needs root: apt-get install -y chromium"
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def drifted_warehouse(tmp_path_factory, airflow_db) -> str:
    """A clean scored day, then a drifted one, scored and checked through Airflow's dag.test(): an open incident."""
    from tools.runs import load_dag, run_interval

    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'warehouse.db'}"
    os.environ["AIRFLOW_CONN_WAREHOUSE"] = url
    engine = make_engine(url)
    migrate(engine)
    simulate_into(engine, start=HISTORY_START, end=FIRST_DAY, rows_per_day=ROWS_PER_DAY, labels_as_of=FIRST_DAY)
    simulate_into(engine, start=FIRST_DAY, end=DRIFT_DAY, rows_per_day=ROWS_PER_DAY, malformed_rate=0.01)
    drifted = (Scenario("null_burst", DRIFT_DAY, "country", 0.5), Scenario("mean_shift", DRIFT_DAY, "amount", 1.0))
    simulate_into(engine, start=DRIFT_DAY, end=DRIFT_DAY + timedelta(days=1), rows_per_day=ROWS_PER_DAY, scenarios=drifted, seed=8)
    champion = bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=FIRST_DAY)
    # The hand-written figures are at the real champion's stored threshold, as the daily check would have computed them.
    threshold, _ = registry.decision_of(engine, "fraud", champion)
    outcomes.insert_outcomes(engine, "fraud", champion, None, shift=(DRIFT_DAY.date() - outcomes.DAYS[-1]).days, champion_threshold=threshold)
    engine.dispose()

    for dag_id, days in (("fraud_nightly_predict", (FIRST_DAY, DRIFT_DAY)), ("fraud_hourly_drift", (FIRST_DAY, DRIFT_DAY))):
        dag = load_dag(dag_id)
        for task in dag.tasks:
            task.retries = 0
        for day in days:
            end = day + timedelta(days=1)
            start = end - timedelta(hours=1) if dag_id.endswith("drift") else day
            assert run_interval(dag, start, end)[0] == "success", (dag_id, day)
    release_and_drill(url)
    return url


def release_and_drill(url: str) -> None:
    """v2, a copy of the champion's registry row, in a canary ramped to 50% that awaits approval; a drill that missed a fault."""
    engine = make_engine(url)
    champion = registry.get_version(engine, "fraud", 1)
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.model_versions).values(
            {**champion, "version": 2, "parent_version": 1, "created_at": datetime.now(timezone.utc)}
        ))
    ramp = releases.run_canary(engine, releases.release_spec("fraud"), 2, starts_on=DRIFT_DAY.date() - timedelta(days=16),
                               reason="retrained on the latest labels")
    assert ramp.looks[-1].verdict == "promote"
    releases.insert_drill(engine, "fraud", DRIFT_DAY.date() + timedelta(days=1), days=7, finished_at=datetime.now(timezone.utc),
                          flipped_labels_caught=False)
    engine.dispose()


@contextmanager
def serve_airflow() -> Iterator[tuple[str, str]]:
    """`airflow api-server` on a free port over the test metadata database; yields its base URL and the generated admin password."""
    port = free_port()
    home = Path(os.environ["AIRFLOW_HOME"])
    log = (home / "api-server.log").open("w")
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (home / "api-server.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the API server did not answer in 90 s:\n" + (home / "api-server.log").read_text()[-4000:]
                time.sleep(1)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield base, password
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def airflow_server(drifted_warehouse) -> Iterator[tuple[str, str]]:
    with serve_airflow() as served:
        yield served


def log_in(page, base: str, password: str) -> None:
    """Through Airflow's own login page, as admin, until the Dags nav shows."""
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.keyboard.press("Enter")
    expect(page.get_by_text("Dags").first).to_be_visible()


def test_the_page_shows_a_drift_incident_inside_airflow(airflow_server):
    from playwright.sync_api import expect, sync_playwright

    ensure_chromium()
    base, password = airflow_server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.set_default_timeout(20_000)

        log_in(page, base, password)

        # Batchwatch from Airflow's nav: the page renders in the external view's iframe.
        page.get_by_role("link", name="Batchwatch").first.click()
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_role("link", name="fraud")).to_be_visible()
        page.screenshot(path=SCREENSHOTS / "01-models.png")

        frame.get_by_role("link", name="fraud").click()
        champion = frame.locator("[data-testid=champion]")
        expect(champion).to_contain_text("v1")
        expect(frame.locator("tr.version")).to_have_count(2)
        expect(frame.locator("tr.version").last).to_contain_text("champion")
        expect(frame.locator("tr.version").first).to_contain_text("challenger")
        expect(frame.locator("tr.incident-open")).to_have_count(1)
        expect(frame.locator("tr.incident-open")).to_contain_text("country")
        expect(frame.locator("#aliases tr.event-set_champion")).to_have_count(1)
        drifted = frame.locator('a[data-verdict=drifted][data-check="country:null_rate"]')
        expect(drifted).to_have_count(1)
        expect(frame.locator("#overview")).to_contain_text("fraud_nightly_predict")
        page.screenshot(path=SCREENSHOTS / "02-model.png", full_page=True)
        frame.locator("body").screenshot(path=SCREENSHOTS / "03-model-frame.png")
        # The volume panel's per-day table names how many shards scored each day: one task, 1.
        per_day = frame.locator("#volume details")
        per_day.locator("summary").click()
        expect(per_day.locator("th", has_text="shards")).to_be_visible()
        expect(per_day.locator("tr").nth(1).locator("td").last).to_have_text("1")
        per_day.screenshot(path=SCREENSHOTS / "03b-volume-per-day.png")

        # The drill-down of the drifted check.
        drifted.click()
        expect(frame.get_by_role("heading", name="country · null_rate: drifted")).to_be_visible()
        expect(frame.locator("table.stats")).to_contain_text("p (Benjamini–Hochberg adjusted)")
        expect(frame.get_by_text("null rate").first).to_be_visible()
        frame.locator("body").screenshot(path=SCREENSHOTS / "04-drift-check.png")
        # Its category table sets the window's shares beside the reference's.
        expect(frame.locator("main table", has_text="current share")).to_be_visible()

        # A numeric drill-down draws the window's histogram over the reference's, on the same bins.
        frame.get_by_role("link", name="Batchwatch").click()
        frame.get_by_role("link", name="fraud").click()
        frame.locator('a[data-verdict=drifted][data-check="amount:ks"]').click()
        expect(frame.get_by_role("heading", name="amount · ks: drifted")).to_be_visible()
        expect(frame.locator("svg.density rect.reference")).to_have_count(10)
        expect(frame.locator("svg.density rect.current")).to_have_count(10)
        frame.locator("body").screenshot(path=SCREENSHOTS / "05-drift-check-numeric.png")
        # ... and links the whole window's report, served behind the same login.
        frame.get_by_role("link", name="The window's drift report").click()
        expect(frame.get_by_role("heading", name=re.compile(r"^Drift report: fraud v1, window ending"))).to_be_visible()
        frame.locator("body").screenshot(path=SCREENSHOTS / "06-drift-report.png")

        # A run of equal verdicts is one link; the page's script opens the window under the pointer.
        frame_page = page.goto(f"{base}/batchwatch/models/fraud")
        assert frame_page.ok
        # The whole page outside the iframe: a frame's body screenshot renders only what its viewport shows.
        page.screenshot(path=SCREENSHOTS / "03c-model-page.png", full_page=True)
        quiet = page.locator('a[data-verdict=ok]').filter(has_text="2 windows ending").first.locator("rect")
        box = quiet.bounding_box()
        quiet.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})
        second_window = DRIFT_DAY + timedelta(days=1)
        expect(page.locator("main > p").first).to_contain_text(f"– {second_window:%Y-%m-%d %H:%M} UTC")
        page.go_back()
        quiet.click(position={"x": box["width"] * 0.25, "y": box["height"] / 2})
        expect(page.locator("main > p").first).to_contain_text(f"– {DRIFT_DAY:%Y-%m-%d %H:%M} UTC")

        # The page links back to Airflow's runs, in the whole window, not the iframe.
        page.goto(f"{base}/batchwatch/models/fraud")
        run_link = page.locator("#overview a[href*='/dags/fraud_hourly_drift/runs/']").first
        expect(run_link).to_have_attribute("target", "_top")
        run_link.click()
        expect(page).to_have_url(re.compile(r"/dags/fraud_hourly_drift/runs/"))
        # Airflow's UI renders the run after the URL changes: wait for it, so the screenshot shows the run.
        expect(page.get_by_text("check_drift").first).to_be_visible(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "07-airflow-run.png")

        # And back: the drift task's extra links, in the task instance's Details tab of Airflow's UI.
        page.goto(page.url.rstrip("/") + "/tasks/check_drift/details")
        extra = page.get_by_role("link", name="Batchwatch", exact=True).and_(page.locator("a[href*='/batchwatch/models/fraud?']"))
        expect(extra).to_have_attribute("href", re.compile(r"/batchwatch/models/fraud\?dag_id=fraud_hourly_drift&run_id=manual__"))
        expect(page.get_by_role("link", name="Drift report", exact=True)).to_have_attribute(
            "href", f"/batchwatch/models/fraud/reports/drift/{DRIFT_DAY + timedelta(days=1):%Y%m%dT%H%MZ}"
        )
        page.screenshot(path=SCREENSHOTS / "08-task-extra-links.png")
        extra.click()
        expect(page.locator(".banner").first).to_contain_text("fraud_hourly_drift")
        expect(page.locator("tr.incident-open")).to_have_count(1)

        # Outcomes: realized against estimated AUC over label coverage, every metric of the latest days, the volume check.
        page.goto(f"{base}/batchwatch/models/fraud")
        performance = page.locator("#performance")
        expect(performance.get_by_test_id("threshold")).to_contain_text("Threshold in force (champion v1)")
        expect(performance.locator("svg.chart.interval polyline.line.realized")).to_have_count(1)
        expect(performance.locator("svg.chart.interval rect.bar.maturing")).to_have_count(outcomes.DELAY_DAYS)
        expect(performance.locator("tr.perf-day.maturing")).to_have_count(outcomes.DELAY_DAYS)
        expect(performance.get_by_test_id("latest-realized")).to_contain_text(str(DRIFT_DAY.date() - timedelta(days=outcomes.DELAY_DAYS)))
        volume = page.locator("#volume_checks")
        expect(volume.locator("svg rect.mark")).to_have_count(3)
        expect(volume.get_by_test_id("volume-latest")).to_contain_text(f"{DRIFT_DAY:%Y-%m-%d}: ok")
        expect(page.locator("tr.incident-open .badge")).to_have_text("drift")
        performance.screenshot(path=SCREENSHOTS / "09-performance.png")
        volume.screenshot(path=SCREENSHOTS / "10-volume.png")
        page.screenshot(path=SCREENSHOTS / "11-model-outcomes.png", full_page=True)

        # Releases: the canary's arms and ramp awaiting approval, each look's tests against the margin, the drill that missed a fault.
        release = page.locator("#release")
        expect(release.get_by_test_id("release-status")).to_contain_text("v2 passed its last step and awaits approval")
        expect(release.locator("li.ramp-step")).to_have_count(4)
        expect(release.locator("li.ramp-step.done")).to_have_count(2)
        expect(release.locator("li.ramp-step.current")).to_contain_text("50%")
        expect(release.locator("li.ramp-step.promote")).to_contain_text("awaiting approval")
        expect(release.locator("tr.arm-treatment")).to_contain_text("v2")
        release.screenshot(path=SCREENSHOTS / "12-release.png")
        decisions = page.locator("#release_decisions")
        expect(decisions.locator("details.look").first).to_contain_text("promote")
        expect(decisions.locator("details.look[open] svg.chart.margin")).to_have_count(4)
        expect(decisions.locator("details.look[open] tr.release-test.primary")).to_contain_text("delong_unpaired")
        decisions.locator("details.look[open]").screenshot(path=SCREENSHOTS / "13-release-decision.png")
        drill = page.locator("#chaos_drill")
        expect(drill.get_by_test_id("drill-status")).to_contain_text("flipped_labels went unseen")
        expect(drill.locator("tr.drill-fault.unseen")).to_have_count(1)
        expect(drill.locator('tr[data-fault="shifted_feature"]')).to_contain_text("drift:distribution:amount after 1.08 h")
        drill.screenshot(path=SCREENSHOTS / "14-chaos-drill.png")
        # The approval is Airflow's: the link opens the release DAG's Required Actions in the whole window.
        approve = release.get_by_test_id("required-actions")
        expect(approve).to_have_attribute("target", "_top")
        approve.click()
        expect(page).to_have_url(re.compile(r"/dags/fraud_release/required_actions$"))
        expect(page.get_by_text("Required Actions").first).to_be_visible(timeout=30_000)
        page.screenshot(path=SCREENSHOTS / "15-required-actions.png")

        # Once a person approves (as the release DAG's record_approval does), v2 is champion under a week's guard.
        approved_on = datetime.now(timezone.utc).date()
        engine = make_engine(os.environ["AIRFLOW_CONN_WAREHOUSE"])
        spec = releases.release_spec("fraud")
        canary.resolve_approval(engine, spec, approved=True, reason="the ramp held at every step", actor="admin", today=approved_on)
        releases.guard_look(engine, spec, approved_on + timedelta(days=2))
        engine.dispose()
        page.goto(f"{base}/batchwatch/models/fraud")
        release = page.locator("#release")
        expect(release.get_by_test_id("release-status")).to_contain_text(f"Guard period of v2 until {approved_on + timedelta(days=6)}")
        expect(release.get_by_test_id("release-days")).to_contain_text("2 of 7")
        expect(release.locator("tr.release-test.primary svg.chart.margin")).to_have_count(1)
        expect(release.locator("tr.earlier-release")).to_contain_text("promoted")
        release.screenshot(path=SCREENSHOTS / "16-guard.png")
        browser.close()
