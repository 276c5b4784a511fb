"""`make demo`: simulate history (two drifted days), bootstrap a champion, score the last 7 days, check drift and performance each day,
retrain weekly.

The warehouse is $AIRFLOW_CONN_WAREHOUSE (the Makefile defaults it to an SQLite file in var/).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from batchwatch import registry, warehouse
from batchwatch.demo.seed import default_demo_window, simulate_into
from batchwatch.demo.simulate import Scenario
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.spec import get_spec
from tools.runs import load_dag, run_interval, run_latest_interval

MODEL = "fraud"
ROWS_PER_DAY = 20_000

# Two days of the demo week drift (from its third day): half the countries go missing and amounts
# grow by about 65%. Neither is a malformed row, so the nightly job scores them; the hourly monitor flags them.
DRIFT_OFFSET_DAYS, DRIFT_DAYS = 2, 2
DRIFT = (
    Scenario("null_burst", datetime(2000, 1, 1, tzinfo=timezone.utc), "country", 0.4),
    Scenario("mean_shift", datetime(2000, 1, 1, tzinfo=timezone.utc), "amount", 1.0),
)

# dag.test() runs tasks through Airflow's in-process API client, built on Starlette's TestClient,
# which warns about its own httpx dependency on every demo run: nothing a user can act on.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
# Airflow 3.3.2 reads plugins/.airflowignore with pathspec's GitWildMatchPattern, which pathspec 1.x
# deprecates each time a plugin loader reads the file: also nothing a user can act on.
warnings.filterwarnings("ignore", message=r"GitWildMatchPattern \('gitwildmatch'\) is deprecated", category=DeprecationWarning)


def _drift_stretch(first: datetime) -> tuple[datetime, datetime]:
    """The drifted days [start, end) of the demo week."""
    start = first + timedelta(days=DRIFT_OFFSET_DAYS)
    return start, start + timedelta(days=DRIFT_DAYS)


def _stretches(start: datetime, first: datetime, end: datetime) -> list[tuple[datetime, datetime, tuple[Scenario, ...]]]:
    """The simulated history in parts: clean, drifted (the scenarios start with it), clean again.

    A scenario applies from its start onwards, so the clean days after it are simulated without it.
    """
    drift_start, drift_end = _drift_stretch(first)
    drifted = tuple(replace(scenario, start=drift_start) for scenario in DRIFT)
    return [(start, drift_start, ()), (drift_start, drift_end, drifted), (drift_end, end, ())]


def _describe(scenario: Scenario) -> str:
    return f"{scenario.kind} of {scenario.feature} ({scenario.magnitude:g})"


def _drift_windows(first: datetime, end: datetime) -> list[datetime]:
    """The ends of the windows the demo checks: each midnight of the demo week, and midday as the drift begins."""
    drift_start, _ = _drift_stretch(first)
    days = [first + timedelta(days=n) for n in range(1, (end - first).days + 1)]
    return sorted([*days, drift_start + timedelta(hours=12)])


def main() -> int:
    url = os.environ["AIRFLOW_CONN_WAREHOUSE"]
    engine = warehouse.make_engine(url)
    spec = get_spec(MODEL)
    start, first, end = default_demo_window()
    print(f"warehouse: {engine.url.render_as_string(hide_password=True)}")

    warehouse.migrate(engine)
    if registry.alias_version(engine, MODEL, "champion") is None:
        rows = 0
        for part_start, part_end, scenarios in _stretches(start, first, end):
            rows += simulate_into(
                engine, start=part_start, end=part_end, rows_per_day=ROWS_PER_DAY, malformed_rate=0.005, labels_as_of=end, scenarios=scenarios
            )
        drift_start, drift_end = _drift_stretch(first)
        print(
            f"simulated {rows} transactions for {start:%Y-%m-%d} .. {end - timedelta(days=1):%Y-%m-%d} (0.5% malformed); "
            f"{drift_start:%Y-%m-%d} .. {drift_end - timedelta(days=1):%Y-%m-%d} drifted: {', '.join(_describe(s) for s in DRIFT)}"
        )
        version = bootstrap_champion(engine, spec, start=start, end=first)
        metrics = registry.get_version(engine, MODEL, version)["metrics"]["validation"]
        print(f"champion: {MODEL} v{version}, out-of-time validation ROC AUC {metrics['roc_auc']:.3f}, Brier {metrics['brier']:.4f}")
    else:
        print(f"{MODEL} already has a champion; re-running the nightly job (each day is replaced exactly)")

    dag = load_dag(f"{MODEL}_nightly_predict")
    failed = 0
    day = first
    while day < end:
        state, results = run_interval(dag, day, day + timedelta(days=1))
        summary = results.get("predict", {})
        failed += state != "success"
        print(
            f"{day:%Y-%m-%d}  {state:<8} read {summary.get('rows_read', '?'):>7}  scored {summary.get('rows_scored', '?'):>7}  "
            f"rejected {summary.get('rows_rejected', '?'):>4}  positive rate {summary.get('positive_rate', '?')}  "
            f"v{summary.get('model_version', '?')}  {summary.get('rows_per_second', '?')} rows/s"
        )
        day += timedelta(days=1)
    print("\nlast run's summary:", json.dumps(summary, indent=2))

    # The hourly monitor over the demo days: the drifted stretch opens an incident, the first clean
    # 24-hour window after it resolves it. One window per day (and one as the drift starts) keeps the demo short.
    drift_dag = load_dag(f"{MODEL}_hourly_drift")
    print(f"\n{MODEL}_hourly_drift, {spec.drift.window_hours} h windows ending at:")
    for window_end in _drift_windows(first, end):
        drift_state, drift_results, _ = run_latest_interval(drift_dag, window_end)
        failed += drift_state != "success"
        check = drift_results.get("check_drift", {})
        incident = check.get("incident") or {}
        print(
            f"  {window_end:%Y-%m-%d %H:%M}  {drift_state:<8} {check.get('status', '?'):<17} "
            f"drifted: {', '.join(line.split(': ')[0] for line in check.get('drifted') or []) or 'none'}"
            + (f"  -> incident {incident['status']}" if incident else "")
        )

    # The daily check of each demo day at its deadline: volume, the estimate from calibrated scores, and realized
    # figures for the days whose labels have matured by then (label.delay_days).
    performance_dag = load_dag(f"{MODEL}_daily_performance")
    print(f"\n{MODEL}_daily_performance, each day at its deadline ({spec.schedules.daily_performance} UTC the next day):")
    day = first
    while day < end:
        check_state, check_results, _ = run_latest_interval(performance_dag, day + timedelta(days=1, hours=23, minutes=59))
        failed += check_state != "success"
        volume, performance = check_results.get("check_volume", {}), check_results.get("check_performance", {})
        realized = ", ".join(performance.get("realized_days") or []) or "none yet (labels not matured)"
        print(f"  {day:%Y-%m-%d}  {check_state:<8} volume {volume.get('verdict', '?'):<20} realized: {realized}")
        day += timedelta(days=1)
    # The last weekly interval that has ended by the demo's end, by the spec's schedule.
    retrain_state, retrain_results, (_, week_end) = run_latest_interval(load_dag(f"{MODEL}_weekly_retrain"), end)
    failed += retrain_state != "success"
    validated = retrain_results.get("validate", {})
    failed_gates = [gate["name"] for gate in validated.get("gates", []) if gate["passed"] is False]
    promote = retrain_results.get("promote", {})
    decision = promote.get("decision") or promote.get("outcome", {}).get("decision", "?")
    candidate = retrain_results.get("train", {})
    print(
        f"\n{MODEL}_weekly_retrain for the week ending {week_end:%Y-%m-%d %H:%M}: {retrain_state}; trained v{candidate.get('version', '?')} "
        f"(holdout AUC {candidate.get('metrics', {}).get('validation', {}).get('roc_auc', float('nan')):.3f}); "
        f"{len(validated.get('gates', []))} gates, failed: {failed_gates or 'none'}; {decision}"
    )

    print(
        "\nQuery the predictions (sqlite3 var/warehouse.db, or psql for PostgreSQL):\n"
        f"  SELECT ds, COUNT(*), AVG(score) FROM predictions WHERE model_name = '{MODEL}' GROUP BY ds ORDER BY ds;\n"
        f"  SELECT * FROM champion_latest_predictions WHERE model_name = '{MODEL}' ORDER BY score DESC LIMIT 10;\n"
        f"  SELECT reason, COUNT(*) FROM rejected_rows WHERE model_name = '{MODEL}' GROUP BY reason;\n"
        f"  SELECT column_name, test, statistic, p_adjusted, effect_size, verdict FROM drift_results WHERE model_name = '{MODEL}';\n"
        f"  SELECT created_at, event, version, previous_version, actor, reason FROM model_events WHERE model_name = '{MODEL}';\n"
        f"The registry from the command line: bin/batchwatch versions {MODEL} | history {MODEL} | rollback {MODEL} --reason ...\n"
        "See the runs in the Airflow UI: make airflow (http://localhost:8080)."
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
