"""Benchmark: realized (and estimated) daily performance over 30 days x 1M scored rows with labels, on PostgreSQL.

Seeds a fresh database with one registered fraud version (threshold 0.2, champion) and, generated
in SQL, 30 days x 1M predictions (one partition per day built unindexed, indexed with one sort and
attached, as the nightly writer does), their daily_scoring rows, and one outcome per prediction
(30M rows, observed 3 to 4 days after the event; outcomes' primary key and observed_at index built
once after the load, as the migrations define them). Scores are calibrated logit-normal doubles
(every row its own value), about 3% positives, ROC AUC about 0.85. `--older-outcomes N` adds N
labels of entities scored before the window, as a warehouse that keeps its history holds them.

Then it measures batchwatch.monitoring.performance.check_performance with every day's labels
matured, from rows in PostgreSQL to figures committed: over 5 days and over every day, each in a
fresh process (wall time, rows/s, peak RSS, judged flat in the number of days), and over every day
again with the planner settings the read is fastest under; the split between the grouped read
(read_groups) and the statistics on a few days; read_groups' query under EXPLAIN ANALYZE with other
planner settings; and one day's read as shipped against the same groups sent as arrays.

    .venv/bin/python bench/bench_performance_realized.py                    # 30 days x 1M (seeding takes 7 minutes)
    .venv/bin/python bench/bench_performance_realized.py --rows-per-day 100000 --days 10 --keep
    .venv/bin/python bench/bench_performance_realized.py --reuse             # measure again over a kept database
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = os.environ.get("BATCHWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "batchwatch_bench_performance"
URL = f"{SERVER}/{DATABASE}"
STATE_FILE = Path(tempfile.gettempdir()) / f"{DATABASE}.json"
MODEL = "fraud"
THRESHOLD = 0.2
VALIDATION = {"roc_auc": 0.88, "average_precision": 0.30, "precision": 0.31, "recall": 0.26, "f1": 0.28, "brier": 0.025}
# logit(score) ~ Normal(-4.5, 1.5) and label ~ Bernoulli(score): 2.9% positives, ROC AUC 0.846 (checked with scikit-learn).
LOGIT_MEAN, LOGIT_SD = -4.5, 1.5
SEED = 0.42
EARLY_DAYS = 5
# Memory flat in the number of days: peak RSS over every day against over EARLY_DAYS days.
MAX_RSS_RATIO = 1.1

sys.path[:0] = [str(ROOT / "include")]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def peak_rss_mb() -> float:
    """This process's high-water mark (VmHWM; ru_maxrss would carry the parent's over exec)."""
    return _proc_status("VmHWM")


def rss_mb() -> float:
    return _proc_status("VmRSS")


def _proc_status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def create_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")


def register_version(connection, trained_until: date) -> int:
    """One fraud version as registration stores it (threshold from a policy, uncalibrated), made champion."""
    version = 1
    connection.exec_driver_sql(
        "INSERT INTO model_versions (model_name, version, artifact_uri, sha256, metrics, params, features, pipeline_steps, trained_on,"
        " created_at, threshold, threshold_policy) VALUES (%(m)s, %(v)s, 'bench://fraud/1', repeat('0', 64), %(metrics)s, '{}', '[]', '[]',"
        " %(trained_on)s, %(at)s, %(t)s, %(policy)s)",
        {"m": MODEL, "v": version, "metrics": json.dumps({"validation": VALIDATION}), "at": datetime.now(timezone.utc), "t": THRESHOLD,
         "trained_on": json.dumps({"end": trained_until.isoformat()}),
         "policy": json.dumps({"policy": "alert_rate", "target": 0.02, "threshold": THRESHOLD, "validation": {"positive_rate": 0.02}})},
    )
    connection.exec_driver_sql(
        "INSERT INTO model_aliases (model_name, alias, version, updated_at) VALUES (%(m)s, 'champion', %(v)s, now())", {"m": MODEL, "v": version}
    )
    return version


def seed_day(connection, version: int, day: date, index: int, rows: int) -> None:
    """One day's partition built as the nightly writer builds it, its daily_scoring rows, and one outcome per row."""
    from batchwatch.warehouse import partition_name
    from batchwatch.warehouse.write import daily_scoring_statements

    partition = partition_name(MODEL, day)
    next_day = day + timedelta(days=1)
    scored_at = datetime.combine(next_day, datetime.min.time(), timezone.utc) + timedelta(minutes=20)
    connection.exec_driver_sql(f"CREATE TABLE {partition} (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    connection.exec_driver_sql(
        f"""
        INSERT INTO {partition} (model_name, model_version, role, entity_id, ds, score, predicted_label, run_id, scored_at)
        SELECT %(m)s, %(v)s, 'champion', (%(offset)s + g)::text, %(day)s, s, (s >= %(t)s)::int, %(run)s, %(at)s
        FROM (SELECT g, 1 / (1 + exp(-(%(mean)s + %(sd)s * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())))) AS s
              FROM generate_series(1, %(rows)s) AS g) AS scored
        """,
        {"m": MODEL, "v": version, "offset": index * rows, "day": day, "t": THRESHOLD, "run": f"scheduled__{day}", "at": scored_at,
         "rows": rows, "mean": LOGIT_MEAN, "sd": LOGIT_SD},
    )
    # The label is drawn from the score (a calibrated model); the outcomes' indexes are built after the last day.
    connection.exec_driver_sql(
        f"INSERT INTO outcomes (entity_id, label, observed_at) SELECT entity_id, (random() < score)::int,"
        f" %(day)s::timestamptz + interval '3 days' + random() * interval '1 day' FROM {partition}",
        {"day": datetime.combine(day, datetime.min.time(), timezone.utc)},
    )
    connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    connection.exec_driver_sql(f"ALTER TABLE {partition} ADD CONSTRAINT {partition}_key UNIQUE (model_name, entity_id, ds, model_version)")
    # DDL takes no parameters; the model is a constant and the days are dates. The CHECK proves the bound, so ATTACH scans nothing.
    connection.exec_driver_sql(
        f"ALTER TABLE {partition} ADD CONSTRAINT stage_bounds CHECK (model_name = '{MODEL}' AND ds >= '{day}' AND ds < '{next_day}')"
    )
    connection.exec_driver_sql(
        f"ALTER TABLE predictions ATTACH PARTITION {partition} FOR VALUES FROM ('{MODEL}', '{day}') TO ('{MODEL}', '{next_day}')"
    )
    connection.exec_driver_sql(f"ALTER TABLE {partition} DROP CONSTRAINT stage_bounds")
    for statement in daily_scoring_statements(True, "model_name = %(m)s AND ds = %(day)s"):
        connection.exec_driver_sql(statement, {"m": MODEL, "day": day})


