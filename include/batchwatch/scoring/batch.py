"""Batch prediction of one data interval: stream, validate, build features, score, replace atomically."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.errors import InvalidArgument, PermanentError
from batchwatch.scoring.models import load_challenger, load_champion, load_version, score
from batchwatch.scoring.routing import Arms, Route, arms_on, plan_routes
from batchwatch.spec import ModelSpec, quote
from batchwatch.warehouse import IntervalWriter, is_unique_violation, replace_interval, stream_frames

log = logging.getLogger(__name__)


class RejectRateExceeded(PermanentError, RuntimeError):
    """Too many rows failed validation: something upstream is broken, so nothing is written."""


class CanaryUnservable(PermanentError, RuntimeError):
    """A canary's challenger must serve its arm, and cannot: scoring the day without it would serve the wrong model."""


class DuplicateEntity(PermanentError, RuntimeError):
    """A key came twice while scoring, and a second read of the source disagrees on which keys repeat."""


def source_query(spec: ModelSpec) -> tuple[str, list[str], list[str]]:
    """SQL for the rows of one interval [:start, :end); its columns and which of them are text."""
    key, event = spec.source.entity_key, spec.source.event_time
    columns = [key, *spec.source_columns]
    query = (
        f"SELECT {', '.join(map(quote, columns))} FROM {spec.source.relation} s "
        f"WHERE {quote(event)} >= :start AND {quote(event)} < :end"
    )
    return query, columns, spec.text_columns


@dataclass
class Tally:
    """What one pass over the rows counted: read, scored, served positives, and rejects by reason."""

    read: int = 0
    scored: int = 0
    positives: int = 0
    reasons: Counter = field(default_factory=Counter)


class _RepeatedKeys:
    """Entity keys the interval's source gives more than once, and which of them the stream has passed.

    Validation sees one chunk at a time, so it catches a key repeated within the chunk. A key
    repeated in a later chunk is caught here, so that every later copy is quarantined whatever
    the chunk size, keeping the first, as validation does within a chunk.
    """

    def __init__(self, keys: set[str]) -> None:
        self.keys = keys
        self.passed: set[str] = set()

    def seen_before(self, key: pd.Series) -> np.ndarray | None:
        """Rows whose key appeared in an earlier chunk; then this chunk's repeated keys count as passed."""
        if not self.keys:
            return None
        earlier = key.isin(self.passed).to_numpy()
        self.passed.update(key[key.isin(self.keys)].tolist())
        return earlier


def _score_chunk(
    writer: IntervalWriter, spec: ModelSpec, raw: pd.DataFrame, routes: list[Route], arms: Arms | None, tally: Tally, repeated: _RepeatedKeys
) -> None:
    """Validate one chunk, quarantine its rejects, score the rest with every model, hand both to the writer.

    During a canary every row is written with its entity's arm, by both models.
    """
    tally.read += len(raw)
    checked = validate(raw, spec, seen_before=repeated.seen_before(raw[spec.source.entity_key]))
    if len(checked.rejected):
        tally.reasons.update(checked.reasons)
        keys = checked.rejected[spec.source.entity_key]
        writer.write_rejects(
            keys.astype(object).where(keys.notna(), None).tolist(), checked.reasons.tolist(), checked.rejected.to_dict(orient="records")
        )
    if checked.valid.empty:
        return
    features = build_features(checked.valid, spec)
    entity_ids = checked.valid[spec.source.entity_key].astype(str).to_numpy()
    treatment = None if arms is None else arms.treatment(entity_ids.tolist())
    for route in routes:
        scores = score(route.model.pipeline, features)
        # Each model labels at its own threshold: a shadow's labels are its decisions, not the champion's.
        labels = (scores >= route.model.threshold).astype(np.int16)
        if treatment is None:
            writer.write_predictions(route.model.version, route.role, entity_ids, scores, labels)
        else:
            for arm, rows in (("control", ~treatment), ("treatment", treatment)):
                writer.write_predictions(route.model.version, route.role, entity_ids[rows], scores[rows], labels[rows], arm=arm)
        if route.serves != "none":
            served = labels if route.serves == "all" else labels[treatment if route.serves == "treatment" else ~treatment]
            tally.positives += int(served.sum())
    tally.scored += len(features)


