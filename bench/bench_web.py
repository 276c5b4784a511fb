"""Benchmark: the plugin's JSON routes, /metrics and the prediction lookup over a month of production-sized data.

Seeds a fresh PostgreSQL database with what the issue names: 30 days of hourly drift results for 3
models (fraud, churn, wide) and 30 days x 1M predictions a day (model fraud; churn and wide get
10k a day so their routes have rows). The seeding starts from a small world the real jobs write
(simulated history, a bootstrapped champion, a scored day, a drift check of a drifted day opening
an incident), so versions, reference profiles, events and alerts are real rows; the registry rows are
copied to churn and wide, and the bulk is generated in SQL (generate_series, one partition per day
built unindexed, indexed with one sort and attached, as the nightly writer does). 10% of the
prediction entity ids recur every day, so a lookup may find an entity in all 30 partitions.

Then, in this process, through Airflow's auth manager and the Batchwatch app (TestClient, bearer
token from POST /auth/token), it times every JSON route per model, /metrics, and random single
lookups (90% known ids) and batch lookups, and a burst against the default rate limit. It prints
p50/p95/p99 per route and the ratios it is judged by: p95 / 300 ms for each JSON route and page,
p99 / 20 ms for the single lookup (<= 1 passes).

    .venv/bin/python bench/bench_web.py                       # 30 days x 1M (seeding takes minutes)
    .venv/bin/python bench/bench_web.py --rows-per-day 200000 --keep   # smaller; keep the database
    .venv/bin/python bench/bench_web.py --reuse                # time again over a kept database
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = Path(tempfile.mkdtemp(prefix="batchwatch-bench-web-"))
SERVER = os.environ.get("BATCHWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "batchwatch_bench_web"
URL = f"{SERVER}/{DATABASE}"
MODELS = ("fraud", "churn", "wide")
SMALL_ROWS_PER_DAY = 10_000
PASSWORDS = {"bench": "bench-secret"}

os.environ.update(
    {
        "AIRFLOW_HOME": str(SCRATCH / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "bench:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(SCRATCH / "passwords.json"),
        "AIRFLOW_CONN_WAREHOUSE": URL,
        # Beside the kept database, so a --reuse run finds the drift report the seeding wrote.
        "BATCHWATCH_ARTIFACT_ROOT": str(Path(tempfile.gettempdir()) / f"{DATABASE}-artifacts"),
        "BATCHWATCH_SPEC_DIRS": os.pathsep.join(str(ROOT / d) for d in ("include/models", "tests/specs", "bench/specs")),
    }
)
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT)]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def create_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")


def real_world(engine, today: datetime) -> datetime:
    """The rows the real jobs write, at small scale: returns the end of the drifted window checked."""
    from batchwatch.demo.seed import simulate_into
    from batchwatch.demo.simulate import Scenario
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.monitoring.drift import check_window
    from batchwatch.scoring import predict_interval
    from batchwatch.spec import get_spec

    spec = get_spec("fraud")
    drift_day = today - timedelta(days=1)
    history = drift_day - timedelta(days=14)
    simulate_into(engine, start=history, end=drift_day, rows_per_day=2_000, labels_as_of=drift_day)
    simulate_into(engine, start=drift_day, end=today, rows_per_day=2_000, scenarios=(Scenario("null_burst", drift_day, "country", 0.5),), seed=8)
    bootstrap_champion(engine, spec, start=history, end=drift_day)
    predict_interval(engine, spec, start=drift_day, end=today, run_id="bench__scored")
    check_window(engine, spec, window_end=today, run_id="bench__drift")
    return today


def copy_registry(engine) -> None:
    """The fraud registry, events, references and incident, copied to the other models."""
    tables = {
        "model_versions": "version, artifact_uri, sha256, metrics, params, features, pipeline_steps, trained_on, parent_version, created_at, "
                          "rolled_back_at, rolled_back_reason",
        "model_aliases": "alias, version, updated_at",
        "model_events": "event, version, previous_version, reason, details, actor, created_at",
        "reference_profiles": "model_version, column_name, kind, profile",
        "alerts": "status, opened_window_end, last_drifted_window_end, resolved_window_end, model_version, drifted, summary, opened_at, "
                  "resolved_at, open_notified_at, resolved_notified_at, run_id",
    }
    with engine.begin() as connection:
        for model in MODELS[1:]:
            for table, columns in tables.items():
                connection.exec_driver_sql(
                    f"INSERT INTO {table} (model_name, {columns}) SELECT %(m)s, {columns} FROM {table} WHERE model_name = 'fraud'", {"m": model}
                )


def hourly_drift(engine, last_window: datetime, days: int) -> int:
    """Every hour of `days` days for every model, from the template of the one real window."""
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TEMP TABLE template AS SELECT * FROM drift_results WHERE model_name = 'fraud'")
        connection.exec_driver_sql("DELETE FROM drift_results")
        inserted = connection.exec_driver_sql(
            """
            INSERT INTO drift_results (model_name, window_start, window_end, model_version, column_name, test, statistic, p_value,
                                       p_adjusted, effect_size, threshold, n_reference, n_current, verdict, details, run_id, checked_at)
            SELECT m, w - interval '1 day', w, t.model_version, t.column_name, t.test,
                   t.statistic * (0.8 + 0.4 * random()), t.p_value, t.p_adjusted, t.effect_size * (0.8 + 0.4 * random()), t.threshold,
                   t.n_reference, t.n_current,
                   CASE WHEN w = %(last)s THEN t.verdict WHEN random() < 0.03 THEN 'drifted' ELSE 'ok' END,
                   t.details, t.run_id || '_' || to_char(w, 'YYYYMMDDHH24'), w + interval '5 minutes'
            FROM template t
            CROSS JOIN generate_series(%(last)s - %(span)s + interval '1 hour', %(last)s, interval '1 hour') AS w
            CROSS JOIN unnest(%(models)s::text[]) AS m
            """,
            {"last": last_window, "span": timedelta(days=days), "models": list(MODELS)},
        ).rowcount
    return inserted


def predictions_day(engine, model: str, version: int, day, day_index: int, rows: int) -> float:
    """One day's partition, built as the nightly writer builds it: unindexed stage, one index sort, attach,
    then the day's daily_scoring rows from the same SQL; returns the seconds that summary took."""
    from batchwatch.warehouse import partition_name
    from batchwatch.warehouse.write import daily_scoring_statements

    partition = partition_name(model, day)
    stage = f"{partition}_next"
    recurring = rows // 10
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
        connection.exec_driver_sql(f"CREATE TABLE {stage} (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        connection.exec_driver_sql(
            f"""
            INSERT INTO {stage} (model_name, model_version, role, entity_id, ds, score, predicted_label, run_id, scored_at)
            SELECT %(m)s, %(v)s, 'champion',
                   CASE WHEN g <= %(recurring)s THEN 'r' || g ELSE 'e' || (%(offset)s + g) END,
                   %(day)s, s, (s >= 0.5)::int, %(run)s, %(at)s
            FROM generate_series(1, %(rows)s) AS g, LATERAL (SELECT power(random(), 4) AS s) AS score
            """,
            {"m": model, "v": version, "recurring": recurring, "offset": day_index * rows, "day": day, "rows": rows,
             "run": f"scheduled__{day}", "at": datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc) + timedelta(minutes=20)},
        )
        connection.exec_driver_sql(
            """
            INSERT INTO rejected_rows (model_name, ds, entity_id, reason, payload, run_id, rejected_at)
            SELECT %(m)s, %(day)s, 'x' || (%(offset)s + g), 'amount is null or NaN', '{}'::jsonb, %(run)s, now()
            FROM generate_series(1, %(n)s) AS g
            """,
            {"m": model, "day": day, "offset": day_index * rows, "n": max(1, rows // 100), "run": f"scheduled__{day}"},
        )
        connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {partition}")  # the small world's scored day, replaced
        connection.exec_driver_sql(f"ALTER TABLE {stage} ADD CONSTRAINT {partition}_key UNIQUE (model_name, entity_id, ds, model_version)")
        # DDL takes no parameters; the model is one of MODELS and the days are dates.
        connection.exec_driver_sql(
            f"ALTER TABLE predictions ATTACH PARTITION {stage} FOR VALUES FROM ('{model}', '{day}') TO ('{model}', '{day + timedelta(days=1)}')"
        )
        connection.exec_driver_sql(f"ALTER TABLE {stage} RENAME TO {partition}")
        started = time.perf_counter()
        connection.exec_driver_sql("DELETE FROM daily_scoring WHERE model_name = %(m)s AND ds = %(day)s", {"m": model, "day": day})
        for statement in daily_scoring_statements(True, "model_name = %(m)s AND ds = %(day)s"):
            connection.exec_driver_sql(statement, {"m": model, "day": day})
        return time.perf_counter() - started


def seed(engine, days: int, rows_per_day: int) -> dict:
    from batchwatch.warehouse import migrate

    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    migrate(engine)
    started = time.perf_counter()
    last_window = real_world(engine, today)
    log(f"real jobs wrote the small world in {time.perf_counter() - started:.1f} s")
    copy_registry(engine)
    started = time.perf_counter()
    log(f"{hourly_drift(engine, last_window, days):,} drift results in {time.perf_counter() - started:.1f} s")
    with engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version FROM model_aliases WHERE model_name = 'fraud' AND alias = 'champion'").scalar_one()
    started = time.perf_counter()
    first = today.date() - timedelta(days=days)
    summaries = []
    for index in range(days):
        day = first + timedelta(days=index)
        for model in MODELS:
            seconds = predictions_day(engine, model, version, day, index, rows_per_day if model == "fraud" else SMALL_ROWS_PER_DAY)
            if model == "fraud":
                summaries.append(seconds)
        if (index + 1) % 5 == 0:
            log(f"{index + 1}/{days} days of predictions ({time.perf_counter() - started:.0f} s)")
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    log(f"predictions: {days} days x {rows_per_day:,} rows (fraud) in {time.perf_counter() - started:.0f} s")
    log(f"daily_scoring of one fraud day ({rows_per_day:,} rows): median {statistics.median(summaries):.2f} s, max {max(summaries):.2f} s")
    return {"last_window": last_window.isoformat()}


def airflow_db() -> None:
    """Airflow's metadata database (SQLite, in the scratch AIRFLOW_HOME): token checks read it."""
    import subprocess

    result = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"airflow db migrate failed:\n{result.stdout}{result.stderr}")


def app_client():
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from batchwatch_airflow.web import metrics, predictions
    from batchwatch_airflow.web.app import create_app

    (SCRATCH / "passwords.json").write_text(json.dumps(PASSWORDS))
    batchwatch = create_app()
    mounted = {route.path for route in batchwatch.routes}
    for router in (metrics.router, predictions.router):
        if not {route.path for route in router.routes} <= mounted:
            batchwatch.include_router(router)
    host = FastAPI()
    init_auth_manager(host).init()
    host.mount("/batchwatch", batchwatch)
    client = TestClient(host)
    client.__enter__()  # one event loop for every request, as in a running server (the caller exits it)
    token = client.post("/auth/token", json={"username": "bench", "password": PASSWORDS["bench"]}).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def timed(client, method: str, path: str, repeat: int, budget_s: float = 30.0, **kwargs) -> list[float]:
    """Milliseconds per request after two warm-ups, fewer than `repeat` once a route has used `budget_s`
    (a route 10x over its target says so in a few requests); every answer must be a 200."""
    for _ in range(2):
        response = client.request(method, path, **kwargs)
        if response.status_code != 200:
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    times: list[float] = []
    for _ in range(repeat):
        if sum(times) > budget_s * 1000 and len(times) >= 5:
            break
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    return times


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1] if len(values) > 1 else values[0]