def seed(days: int, rows_per_day: int, older_outcomes: int) -> dict:
    from batchwatch.warehouse import make_engine, migrate

    create_database()
    engine = make_engine(URL)
    migrate(engine)
    last = datetime.now(timezone.utc).date() - timedelta(days=10)
    first = last - timedelta(days=days - 1)
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT setseed(%(s)s)", {"s": SEED})
        version = register_version(connection, first - timedelta(days=1))
        connection.exec_driver_sql("ALTER TABLE outcomes DROP CONSTRAINT outcomes_pkey")
        connection.exec_driver_sql("DROP INDEX ix_outcomes_observed_at")
        if older_outcomes:
            # Labels of entities scored before the window, as a warehouse that keeps its history holds them.
            connection.exec_driver_sql(
                "INSERT INTO outcomes (entity_id, label, observed_at) SELECT 'h' || g, (random() < 0.03)::int,"
                " %(first)s::timestamptz - random() * interval '120 days' FROM generate_series(1, %(n)s) AS g",
                {"first": datetime.combine(first, datetime.min.time(), timezone.utc), "n": older_outcomes},
            )
            log(f"{older_outcomes:,} older outcomes ({time.perf_counter() - started:.0f} s)")
        connection.commit()
        for index in range(days):
            seed_day(connection, version, first + timedelta(days=index), index, rows_per_day)
            connection.commit()
            if (index + 1) % 5 == 0 or index + 1 == days:
                log(f"{index + 1}/{days} days of predictions and outcomes ({time.perf_counter() - started:.0f} s)")
        indexing = time.perf_counter()
        connection.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        connection.exec_driver_sql("ALTER TABLE outcomes ADD CONSTRAINT outcomes_pkey PRIMARY KEY (entity_id)")
        connection.exec_driver_sql("CREATE INDEX ix_outcomes_observed_at ON outcomes (observed_at)")
        connection.commit()
        log(f"outcomes' primary key and observed_at index built in {time.perf_counter() - indexing:.0f} s")
    vacuuming = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    log(f"VACUUM ANALYZE in {time.perf_counter() - vacuuming:.0f} s; seeded in {time.perf_counter() - started:.0f} s")
    engine.dispose()
    return {"days": days, "rows_per_day": rows_per_day, "older_outcomes": older_outcomes, "first": first.isoformat(), "last": last.isoformat(),
            "seed_seconds": round(time.perf_counter() - started)}


