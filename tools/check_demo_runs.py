"""After `make demo` and `make airflow`: log in to the Airflow UI as a person would, and check that the
demo's nightly runs show their real durations and a task log with the operator's own lines.

Not collected by pytest (Playwright is not a project requirement yet). Run it with a Playwright venv
and Debian's chromium, the server on `--base`:

    /path/to/playwright-venv/bin/python tools/check_demo_runs.py --base http://localhost:8080

Screenshots go to `--screens` (default var/screens/).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "fraud_nightly_predict"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def log_in(page: Page, base: str, airflow_home: Path) -> None:
    """Through Airflow's own login form, with the admin password `airflow standalone` generated."""
    passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
    page.goto(f"{base}/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", json.loads(passwords.read_text())["admin"])
    page.keyboard.press("Enter")
    expect(page.get_by_text("Dags").first).to_be_visible()


def check(base: str, airflow_home: Path, screens: Path) -> None:
    screens.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        log_in(page, base, airflow_home)

        page.goto(f"{base}/dags/{DAG_ID}/runs")
        rows = page.locator("tbody tr")
        expect(rows.first).to_be_visible()
        durations = [re.search(r"\d\d:\d\d:\d\d\.\d+", text) for text in rows.all_inner_texts()]
        page.screenshot(path=screens / "nightly-runs.png")
        assert durations and all(found and found[0] < "00:01:00" for found in durations), rows.all_inner_texts()

        run_id = rows.first.locator("a").first.inner_text().replace("\n", "")
        page.goto(f"{base}/dags/{DAG_ID}/runs/{run_id}/tasks/predict")
        expect(page.get_by_text(re.compile(r"Scored \d+ of \d+ rows"))).to_be_visible()
        page.screenshot(path=screens / "predict-log.png")
        assert "not found on worker" not in page.inner_text("body")
        browser.close()
    print(f"{len(durations)} runs of {DAG_ID}, each under a minute; the latest predict log shows its Scored line ({screens})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://localhost:8080")
    parser.add_argument("--airflow-home", type=Path, default=ROOT / ".airflow")
    parser.add_argument("--screens", type=Path, default=ROOT / "var" / "screens")
    arguments = parser.parse_args()
    check(arguments.base, arguments.airflow_home, arguments.screens)