def check_reject_rate(spec: ModelSpec, ds: date, rejected: int, read: int, reasons: str) -> None:
    if read and rejected / read > spec.scoring.max_reject_rate:
        raise RejectRateExceeded(
            f"{spec.name} {ds}: {rejected} of {read} rows rejected ({rejected / read:.2%}), over the limit of "
            f"{spec.scoring.max_reject_rate:.2%} set in scoring.max_reject_rate; nothing was written. "
            f"Most common reasons: {reasons}"
        )


def _score_interval(
    engine: Engine, spec: ModelSpec, models: ServingModels, query: str, start: datetime, end: datetime, chunk_size: int,
    repeated: _RepeatedKeys, writing: Callable[[], AbstractContextManager[IntervalWriter]], seal: Callable[[IntervalWriter, Tally], None],
) -> Tally:
    """One pass over `query`'s rows inside the writer's transaction; any exception leaves what it writes as it was.

    `seal` sees the writer and the tally once every row is written, before the commit, and may raise.
    """
    _, columns, text = source_query(spec)
    origin = f"model spec {spec.name}: {spec.source.field}"
    tally = Tally()
    with (
        writing() as writer,
        # closing(): on an exception the reader's connection ends now, not when garbage is collected.
        closing(stream_frames(engine, query, {"start": start, "end": end}, columns, text, chunk_size, spec.categorical_features, origin)) as chunks,
    ):
        for raw in chunks:
            _score_chunk(writer, spec, raw, models.routes, models.arms, tally, repeated)
        seal(writer, tally)
    return tally


def _check_day_rejects(spec: ModelSpec, ds: date) -> Callable[[IntervalWriter, Tally], None]:
    def seal(_writer: IntervalWriter, tally: Tally) -> None:
        top = "; ".join(f"{reason} ({n})" for reason, n in tally.reasons.most_common(5))
        check_reject_rate(spec, ds, tally.read - tally.scored, tally.read, top)

    return seal


def _repeated_keys(engine: Engine, spec: ModelSpec, query: str, start: datetime, end: datetime) -> set[str]:
    """The keys `query` gives more than once in [start, end), as text, the form the scoring stream reads.

    Counts their extra copies first and raises RejectRateExceeded, without reading the keys, when
    those copies alone pass the limit.
    """
    key = f"CAST({quote(spec.source.entity_key)} AS TEXT)"
    params = {"start": start, "end": end}
    with engine.connect() as connection:
        total, extra = connection.execute(
            sa.text(f"SELECT COUNT(*), COUNT({key}) - COUNT(DISTINCT {key}) FROM ({query}) AS interval_rows"), params
        ).one()
        check_reject_rate(spec, start.date(), extra, total, f"{spec.source.entity_key} is duplicated in the batch ({extra})")
        return set(
            connection.execute(
                sa.text(f"SELECT {key} FROM ({query}) AS interval_rows WHERE {key} IS NOT NULL GROUP BY {key} HAVING COUNT(*) > 1"), params
            ).scalars()
        )


@dataclass
class ServingModels:
    """What scores a day, and how its rows are routed: the same for every shard of a run."""

    champion: Any
    challenger: Any
    shadow_error: str | None
    arms: Arms | None
    routes: list[Route]

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.champion.version,
            "threshold": self.champion.threshold,
            "shadow_version": self.challenger.version if self.challenger else None,
            "shadow_threshold": self.challenger.threshold if self.challenger else None,
            "shadow_error": self.shadow_error,
            "canary": None if self.arms is None else {"release_id": self.arms.release_id, "version": self.arms.version, "share": self.arms.share},
        }


def serving_models(engine: Engine, spec: ModelSpec, ds: date) -> ServingModels:
    """The champion (or the day's canary baseline), the challenger, and the routes: raises when the day cannot be served."""
    with engine.connect() as connection:
        arms = arms_on(connection, spec.name, ds)
    if arms is None:
        champion = load_champion(engine, spec, f"; register one first (bin/batchwatch bootstrap {spec.name})")
    else:  # the day of a canary step is served by its two models, also when rerun after the canary ended
        champion = load_version(engine, spec, arms.baseline_version)
    challenger, shadow_error = load_challenger(engine, spec, canary_version=None if arms is None else arms.version)
    if arms is not None and challenger is None:
        raise CanaryUnservable(
            f"{spec.name} {ds}: a canary of v{arms.version} serves {arms.share:.0%} of entities that day, but the challenger cannot "
            f"be loaded ({shadow_error}); nothing was written. Restore its artifact, or stop the canary (bin/batchwatch canary stop {spec.name})."
        )
    return ServingModels(champion, challenger, shadow_error, arms, plan_routes(champion, challenger, arms))