def bench_spec(days: int):
    """The fraud spec with a lookback that takes in exactly the `days` days ending at the judged one."""
    from batchwatch.spec import get_spec

    spec = get_spec(MODEL)
    return spec.model_copy(update={"performance": spec.performance.model_copy(update={"lookback_days": days - 1})})


def matured_as_of(spec, last: date) -> datetime:
    """The first instant every day up to `last` is matured: the end of `last` plus the label delay."""
    return datetime.combine(last + timedelta(days=1), datetime.min.time(), timezone.utc) + timedelta(days=spec.label.delay_days)


def server_settings(connection) -> dict[str, str]:
    return {name: connection.exec_driver_sql(f"SHOW {name}").scalar_one() for name in ("jit", "random_page_cost", "work_mem")}


def worker_check(days: int, state: dict) -> None:
    """In a fresh process: one check_performance over `days` days, from an empty performance_daily; prints its figures as JSON."""
    from batchwatch.monitoring.performance import check_performance
    from batchwatch.warehouse import make_engine

    engine = make_engine(URL)
    spec = bench_spec(days)
    last = date.fromisoformat(state["last"])
    with engine.begin() as connection:
        # Every run computes both sources for every day, and opens (not extends) its incident.
        connection.exec_driver_sql("DELETE FROM performance_daily")
        connection.exec_driver_sql("DELETE FROM alerts WHERE kind = 'performance'")
        settings = server_settings(connection)
    before = rss_mb()
    started = time.perf_counter()
    check = check_performance(engine, spec, last, as_of=matured_as_of(spec, last), run_id=f"bench__{days}_days")
    seconds = time.perf_counter() - started
    with engine.connect() as connection:
        written = connection.exec_driver_sql("SELECT source, COUNT(DISTINCT ds), COUNT(*) FROM performance_daily GROUP BY source").all()
    print(json.dumps({
        "days": days, "seconds": seconds, "realized_days": len(check.realized_days), "estimated_days": len(check.estimated_days),
        "written": {source: {"days": n_days, "rows": n_rows} for source, n_days, n_rows in written},
        "incident": (check.incident or {}).get("status"), "degraded": check.summary(MODEL)["degraded"], "settings": settings,
        "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
    }))


def read_statement(engine, spec, as_of: datetime, ds: date) -> tuple[str, dict]:
    """The statement read_groups sends, as sent (caught on a day without rows, where it costs nothing), with `ds`'s parameters."""
    import sqlalchemy as sa

    from batchwatch.monitoring.performance import read_groups

    sent: list[tuple[str, dict]] = []

    def record(_connection, _cursor, statement, parameters, _context, _executemany) -> None:
        sent.append((statement, dict(parameters)))

    empty_day = date(2000, 1, 1)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as connection:
            read_groups(connection, spec, empty_day, as_of)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    statement, parameters = sent[-1]
    return statement, {name: ds if value == empty_day else value for name, value in parameters.items()}


