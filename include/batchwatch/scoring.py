"""Batch prediction of one data interval: stream, validate, build features, score, replace atomically."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.features import build_features
from batchwatch.spec import ModelSpec
from batchwatch.validation import validate
from batchwatch.warehouse import replace_interval, stream_frames


class RejectRateExceeded(RuntimeError):
    """Too many rows failed validation: something upstream is broken, so nothing is written."""


class NoChampion(RuntimeError):
    """There is no model to score with yet."""


class DuplicateEntity(RuntimeError):
    """The source gave one entity key twice in an interval, in different chunks."""


def _is_unique_violation(error: BaseException) -> bool:
    return getattr(error, "sqlstate", None) == "23505" or (isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error))


def source_query(spec: ModelSpec) -> tuple[str, list[str], list[str]]:
    """SQL for the rows of one interval [:start, :end); its columns and which of them are text."""
    key, event = spec.source.entity_key, spec.source.event_time
    columns = [key, *spec.source_columns]
    query = f"SELECT {', '.join(columns)} FROM {spec.source.relation} s WHERE {event} >= :start AND {event} < :end"
    text = [key, *(f.name for f in spec.features if f.is_categorical)]
    return query, columns, text


def score(pipeline: Any, features: pd.DataFrame) -> np.ndarray:
    """Positive-class probability; the one place a pipeline is asked for a score."""
    return pipeline.predict_proba(features)[:, 1]


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

    Returns a JSON-able summary. Raises (and leaves the interval untouched) when there is no
    champion, when its artifact fails its checksum, or when the reject rate passes the spec's limit.
    """
    started = time.perf_counter()
    champion = registry.load_alias(engine, spec.name, "champion")
    if champion is None:
        raise NoChampion(f"model {spec.name!r} has no champion; register one first (python -m batchwatch bootstrap {spec.name})")
    challenger = registry.load_alias(engine, spec.name, "challenger")
    ds: date = start.date()
    scored_at = datetime.now(timezone.utc)
    threshold = spec.scoring.threshold
    query, columns, text = source_query(spec)
    read = scored = positives = 0
    reasons: Counter[str] = Counter()

    try:
        with replace_interval(engine, spec.name, ds, run_id, scored_at) as writer:
            for raw in stream_frames(engine, query, {"start": start, "end": end}, columns, text, chunk_size or spec.scoring.chunk_size):
                read += len(raw)
                checked = validate(raw, spec)
                if len(checked.rejected):
                    reasons.update(checked.reasons)
                    keys = checked.rejected[spec.source.entity_key]
                    writer.write_rejects(
                        keys.astype(object).where(keys.notna(), None).tolist(),
                        checked.reasons.tolist(),
                        checked.rejected.to_dict(orient="records"),
                    )
                if checked.valid.empty:
                    continue
                features = build_features(checked.valid, spec)
                entity_ids = checked.valid[spec.source.entity_key].astype(str).tolist()
                for role, model in (("champion", champion), ("shadow", challenger)):
                    if model is None:
                        continue
                    scores = score(model.pipeline, features)
                    labels = (scores >= threshold).astype(np.int16)
                    writer.write_predictions(model.version, role, entity_ids, scores, labels)
                    if role == "champion":
                        positives += int(labels.sum())
                scored += len(features)

            rejected = read - scored
            reject_rate = rejected / read if read else 0.0
            if reject_rate > spec.scoring.max_reject_rate:
                top = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common(5))
                raise RejectRateExceeded(
                    f"{spec.name} {ds}: {rejected} of {read} rows rejected ({reject_rate:.2%}), over the limit of "
                    f"{spec.scoring.max_reject_rate:.2%} set in scoring.max_reject_rate; nothing was written. "
                    f"Most common reasons: {top}"
                )
    except Exception as error:
        if not _is_unique_violation(error):
            raise
        raise DuplicateEntity(
            f"{spec.name} {ds}: the source returned an {spec.source.entity_key} more than once in the interval "
            f"(duplicates within one chunk are rejected, across chunks they cannot be); nothing was written. "
            f"Make the source unique per {spec.source.entity_key}. Database said: {error}"
        ) from error

    seconds = time.perf_counter() - started
    return {
        "model_name": spec.name,
        "ds": ds.isoformat(),
        "model_version": champion.version,
        "shadow_version": challenger.version if challenger else None,
        "rows_read": read,
        "rows_scored": scored,
        "rows_rejected": rejected,
        "reject_rate": round(reject_rate, 6),
        "rejects_by_reason": dict(reasons.most_common()),
        "positive_rate": round(positives / scored, 6) if scored else None,
        "seconds": round(seconds, 3),
        "rows_per_second": round(read / seconds) if seconds else None,
    }