def score_rows(
    engine: Engine, spec: ModelSpec, models: ServingModels, query: str, start: datetime, end: datetime, chunk_size: int,
    writing: Callable[[], AbstractContextManager[IntervalWriter]], seal: Callable[[IntervalWriter, Tally], None],
) -> Tally:
    """Score `query`'s rows; when a key repeated across chunks reaches the unique key, score them again with its later copies rejected."""
    ds = start.date()
    try:
        return _score_interval(engine, spec, models, query, start, end, chunk_size, _RepeatedKeys(set()), writing, seal)
    except Exception as error:
        if not is_unique_violation(error):
            raise
        # Rare: a key repeated across chunks reached the unique key. Find every repeated key, then
        # score the interval again with their later copies quarantined.
        repeated = _repeated_keys(engine, spec, query, start, end)
        if not repeated:
            raise DuplicateEntity(
                f"{spec.name} {ds}: an {spec.source.entity_key} came twice while scoring, yet a second read of the source "
                f"repeats none: is the interval still being written? Nothing was written. Database said: {error}"
            ) from error
        log.warning("%s %s: %d keys repeat in the interval; scoring again with every copy but the first rejected", spec.name, ds, len(repeated))
        try:
            return _score_interval(engine, spec, models, query, start, end, chunk_size, _RepeatedKeys(repeated), writing, seal)
        except Exception as again:
            if not is_unique_violation(again):
                raise
            raise DuplicateEntity(
                f"{spec.name} {ds}: the source repeated other {spec.source.entity_key}s on each read: is the interval still "
                f"being written? Nothing was written. Database said: {again}"
            ) from again


def day_summary(
    spec: ModelSpec, ds: date, models: dict[str, Any], read: int, scored: int, reasons: Counter, positives: int, seconds: float
) -> dict[str, Any]:
    rejected = read - scored
    return {
        "model_name": spec.name,
        "ds": ds.isoformat(),
        **models,
        "rows_read": read,
        "rows_scored": scored,
        "rows_rejected": rejected,
        "reject_rate": round(rejected / read, 6) if read else 0.0,
        "rejects_by_reason": dict(reasons.most_common()),
        "positive_rate": round(positives / scored, 6) if scored else None,
        "seconds": round(seconds, 3),
        "rows_per_second": round(read / seconds) if seconds else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float | None:
    """This process's memory high-water mark (Linux VmHWM): bounded by the chunk size, whatever the day's row count."""
    try:
        with open("/proc/self/status") as status:
            return next(round(int(line.split()[1]) / 1024, 1) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def check_one_day(spec: ModelSpec, start: datetime, end: datetime) -> None:
    if end - start != timedelta(days=1):
        raise InvalidArgument(f"{spec.name}: the nightly job scores one day per run, got the interval [{start}, {end})")


def predict_interval(
    engine: Engine,
    spec: ModelSpec,
    *,
    start: datetime,
    end: datetime,
    run_id: str,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Score every source row of [start, end) and make the interval's predictions exactly these.

    Returns a JSON-able summary. Raises, leaving the interval as it was, when there is no champion,
    when an artifact fails its checksum, when the reject rate passes the spec's limit, or when the
    source's repeated keys change between reads (DuplicateEntity).
    """
    check_one_day(spec, start, end)
    started = time.perf_counter()
    ds: date = start.date()
    models = serving_models(engine, spec, ds)
    query, _, _ = source_query(spec)
    tally = score_rows(
        engine, spec, models, query, start, end, chunk_size or spec.scoring.chunk_size,
        lambda: replace_interval(engine, spec.name, ds, run_id, datetime.now(timezone.utc)), _check_day_rejects(spec, ds),
    )  # fmt: skip
    return day_summary(spec, ds, models.describe(), tally.read, tally.scored, tally.reasons, tally.positives, time.perf_counter() - started)
