"""Benchmark: how long readers of other days stall while a publish waits behind a long reader (issue 14), plain DETACH vs polite.

Days A, B and C of `fraud` are written once (--rows each) into a database of its own. Then, for
each way of detaching, in one run:

  analysts     --analysts threads, each querying day C again and again (count and mean score), one
               autocommit transaction per query, a short pause between queries; every query timed
  long reader  reads day A, then holds its transaction for --hold seconds (SELECT pg_sleep), as
               issue 14's 40 s reader did
  publish      starts --publish-after seconds into the long reader: day B rewritten through
               replace_interval, whose partition swap has to wait for the long reader

  plain    the swap's detach before issue 14: one ALTER TABLE … DETACH PARTITION, waiting in the lock queue
  polite   batchwatch.warehouse.partitions.detach_partition: short attempts, out of the queue in between

It prints, per way, the longest stall of an analyst's query (its latency; judged), the median
latency, how many queries ran, and how long the publish took to commit after the long reader ended;
then the ratio of the longest stalls, plain / polite.

    .venv/bin/python bench/bench_swap_stall.py
    .venv/bin/python bench/bench_swap_stall.py --rows 500000 --hold 20 --analysts 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

from batchwatch.warehouse import replace_interval, write  # noqa: E402

SERVER = os.environ.get("BATCHWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "bw_swap_bench"
URL = f"{SERVER}/{DATABASE}"
DAY_A, DAY_B, DAY_C = date(2026, 10, 11), date(2026, 10, 12), date(2026, 10, 13)
ANALYST_PAUSE = 0.02  # seconds between one analyst's queries


def publish(engine: Any, day: date, rows: int, run_id: str) -> None:
    """Write the day's `rows` predictions through the nightly writer (stage, COPY, index, swap, commit)."""
    rng = np.random.default_rng(day.toordinal())
    scores = rng.random(rows)
    with replace_interval(engine, "fraud", day, run_id, datetime.now(timezone.utc)) as writer:
        writer.write_predictions(1, "champion", [f"e{i:09d}" for i in range(rows)], scores, (scores >= 0.5).astype(np.int16))


def plain_detach(connection: Any, partition: str) -> None:
    """The detach before issue 14: waits in the queue for ACCESS EXCLUSIVE on `predictions`, every later query behind it."""
    connection.execute(f"ALTER TABLE predictions DETACH PARTITION {partition}")


def analyst(stop: threading.Event, latencies: list[float]) -> None:
    import psycopg

    with psycopg.connect(URL, autocommit=True) as connection:
        while not stop.is_set():
            started = time.perf_counter()
            connection.execute("SELECT count(*), avg(score) FROM predictions WHERE model_name = 'fraud' AND ds = %s", (DAY_C,)).fetchone()
            latencies.append(time.perf_counter() - started)
            time.sleep(ANALYST_PAUSE)


def long_reader(hold: float, ended: list[float]) -> None:
    import psycopg

    with psycopg.connect(URL) as connection:
        connection.execute("SELECT count(*) FROM predictions WHERE ds = %s", (DAY_A,)).fetchone()
        connection.execute("SELECT pg_sleep(%s)", (hold,))
        connection.rollback()
        ended.append(time.perf_counter())


def run(way: str, engine: Any, args: argparse.Namespace) -> dict[str, float]:
    detach = {"plain": plain_detach, "polite": write.detach_partition}[way]
    polite = write.detach_partition
    write.detach_partition = detach  # what the writer's swap calls
    try:
        stop, ended = threading.Event(), []
        timings: list[list[float]] = [[] for _ in range(args.analysts)]
        analysts = [threading.Thread(target=analyst, args=(stop, own)) for own in timings]
        for thread in analysts:
            thread.start()
        time.sleep(1)  # the analysts' ordinary latency, before anything waits
        reader = threading.Thread(target=long_reader, args=(args.hold, ended))
        reader.start()
        time.sleep(args.publish_after)
        publish(engine, DAY_B, args.rows, f"bench-{way}")
        committed = time.perf_counter()
        reader.join()
        time.sleep(1)
        stop.set()
        for thread in analysts:
            thread.join()
    finally:
        write.detach_partition = polite
    latencies = [seconds for own in timings for seconds in own]
    return {
        "longest": max(latencies), "median": statistics.median(latencies), "queries": len(latencies),
        "after_reader": committed - ended[0],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="predictions per day")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds the long reader holds its transaction")
    parser.add_argument("--publish-after", type=float, default=1.0, help="seconds into the long reader the publish starts")
    parser.add_argument("--analysts", type=int, default=2, help="threads querying day C")
    args = parser.parse_args()

    import psycopg
    from bench_database import fresh_warehouse

    engine = fresh_warehouse(SERVER, DATABASE)
    try:
        for day in (DAY_A, DAY_B, DAY_C):
            publish(engine, day, args.rows, "bench-first")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE predictions")
        print(f"{DATABASE}: 3 days x {args.rows:,} predictions; long reader holds {args.hold:g} s; {args.analysts} analysts on day C", flush=True)
        results = {}
        for way in ("plain", "polite"):
            results[way] = result = run(way, engine, args)
            print(
                f"{way:<7} longest stall of a day-C query {result['longest'] * 1000:8.0f} ms   median {result['median'] * 1000:5.1f} ms"
                f"   {result['queries']:5d} queries   publish committed {result['after_reader']:5.2f} s after the long reader ended",
                flush=True,
            )
        print(f"longest stall plain / polite = {results['plain']['longest'] / results['polite']['longest']:.1f}")
    finally:
        engine.dispose()
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