def report(name: str, times: list[float], q: float, target_ms: float) -> float:
    figure = quantile(times, q)
    ratio = figure / target_ms
    print(f"{name:<58} n={len(times):>5}  p50 {quantile(times, 0.5):8.1f} ms  p{round(q * 100)} {figure:8.1f} ms"
          f"  ratio {ratio:5.2f} {'ok' if ratio <= 1 else 'OVER'}")
    return ratio


def measure(args: argparse.Namespace, last_window: str) -> None:
    from batchwatch import serving
    from batchwatch_airflow.web import security

    os.environ["AIRFLOW__BATCHWATCH__PREDICTIONS_BURST"] = str(args.lookups * 3)
    os.environ["AIRFLOW__BATCHWATCH__PREDICTIONS_PER_SECOND"] = "100000"
    airflow_db()
    client = app_client()
    print(f"\nJSON routes and /metrics, target p95 <= 300 ms ({args.requests} requests each):")
    ratios = []
    ratios.append(report("/api/models", timed(client, "GET", "/batchwatch/api/models", args.requests), 0.95, 300))
    ratios.append(report("/metrics", timed(client, "GET", "/batchwatch/metrics", args.requests), 0.95, 300))
    for model in MODELS:
        for route in ("overview", "drift", "volume", "volume/checks", "performance", "versions", "alias-history", "promotions", "incidents",
                      "releases", "drills/latest"):
            path = f"/batchwatch/api/models/{model}/{route}"
            ratios.append(report(path, timed(client, "GET", path, args.requests), 0.95, 300))
        check = {"window_end": last_window, "column": "country", "test": "null_rate"}
        ratios.append(report(f"/batchwatch/api/models/{model}/drift/check", timed(client, "GET", f"/batchwatch/api/models/{model}/drift/check",
                                                                               args.requests, params=check), 0.95, 300))

    print(f"\nHTML pages, target p95 <= 300 ms ({args.requests} requests each):")
    ratios.append(report("/batchwatch/ (the models)", timed(client, "GET", "/batchwatch/", args.requests), 0.95, 300))
    for model in MODELS:
        page = f"/batchwatch/models/{model}"
        ratios.append(report(f"{page} (every panel)", timed(client, "GET", page, args.requests), 0.95, 300))
        for column, test in (("country", "null_rate"), ("amount", "ks")):
            check = {"window_end": last_window, "column": column, "test": test}
            ratios.append(report(f"/batchwatch/models/{model}/drift ({column} {test})",
                                 timed(client, "GET", f"/batchwatch/models/{model}/drift", args.requests, params=check), 0.95, 300))
    report_path = f"/batchwatch/models/fraud/reports/drift/{datetime.fromisoformat(last_window):%Y%m%dT%H%MZ}"
    ratios.append(report("/batchwatch/models/fraud/reports/drift/<window>", timed(client, "GET", report_path, args.requests), 0.95, 300))

    rows = args.rows_per_day
    rng = random.Random(7)

    def some_id() -> str:
        draw = rng.random()
        if draw < 0.3:
            return f"r{rng.randint(1, rows // 10)}"  # recurs every day: the latest of 30 partitions
        if draw < 0.9:
            return f"e{rng.randint(0, args.days - 1) * rows + rng.randint(rows // 10 + 1, rows)}"
        return f"missing-{rng.randint(1, 10**9)}"

    print(f"\nPrediction lookups, target p99 <= 20 ms ({args.lookups} random ids; 30% recurring, 60% one day, 10% unknown):")
    single = []
    statuses = {200: 0, 404: 0}
    for _ in range(args.lookups):
        started = time.perf_counter()
        response = client.get(f"/batchwatch/api/models/fraud/predictions/{some_id()}")
        single.append((time.perf_counter() - started) * 1000)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    ratio_lookup = report("GET /api/models/fraud/predictions/{entity_id}", single, 0.99, 20)
    print(f"    answers: {statuses}")
    ids = [some_id() for _ in range(args.lookups)]
    engine = security.warehouse()
    core = []
    for entity_id in ids:
        started = time.perf_counter()
        serving.latest_prediction(engine, "fraud", entity_id)
        core.append((time.perf_counter() - started) * 1000)
    report("  of which the warehouse: serving.latest_prediction", core, 0.99, 20)
    floor = timed(client, "GET", "/batchwatch/api/models", args.lookups // 4)
    report("  of which auth + spec files read per request: /api/models", floor, 0.99, 20)
    loaded = security._specs()
    original, security._specs = security._specs, lambda: loaded
    try:
        cached = [timed(client, "GET", f"/batchwatch/api/models/fraud/predictions/{entity_id}", 1)[0] for entity_id in ids if entity_id[0] != "m"]
    finally:
        security._specs = original
    report("  the same lookups with the specs read once (not shipped)", cached, 0.99, 20)
    batch = [timed(client, "POST", "/batchwatch/api/models/fraud/predictions", 1, json={"entity_ids": [some_id() for _ in range(100)]})[0]
             for _ in range(max(20, args.requests))]
    ratios.append(report("POST /api/models/fraud/predictions (100 ids)", batch, 0.95, 300))

    print("\nRate limit (defaults: burst 20, then 10 a second), a burst of 60 lookups from one user:")
    os.environ.pop("AIRFLOW__BATCHWATCH__PREDICTIONS_BURST")
    os.environ.pop("AIRFLOW__BATCHWATCH__PREDICTIONS_PER_SECOND")
    limited = app_client()
    started = time.perf_counter()
    answers = [limited.get("/batchwatch/api/models/fraud/predictions/r1") for _ in range(60)]
    elapsed = time.perf_counter() - started
    allowed = sum(answer.status_code == 200 for answer in answers)
    retry = {answer.headers.get("Retry-After") for answer in answers if answer.status_code == 429}
    print(f"    {allowed} answered, {60 - allowed} refused with 429 (Retry-After {sorted(retry)}) in {elapsed:.2f} s; "
          f"the bucket allows {20 + 10 * elapsed:.0f}")

    print(f"\nworst page or JSON route p95 / 300 ms = {max(ratios):.2f}; lookup p99 / 20 ms = {ratio_lookup:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per JSON route")
    parser.add_argument("--lookups", type=int, default=2_000, help="timed single lookups")
    parser.add_argument("--keep", action="store_true", help="keep the database for --reuse")
    parser.add_argument("--reuse", action="store_true", help="time over the database a --keep run left")
    args = parser.parse_args()

    from batchwatch.warehouse import make_engine, migrate

    state_file = Path(tempfile.gettempdir()) / f"{DATABASE}.json"
    if args.reuse:
        state = json.loads(state_file.read_text())
        args.days, args.rows_per_day = state["days"], state["rows_per_day"]
        log(f"reusing {DATABASE}: {args.days} days x {args.rows_per_day:,} rows")
        migrate(make_engine(URL))  # a kept database gets the migrations added since
    else:
        create_database()
        shutil.rmtree(os.environ["BATCHWATCH_ARTIFACT_ROOT"], ignore_errors=True)
        engine = make_engine(URL)
        state = {**seed(engine, args.days, args.rows_per_day), "days": args.days, "rows_per_day": args.rows_per_day}
        engine.dispose()
        state_file.write_text(json.dumps(state))
    try:
        measure(args, state["last_window"])
    finally:
        if not args.keep and not args.reuse:
            import psycopg

            with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
