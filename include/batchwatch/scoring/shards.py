"""Sharded scoring: a day's entities split by a hash of their key, each shard staged apart, one publish.

`score_shard` scores its share of the keys (warehouse.stages.shard_sql) into a committed stage of its own (a
retry redoes that shard only); `publish_shards` makes the staged shards the day, in one transaction, with the
same partition swap as one task. One shard is today's path with the swap moved to its own step.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy.engine import Engine

from batchwatch.errors import InvalidArgument, PermanentError
from batchwatch.hashing import shard_salt
from batchwatch.scoring.batch import Tally, check_one_day, check_reject_rate, day_summary, score_rows, serving_models, source_query
from batchwatch.spec import ModelSpec, quote
from batchwatch.warehouse import IntervalWriter
from batchwatch.warehouse.stages import publish_stages, shard_sql, stage_shard


class ShardsDisagree(PermanentError, RuntimeError):
    """The shards of one run scored with different models (a promotion came between them): publishing would mix them."""


def shard_predicate(engine: Engine, spec: ModelSpec, shard: int, shards: int) -> str:
    """SQL keeping the source rows of shard `shard` of `shards`: every copy of a key lands in one shard, so a shard sees all its repeats."""
    return shard_sql(engine, f"s.{quote(spec.source.entity_key)}", shard, shards, shard_salt(spec.name))


def score_shard(
    engine: Engine,
    spec: ModelSpec,
    *,
    start: datetime,
    end: datetime,
    run_id: str,
    shard: int,
    shards: int,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Score shard `shard` of `shards` of [start, end) into its own committed stage, for publish_shards to make the day.

    Another try of the same shard replaces its stage; the day's predictions do not change until the publish.
    The reject rate is judged on the whole day, at the publish. Returns the shard's summary.
    """
    check_one_day(spec, start, end)
    if not 0 <= shard < shards:
        raise InvalidArgument(f"{spec.name}: shard {shard} is not one of 0..{shards - 1}")
    started = time.perf_counter()
    ds: date = start.date()
    models = serving_models(engine, spec, ds)
    query, _, _ = source_query(spec)
    if shards > 1:
        query += f" AND {shard_predicate(engine, spec, shard, shards)}"

    staged: dict[str, Any] = {}

    def seal(writer: IntervalWriter, tally: Tally) -> None:
        seconds = time.perf_counter() - started
        staged.update(day_summary(spec, ds, models.describe(), tally.read, tally.scored, tally.reasons, tally.positives, seconds))
        staged.update(shard=shard, shards=shards, positives=tally.positives)
        writer.summary = staged

    score_rows(
        engine, spec, models, query, start, end, chunk_size or spec.scoring.chunk_size,
        lambda: stage_shard(engine, spec.name, ds, run_id, shard, datetime.now(timezone.utc)), seal,
    )  # fmt: skip
    return staged


def publish_shards(engine: Engine, spec: ModelSpec, *, start: datetime, end: datetime, run_id: str, shards: int) -> dict[str, Any]:
    """Make the interval's predictions exactly the run's `shards` staged shards, in one transaction; the day's summary.

    Raises, leaving the day as it was, when a shard's stage is missing (ShardsMissing), when the shards scored with
    different models (ShardsDisagree), or when the day's reject rate passes the spec's limit.
    """
    check_one_day(spec, start, end)
    started = time.perf_counter()
    ds: date = start.date()
    model_fields = ("model_version", "threshold", "shadow_version", "shadow_threshold", "shadow_error", "canary")

    def check(summaries: list[dict[str, Any]]) -> None:
        versions = {json.dumps({field: summary[field] for field in model_fields}, sort_keys=True) for summary in summaries}
        if len(versions) > 1:
            raise ShardsDisagree(
                f"{spec.name} {ds}: the shards of run {run_id} scored with different models ({sorted(versions)}): a promotion or "
                "a release step came between them. Nothing was published; clear the run's score_shard tasks to score them again"
            )
        day = _day_tally(summaries)
        top = "; ".join(f"{reason} ({n})" for reason, n in day.reasons.most_common(5))
        check_reject_rate(spec, ds, day.read - day.scored, day.read, top)

    summaries = publish_stages(engine, spec.name, ds, run_id, shards, check)
    day = _day_tally(summaries)
    models = {field: summaries[0][field] for field in model_fields}
    summary = day_summary(spec, ds, models, day.read, day.scored, day.reasons, day.positives, max(s["seconds"] for s in summaries))
    summary["publish_seconds"] = round(time.perf_counter() - started, 3)
    summary["peak_rss_mb"] = max((s["peak_rss_mb"] for s in summaries if s["peak_rss_mb"] is not None), default=None)
    summary["shards"] = [
        {field: s[field] for field in ("shard", "rows_read", "rows_scored", "seconds", "rows_per_second", "peak_rss_mb")} for s in summaries
    ]
    return summary


def _day_tally(summaries: list[dict[str, Any]]) -> Tally:
    """The shards' counts added up: the day's."""
    return Tally(
        read=sum(s["rows_read"] for s in summaries),
        scored=sum(s["rows_scored"] for s in summaries),
        positives=sum(s["positives"] for s in summaries),
        reasons=sum((Counter(s["rejects_by_reason"]) for s in summaries), Counter()),
    )