def arrays_statement(statement: str) -> str:
    """The alternative shape: the same groups, sent as one row of arrays per version and role instead of one row per score."""
    return ("SELECT model_version, role, array_agg(score), array_agg(scored), array_agg(labelled), array_agg(positives)"
            f" FROM ({statement}) AS grouped GROUP BY model_version, role")


def read_arrays(connection, statement: str, parameters: dict) -> dict:
    import numpy as np

    from batchwatch.stats.performance import ScoreGroups

    return {
        (version, role): ScoreGroups.from_aggregates(np.array(scores, dtype=np.float64), *(np.array(counts, dtype=np.int64) for counts in rest))
        for version, role, scores, *rest in connection.exec_driver_sql(arrays_statement(statement), parameters)
    }


def worker_read(shape: str, state: dict) -> None:
    """In a fresh process: one day's groups read in `shape` ('shipped': read_groups; 'arrays'), timed, with its peak RSS."""
    from batchwatch.monitoring.performance import read_groups
    from batchwatch.warehouse import make_engine

    engine = make_engine(URL)
    spec = bench_spec(state["days"])
    ds, as_of = date.fromisoformat(state["first"]), matured_as_of(spec, date.fromisoformat(state["last"]))
    statement, parameters = read_statement(engine, spec, as_of, ds)
    before = rss_mb()
    with engine.begin() as connection:
        started = time.perf_counter()
        groups = read_groups(connection, spec, ds, as_of) if shape == "shipped" else read_arrays(connection, statement, parameters)
        seconds = time.perf_counter() - started
    print(json.dumps({"shape": shape, "seconds": seconds, "groups": sum(len(g.scores) for g in groups.values()), "rss_before_mb": before,
                      "peak_rss_mb": peak_rss_mb()}))


