"""Benchmark: the nightly scoring path against two baselines on the same rows, on PostgreSQL.

For each size (default 1M and 5M source rows of the demo fraud model, one UTC day each) it runs,
each in a fresh process so that peak RSS is its own:

  e2e     batchwatch.scoring.predict_interval: read -> validate -> features -> score -> write, committed
  bare    the bare pipe: binary COPY out of the same source rows, binary COPY in of as many
          prediction rows into the same predictions table, committed; nothing in between
  floor   the bare pipe into an unindexed temporary table instead (context, not judged)
  pandas  pandas.read_sql(chunksize=...) of the same rows + DataFrame.to_sql of as many prediction rows,
          through SQLAlchemy's default driver for postgresql:// (psycopg2); pandas3: the same through psycopg 3

and prints rows/s, peak RSS and the ratios it is judged by: e2e / bare >= 0.5, e2e / pandas >= 10,
and peak RSS at the largest size / peak RSS at the smallest <= 1.25.

    make bench                                   # 1M and 5M rows
    .venv/bin/python bench/bench_nightly_predict.py --sizes 200000 1000000 --skip-pandas-above 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

SERVER = os.environ.get("BATCHWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "batchwatch_bench"
URL = f"{SERVER}/{DATABASE}"
HISTORY_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
HISTORY_END = datetime(2026, 1, 11, tzinfo=timezone.utc)
FIRST_BENCH_DAY = datetime(2026, 2, 1, tzinfo=timezone.utc)
CHUNK = 100_000


def bench_day(index: int) -> datetime:
    return FIRST_BENCH_DAY + timedelta(days=index)


def peak_rss_mb() -> float:
    """This process's high-water mark (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def clear_day(engine, day: datetime, *, empty_partition: bool) -> None:
    """Remove the day's predictions; the baselines then get the empty partition they insert into."""
    from batchwatch.warehouse import partition_name

    partition = partition_name("fraud", day.date())
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {partition}")
        connection.exec_driver_sql("DELETE FROM rejected_rows WHERE ds = %(ds)s", {"ds": day.date()})
        if empty_partition:
            connection.exec_driver_sql(
                f"CREATE TABLE {partition} PARTITION OF predictions "
                f"FOR VALUES FROM ('fraud', '{day:%Y-%m-%d}') TO ('fraud', '{day + timedelta(days=1):%Y-%m-%d}')"
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE predictions")


# --- the three paths, each run in its own process -----------------------------------------------


def run_e2e(day: datetime) -> dict:
    from batchwatch.scoring import predict_interval
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    engine = make_engine(URL)
    summary = predict_interval(engine, get_spec("fraud"), start=day, end=day + timedelta(days=1), run_id="bench-e2e", chunk_size=CHUNK)
    return {"rows": summary["rows_read"], "written": summary["rows_scored"], "rejected": summary["rows_rejected"]}


def _bare_pipe(day: datetime, target: str) -> dict:
    """COPY out (binary) of the source rows, then COPY in (binary) of as many prediction rows.

    Both ends use each driver's fastest path: psycopg2's C loop out, one prebuilt binary stream in.
    The ids are zero-padded so they arrive in key order, as the transaction ids of e2e do.
    """
    import numpy as np
    import psycopg
    import psycopg2

    from batchwatch.scoring import source_query
    from batchwatch.spec import get_spec
    from batchwatch.warehouse.write import BINARY_SIGNATURE, BINARY_TRAILER, PREDICTION_COLUMNS, encode_prediction_rows

    query, _, _ = source_query(get_spec("fraud"))
    query = query.replace(":start", "%(start)s").replace(":end", "%(end)s")
    with psycopg2.connect(URL) as source, open(os.devnull, "wb") as sink:
        cursor = source.cursor()
        cursor.copy_expert(cursor.mogrify(f"COPY ({query}) TO STDOUT (FORMAT BINARY)", {"start": day, "end": day + timedelta(days=1)}).decode(), sink)
        rows = cursor.rowcount  # from COPY's command tag: no second pass over the rows
    ids = np.char.add(b"bare-", np.char.zfill(np.arange(rows).astype("S10"), 10))
    scores = np.linspace(0, 1, rows)
    labels = (scores >= 0.5).astype(np.int16)
    now = datetime.now(timezone.utc)
    with psycopg.connect(URL) as connection:
        if target != "predictions":
            connection.execute(f"CREATE TEMP TABLE {target} (LIKE predictions)")
        with connection.cursor().copy(f"COPY {target} ({', '.join(PREDICTION_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(BINARY_SIGNATURE)
            for start in range(0, rows, CHUNK):
                part = slice(start, start + CHUNK)
                copy.write(encode_prediction_rows("fraud", 1, "champion", ids[part], day.date(), scores[part], labels[part], "bench-bare", now))
            copy.write(BINARY_TRAILER)
        connection.commit()
    return {"rows": rows, "written": rows}


def run_bare(day: datetime) -> dict:
    """The judged baseline: into `predictions` itself (the day's indexed partition)."""
    return _bare_pipe(day, "predictions")


def run_floor(day: datetime) -> dict:
    """For context only: into an unindexed temporary table, the cheapest possible destination."""
    return _bare_pipe(day, "bare_floor")


def _pandas_path(day: datetime, url: str) -> dict:
    """The usual pandas job: read_sql in chunks, to_sql the same number of prediction rows."""
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from batchwatch.scoring import source_query
    from batchwatch.spec import get_spec

    engine = sa.create_engine(url)
    query, _, _ = source_query(get_spec("fraud"))
    rows = 0
    now = datetime.now(timezone.utc)
    with engine.connect() as reader, engine.begin() as writer:
        chunks = pd.read_sql(sa.text(query), reader, params={"start": day, "end": day + timedelta(days=1)}, chunksize=CHUNK)
        for chunk in chunks:
            scores = np.linspace(0, 1, len(chunk))
            out = pd.DataFrame(
                {
                    "model_name": "fraud",
                    "model_version": 1,
                    "role": "champion",
                    "entity_id": chunk["transaction_id"].astype(str),
                    "ds": day.date(),
                    "score": scores,
                    "predicted_label": (scores >= 0.5).astype(np.int16),
                    "run_id": "bench-pandas",
                    "scored_at": now,
                }
            )
            out.to_sql("predictions", writer, if_exists="append", index=False)
            rows += len(chunk)
    return {"rows": rows, "written": rows}


def run_pandas(day: datetime) -> dict:
    """With SQLAlchemy's default driver for a postgresql:// URL, psycopg2 (also the design card's driver)."""
    return _pandas_path(day, URL)


def run_pandas3(day: datetime) -> dict:
    """The same job through psycopg 3, the faster driver for to_sql here: the stricter baseline."""
    return _pandas_path(day, URL.replace("postgresql://", "postgresql+psycopg://", 1))


WORKERS = {"floor": run_floor, "bare": run_bare, "e2e": run_e2e, "pandas": run_pandas, "pandas3": run_pandas3}


def worker(mode: str, day_index: int) -> None:
    from batchwatch.warehouse import make_engine

    day = bench_day(day_index)
    engine = make_engine(URL)
    clear_day(engine, day, empty_partition=mode != "e2e")
    engine.dispose()
    started = time.perf_counter()
    result = WORKERS[mode](day)
    seconds = time.perf_counter() - started
    print(json.dumps({**result, "mode": mode, "seconds": seconds, "rows_per_second": result["rows"] / seconds, "peak_rss_mb": peak_rss_mb()}))


# --- orchestration ----------------------------------------------------------------------------


def prepare(sizes: list[int]) -> None:
    from bench_database import fresh_warehouse

    from batchwatch.demo.seed import simulate_into
    from batchwatch.modeling.training import bootstrap_champion
    from batchwatch.spec import get_spec

    engine = fresh_warehouse(SERVER, DATABASE)
    started = time.perf_counter()
    simulate_into(engine, start=HISTORY_START, end=HISTORY_END, rows_per_day=20_000, labels_as_of=HISTORY_END)
    for index, size in enumerate(sizes):
        # Each size is one UTC day of source rows with 0.5% malformed rows, as in the demo.
        day = bench_day(index)
        simulate_into(engine, start=day, end=day + timedelta(days=1), rows_per_day=size, malformed_rate=0.005, seed=100 + index)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    version = bootstrap_champion(engine, get_spec("fraud"), start=HISTORY_START, end=HISTORY_END)
    print(f"prepared {DATABASE}: {sum(sizes):,} bench rows, champion v{version}, in {time.perf_counter() - started:.0f} s", flush=True)


def measure(mode: str, day_index: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--day", str(day_index)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--skip-pandas-above", type=int, default=None, help="skip the slow pandas path above this many rows")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--day", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.day)
        return

    os.environ.setdefault("BATCHWATCH_ARTIFACT_ROOT", str(ROOT / "var" / "bench-artifacts"))
    prepare(args.sizes)
    results: dict[int, dict[str, dict]] = {}
    for index, size in enumerate(args.sizes):
        results[size] = {}
        for mode in WORKERS:
            if mode.startswith("pandas") and args.skip_pandas_above and size > args.skip_pandas_above:
                continue
            result = measure(mode, index)
            results[size][mode] = result
            print(
                f"{size:>9,} rows  {mode:<7} {result['seconds']:8.2f} s  {result['rows_per_second']:>10,.0f} rows/s  "
                f"peak RSS {result['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
        e2e = results[size]["e2e"]["rows_per_second"]
        print(f"{size:>9,} rows  e2e / bare pipe = {e2e / results[size]['bare']['rows_per_second']:.2f}   (target >= 0.50)")
        for mode, driver in (("pandas", "psycopg2, SQLAlchemy's default"), ("pandas3", "psycopg 3")):
            if mode in results[size]:
                ratio = e2e / results[size][mode]["rows_per_second"]
                print(f"{size:>9,} rows  e2e / pandas path ({driver}) = {ratio:.1f}   (target >= 10)")
    small, large = min(args.sizes), max(args.sizes)
    if small != large:
        ratio = results[large]["e2e"]["peak_rss_mb"] / results[small]["e2e"]["peak_rss_mb"]
        print(f"peak RSS of e2e at {large:,} / at {small:,} = {ratio:.2f}   (target <= 1.25)")


if __name__ == "__main__":
    main()
