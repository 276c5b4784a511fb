"""`make demo`: simulate history, bootstrap a champion, score the last 7 days, retrain weekly, check drift.

The warehouse is $AIRFLOW_CONN_WAREHOUSE (the Makefile defaults it to an SQLite file in var/).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from datetime import timedelta

from batchwatch import registry, warehouse
from batchwatch.demo.seed import default_demo_window, simulate_into
from batchwatch.modeling.training import bootstrap_champion
from batchwatch.spec import get_spec
from tools.runs import load_dag, run_interval, run_latest_interval

MODEL = "fraud"
ROWS_PER_DAY = 20_000


# dag.test() runs tasks through Airflow's in-process API client, built on Starlette's TestClient,
# which warns about its own httpx dependency on every demo run: nothing a user can act on.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
# Airflow 3.3.2 reads plugins/.airflowignore with pathspec's GitWildMatchPattern, which pathspec 1.x
# deprecates each time a plugin loader reads the file: also nothing a user can act on.
warnings.filterwarnings("ignore", message=r"GitWildMatchPattern \('gitwildmatch'\) is deprecated", category=DeprecationWarning)


def main() -> int:
    url = os.environ["AIRFLOW_CONN_WAREHOUSE"]
    engine = warehouse.make_engine(url)
    spec = get_spec(MODEL)
    start, first, end = default_demo_window()
    print(f"warehouse: {engine.url.render_as_string(hide_password=True)}")

    warehouse.migrate(engine)
    if registry.alias_version(engine, MODEL, "champion") is None:
        rows = simulate_into(engine, start=start, end=end, rows_per_day=ROWS_PER_DAY, malformed_rate=0.005, labels_as_of=end)
        print(f"simulated {rows} transactions for {start:%Y-%m-%d} .. {end - timedelta(days=1):%Y-%m-%d} (0.5% malformed)")
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

    # The last weekly and hourly intervals that have ended by the demo's end, by the spec's schedules.
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

    drift_state, drift_results, (_, window_end) = run_latest_interval(load_dag(f"{MODEL}_hourly_drift"), end)
    check = drift_results.get("check_drift", {})
    failed += drift_state != "success"
    print(
        f"\n{MODEL}_hourly_drift for the {spec.drift.window_hours} h ending {window_end:%Y-%m-%d %H:%M}: {drift_state}, "
        f"{check.get('status', '?')} over {check.get('rows', '?')} rows; checks {check.get('checks', '?')}; drifted: {check.get('drifted') or 'none'}"
        + (f"\n  no verdict: {check['reason']}" if check.get("reason") else "")
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