def run_worker(option: str, value: str, settings: dict[str, str]) -> dict:
    """This script in a fresh process (`option value`), its connections under `settings` (libpq's PGOPTIONS)."""
    env = {**os.environ, "PGOPTIONS": " ".join(f"-c {name}={setting}" for name, setting in settings.items())}
    out = subprocess.run([sys.executable, __file__, option, value], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{option} {value} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def split(engine, state: dict, sample: int) -> list[dict]:
    """Per sampled day: read_groups, and of it the query (until its result is in the client), then realized and estimated statistics."""
    import sqlalchemy as sa

    from batchwatch.monitoring.performance import decision_of, read_groups
    from batchwatch.stats.calibration import Calibration
    from batchwatch.stats.performance import estimated, realized

    spec = bench_spec(state["days"])
    first, last = date.fromisoformat(state["first"]), date.fromisoformat(state["last"])
    as_of = matured_as_of(spec, last)
    settings = spec.performance
    days = sorted({first + timedelta(days=round(i * (state["days"] - 1) / max(1, sample - 1))) for i in range(sample)})
    marks: list[float] = []

    def mark(*_args) -> None:
        marks.append(time.perf_counter())

    out = []
    for ds in days:
        sa.event.listen(engine, "before_cursor_execute", mark)
        sa.event.listen(engine, "after_cursor_execute", mark)
        try:
            with engine.connect() as connection:
                started = time.perf_counter()
                groups = read_groups(connection, spec, ds, as_of)[(1, "champion")]
                read_seconds = time.perf_counter() - started
        finally:
            sa.event.remove(engine, "before_cursor_execute", mark)
            sa.event.remove(engine, "after_cursor_execute", mark)
        query_seconds = marks[-1] - marks[-2]  # psycopg's execute returns once the whole result is in the client
        with engine.connect() as connection:
            decision = decision_of(connection, spec, 1)
        started = time.perf_counter()
        realized_figures = realized(groups, decision.threshold, min_positives=settings.min_positives, samples=settings.bootstrap_samples,
                                    confidence=settings.confidence, seed=ds.toordinal())
        realized_seconds = time.perf_counter() - started
        started = time.perf_counter()
        calibrated = Calibration.from_json(decision.calibration).apply(groups.scores)
        estimated(groups, calibrated, decision.threshold, samples=settings.bootstrap_samples, confidence=settings.confidence, seed=ds.toordinal())
        estimated_seconds = time.perf_counter() - started
        out.append({"ds": ds, "rows": groups.n_rows, "distinct_scores": len(groups.scores), "read": read_seconds, "query": query_seconds,
                    "realized": realized_seconds, "estimated": estimated_seconds, "roc_auc": realized_figures["roc_auc"].value,
                    "label_rate": groups.n_positives / groups.n_labelled})
    return out


def explain(engine, statement: str, parameters: dict, settings: dict[str, str]) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of one statement under `settings`, in a transaction rolled back."""
    with engine.connect() as connection:
        for name, setting in settings.items():
            connection.exec_driver_sql(f"SET LOCAL {name} = '{setting}'")
        plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters).scalar_one()
        connection.rollback()
    return plan[0] if isinstance(plan, list) else json.loads(plan)[0]


def plan_nodes(node: dict, depth: int = 0, processes: int = 1) -> list[str]:
    """One line per plan node: kind, relation or index, rows, time to its last row (per loop when rescanned), temporary files, batches."""
    processes = 1 + node.get("Workers Launched", processes - 1)
    kind = " ".join(str(node[key]) for key in ("Partial Mode", "Strategy", "Join Type") if key in node and node[key] not in ("Simple", "Plain"))
    loops = node["Actual Loops"]
    took = f"{loops:,} loops x {node['Actual Total Time']:.4f} ms" if loops > processes else f"{node['Actual Total Time'] / 1000:.2f} s"
    line = (f"{'  ' * depth}{'Parallel ' if node.get('Parallel Aware') else ''}{node['Node Type']}{' (' + kind + ')' if kind else ''}"
            f"{' on ' + node['Relation Name'] if 'Relation Name' in node else ''}"
            f"{' using ' + node['Index Name'] if 'Index Name' in node else ''}"
            f"  rows {round(node['Actual Rows'] * loops):,}  {took}"
            f"{'  temp written ' + str(node['Temp Written Blocks'] * 8 // 1024) + ' MB' if node.get('Temp Written Blocks') else ''}"
            f"{'  batches ' + str(node['Hash Batches']) if node.get('Hash Batches', 1) > 1 else ''}")
    return [line, *(child for sub in node.get("Plans", []) for child in plan_nodes(sub, depth + 1, processes))]


# The same statement under other planner settings (all give the same groups). JIT compiles for seconds
# a query the planner costs high; random_page_cost 1.1 (storage that is cached or SSD) makes probing
# outcomes' primary key once per prediction cheaper, in the planner's eyes, than hashing every outcome.
READ_SETTINGS = {
    "as shipped (server defaults)": {},
    "jit off": {"jit": "off"},
    "jit off, work_mem 256MB": {"jit": "off", "work_mem": "256MB"},
    "jit off, random_page_cost 1.1": {"jit": "off", "random_page_cost": "1.1"},
    "jit off, random_page_cost 1.1, work_mem 64MB": {"jit": "off", "random_page_cost": "1.1", "work_mem": "64MB"},
}
TUNED = READ_SETTINGS["jit off, random_page_cost 1.1"]


def timed_fetch(engine, statement: str, parameters: dict, settings: dict[str, str], repeat: int) -> float:
    """Median seconds to execute and fetch every row, under `settings`."""
    times = []
    for _ in range(repeat):
        with engine.connect() as connection:
            for name, setting in settings.items():
                connection.exec_driver_sql(f"SET LOCAL {name} = '{setting}'")
            started = time.perf_counter()
            connection.exec_driver_sql(statement, parameters).all()
            times.append(time.perf_counter() - started)
            connection.rollback()
    return statistics.median(times)


def same_groups(engine, state: dict) -> bool:
    """The arrays shape gives read_groups' groups exactly."""
    import numpy as np

    from batchwatch.monitoring.performance import read_groups

    spec = bench_spec(state["days"])
    ds, as_of = date.fromisoformat(state["last"]), matured_as_of(spec, date.fromisoformat(state["last"]))
    statement, parameters = read_statement(engine, spec, as_of, ds)
    with engine.connect() as connection:
        for name, setting in TUNED.items():
            connection.exec_driver_sql(f"SET LOCAL {name} = '{setting}'")
        shipped, arrays = read_groups(connection, spec, ds, as_of), read_arrays(connection, statement, parameters)
    fields = ("scores", "rows", "labelled", "positives")
    return shipped.keys() == arrays.keys() and all(
        np.array_equal(getattr(shipped[key], name), getattr(arrays[key], name)) for key in shipped for name in fields
    )


def measure(state: dict, args: argparse.Namespace) -> None:
    from batchwatch.warehouse import make_engine

    days, rows_per_day = state["days"], state["rows_per_day"]
    early = min(EARLY_DAYS, days)
    runs = {}
    for name, count, settings in (("defaults", early, {}), ("defaults", days, {}), ("tuned", days, TUNED)):
        log(f"check_performance over {count} days in a fresh process, settings {settings or 'of the server'}")
        runs[name, count] = run = run_worker("--worker-days", str(count), settings)
        log(f"  {run['seconds']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB, server settings {run['settings']}")

    engine = make_engine(URL)
    log(f"read_groups and the statistics, {args.split_days} days one at a time, server settings")
    parts = split(engine, state, args.split_days)
    for part in parts:
        log(f"  {part['ds']}: {part['rows']:,} rows, {part['distinct_scores']:,} distinct scores, read_groups {part['read']:.2f} s "
            f"(of it the query, result in the client, {part['query']:.2f} s), realized {part['realized']:.2f} s, "
            f"estimated {part['estimated']:.2f} s, "
            f"ROC AUC {part['roc_auc']:.3f}, label rate {part['label_rate']:.4f}")

    spec = bench_spec(days)
    probe = date.fromisoformat(state["first"])  # any day would do: every day's read meets the same outcomes
    statement, parameters = read_statement(engine, spec, matured_as_of(spec, date.fromisoformat(state["last"])), probe)
    log(f"read_groups' query on {probe}, under other planner settings:\n    {statement}")
    variants = []
    for name, settings in READ_SETTINGS.items():
        plan = explain(engine, statement, parameters, settings)
        nodes = plan_nodes(plan["Plan"])
        if not variants or name == "jit off, random_page_cost 1.1":
            print("\n".join(f"    {line}" for line in nodes), flush=True)
        fetch = timed_fetch(engine, statement, parameters, settings, args.repeat)
        join = next((line.strip() for line in nodes if "Join" in line or "Nested Loop" in line), "?")
        jit = plan.get("JIT", {}).get("Timing", {}).get("Total", 0) / 1000
        variants.append((name, plan["Execution Time"] / 1000, jit, fetch, join))
        log(f"  {name}: server {plan['Execution Time'] / 1000:.2f} s (JIT {jit:.2f} s), execute + fetch {fetch:.2f} s  [{join}]")

    log("one day's groups in fresh processes, jit off and random_page_cost 1.1: read_groups, and the arrays shape")
    identical = same_groups(engine, state)
    engine.dispose()
    shapes = {shape: run_worker("--worker-read", shape, TUNED) for shape in ("shipped", "arrays")}

    rows = days * rows_per_day
    default, short, tuned = runs["defaults", days], runs["defaults", early], runs["tuned", days]
    flat = default["peak_rss_mb"] / short["peak_rss_mb"]
    read = statistics.mean(part["read"] for part in parts)
    query = statistics.mean(part["query"] for part in parts)
    realized_mean = statistics.mean(part["realized"] for part in parts)
    estimated_mean = statistics.mean(part["estimated"] for part in parts)

    def line(label: str, run: dict, count: int) -> str:
        return (f"  {label:<38} {run['seconds']:7.1f} s  {run['seconds'] / count:6.2f} s/day  {count * rows_per_day / run['seconds']:9,.0f} rows/s"
                f"  peak RSS {run['peak_rss_mb']:4.0f} MB (at start {run['rss_before_mb']:.0f} MB)")

    print(f"""
==== realized performance: {days} days x {rows_per_day:,} scored rows with labels ({rows:,} predictions, \
{rows + state.get("older_outcomes", 0):,} outcomes) ====
check_performance, every day matured: realized and estimated figures of each day, committed day by day
{line(f"{days} days, server settings", default, days)}
{line(f"{early} days, server settings", short, early)}
{line(f"{days} days, jit off, random_page_cost 1.1", tuned, days)}
  peak RSS {days} days / {early} days = {flat:.2f} (judged <= {MAX_RSS_RATIO}: {'ok' if flat <= MAX_RSS_RATIO else 'OVER'})
  written {default['written']}; degraded {default['degraded'] or 'none'}; incident {default['incident']}
one day, mean of {len(parts)} (server settings): read_groups {read:.2f} s = query {query:.2f} s (result in the client) \
+ rows to arrays {read - query:.2f} s;
  statistics {realized_mean + estimated_mean:.2f} s = realized {realized_mean:.2f} s + estimated {estimated_mean:.2f} s \
({(realized_mean + estimated_mean) / (read + realized_mean + estimated_mean):.0%} of the day)
read_groups' query on one day (server time from EXPLAIN ANALYZE; execute + fetch, median of {args.repeat}):""")
    for name, server, jit, fetch, join in variants:
        print(f"  {name:<46} server {server:6.2f} s (JIT {jit:4.2f} s)   execute + fetch {fetch:6.2f} s   {join}")
    print(f"one day's groups, jit off and random_page_cost 1.1, each in a fresh process (the arrays shape gives the same groups: {identical}):")
    for shape, run in shapes.items():
        label = "read_groups as shipped (a row per score)" if shape == "shipped" else "arrays shape (a row per version and role)"
        print(f"  {label:<46} {run['seconds']:6.2f} s   {run['groups']:,} groups   peak RSS {run['peak_rss_mb']:4.0f} MB "
              f"(at start {run['rss_before_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    parser.add_argument("--older-outcomes", type=int, default=0, help="also seed this many outcomes of entities scored before the window")
    parser.add_argument("--split-days", type=int, default=3, help="days whose read and statistics are timed apart")
    parser.add_argument("--repeat", type=int, default=3, help="timed executions of the read under each setting")
    parser.add_argument("--keep", action="store_true", help="keep the database for --reuse")
    parser.add_argument("--reuse", action="store_true", help="measure over the database a --keep run left")
    parser.add_argument("--seed-only", action="store_true", help="seed (and keep) the database, measure nothing")
    parser.add_argument("--worker-days", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-read", choices=("shipped", "arrays"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_days or args.worker_read:
        state = json.loads(STATE_FILE.read_text())
        if args.worker_days:
            worker_check(args.worker_days, state)
        else:
            worker_read(args.worker_read, state)
        return

    if args.reuse:
        from batchwatch.warehouse import make_engine, migrate

        state = json.loads(STATE_FILE.read_text())
        log(f"reusing {DATABASE}: {state['days']} days x {state['rows_per_day']:,} rows")
        migrate(make_engine(URL))  # a kept database gets the migrations added since
    else:
        state = seed(args.days, args.rows_per_day, args.older_outcomes)
        STATE_FILE.write_text(json.dumps(state))
    if args.seed_only:
        return
    try:
        measure(state, args)
    finally:
        if not args.keep and not args.reuse:
            import psycopg

            with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
