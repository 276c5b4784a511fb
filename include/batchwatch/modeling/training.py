"""Labelled-data assembly and training with an out-of-time validation split."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.errors import PermanentError
from batchwatch.modeling.decision import ThresholdUnreachable, fit_threshold, threshold_metrics
from batchwatch.modeling.estimators import make_pipeline
from batchwatch.monitoring.drift import ReferenceProfile, build_reference
from batchwatch.scoring import score
from batchwatch.spec import ModelSpec, quote
from batchwatch.stats.calibration import Calibration, expected_calibration_error, fit_calibration
from batchwatch.warehouse import read_frame, utc_timestamp

LABEL = "__label__"


class NotEnoughLabelledData(PermanentError, ValueError):
    """The window holds too few valid labelled rows, or one class only: a retry reads the same rows; wait for labels or widen the window."""


def labelled_query(spec: ModelSpec) -> tuple[str, list[str], list[str]]:
    """SQL joining source rows with matured outcomes, ordered by event time; its columns and text columns."""
    key, event = spec.source.entity_key, spec.source.event_time
    label = spec.label
    columns = [key, event, *spec.source_columns, LABEL]
    features = ", ".join(f"s.{quote(name)}" for name in [event, *spec.source_columns])
    labels = ".".join(map(quote, label.table.split(".")))
    query = (
        f"SELECT s.{quote(key)}, {features}, o.{quote(label.column)} AS {LABEL} "
        f"FROM {spec.source.relation} s JOIN {labels} o ON CAST(s.{quote(key)} AS TEXT) = o.{quote(label.entity_key)} "
        f"WHERE s.{quote(event)} >= :start AND s.{quote(event)} < :end AND o.{quote(label.observed_at)} <= :as_of "
        f"ORDER BY s.{quote(event)}, s.{quote(key)}"
    )
    return query, columns, spec.text_columns


def matured_end(spec: ModelSpec, end: datetime, as_of: datetime) -> datetime:
    """Events before this have all their labels by `as_of` (label.delay_days); later ones only some."""
    return min(end, as_of - timedelta(days=spec.label.delay_days))


def read_labelled(engine: Engine, spec: ModelSpec, start: datetime, end: datetime, as_of: datetime) -> pd.DataFrame:
    """Labelled rows of [start, end) whose labels have matured by `as_of`, oldest first, unvalidated.

    Only events older than the label delay are used: a half-labelled last day would be a biased
    sample (its early hours only) of the population the model and its reference describe.
    """
    query, columns, text = labelled_query(spec)
    params = {"start": start, "end": matured_end(spec, end, as_of), "as_of": as_of}
    return read_frame(
        engine, query, params, columns, text, spec.categorical_features, f"model spec {spec.name}: {spec.source.field} (joined with label.table)"
    )


def valid_rows(spec: ModelSpec, labelled: pd.DataFrame) -> pd.DataFrame:
    """The rows a model may learn from or be judged on, in their order."""
    return validate(labelled, spec).valid.reset_index(drop=True)


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The figures the daily performance check compares a version's realized ones with (precision, recall, F1 at `threshold`)."""
    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
        "average_precision": float(average_precision_score(labels, scores)) if both_classes else float("nan"),
        "brier": float(brier_score_loss(labels, scores)),
        "ece": expected_calibration_error(labels, scores),
        **threshold_metrics(labels, scores, threshold),
        "label_rate": float(np.mean(labels)),
        "rows": int(len(labels)),
    }


@dataclass(frozen=True)
class TrainedModel:
    pipeline: Pipeline
    metrics: dict[str, Any]
    reference: ReferenceProfile  # what the drift check compares with: training rows, validation scores
    holdout_from: str | None  # event time (UTC, ISO) of the first validation row; None when there is none
    threshold_policy: dict[str, Any]  # modeling.decision.fit_threshold on the validation rows
    calibration: Calibration  # fitted on the validation rows

    @property
    def threshold(self) -> float:
        return float(self.threshold_policy["threshold"])


def holdout_start(spec: ModelSpec, labelled: pd.DataFrame) -> int:
    """Row where the out-of-time holdout begins: the most recent `retrain.holdout_fraction` of rows."""
    return int(len(labelled) * (1 - spec.retrain.holdout_fraction))


def train(spec: ModelSpec, labelled: pd.DataFrame) -> TrainedModel:
    """Fit on the older valid rows, score the most recent `retrain.holdout_fraction` (out of time).

    `labelled` is rows as they arrived, oldest first. The drift check compares windows of such rows,
    malformed ones included, so the reference profiles the training period's rows the same way: a
    reject rate that was normal in training is then normal in the check, not a null-rate alarm.
    """
    labelled = labelled.reset_index(drop=True)
    valid = validate(labelled, spec).valid
    if len(valid) < 100 or valid[LABEL].nunique() < 2:
        raise NotEnoughLabelledData(f"not enough labelled data to train {spec.name}: {len(valid)} valid rows, labels {sorted(valid[LABEL].unique())}")
    split = holdout_start(spec, valid)
    # Features are computed row by row: built once over every row, they serve both fit and reference.
    all_features = build_features(labelled, spec)
    arrived_before_holdout = all_features.iloc[: valid.index[split]] if split < len(valid) else all_features
    features = all_features.loc[valid.index]
    labels = valid[LABEL].to_numpy(dtype=int)
    pipeline = make_pipeline(spec)
    started = time.perf_counter()
    pipeline.fit(features.iloc[:split], labels[:split])
    fit_seconds = time.perf_counter() - started
    train_scores = score(pipeline, features.iloc[:split])
    validation_scores = score(pipeline, features.iloc[split:])
    # The threshold and the calibration are chosen on the out-of-time validation rows, which the model never saw.
    try:
        threshold_policy = fit_threshold(spec.scoring.threshold, labels[split:], validation_scores)
    except ThresholdUnreachable as error:
        raise ThresholdUnreachable(f"{spec.name}: {error}") from None
    threshold = threshold_policy["threshold"]
    metrics = {
        "train": evaluate(labels[:split], train_scores, threshold),
        "validation": evaluate(labels[split:], validation_scores, threshold),
        "fit_seconds": round(fit_seconds, 3),
    }
    holdout_from = utc_timestamp(valid[spec.source.event_time].iloc[split]).isoformat() if split < len(valid) else None
    reference = build_reference(spec, arrived_before_holdout, validation_scores, threshold=threshold)
    return TrainedModel(pipeline, metrics, reference, holdout_from, threshold_policy, fit_calibration(labels[split:], validation_scores))


def bootstrap_champion(engine: Engine, spec: ModelSpec, *, start: datetime, end: datetime) -> int:
    """Train the first champion on the labelled history of [start, end) and register it.

    Training the same window again registers no new version (the registry returns the one it has),
    and a version that already is the champion is not pointed at again.
    """
    as_of = end
    labelled = read_labelled(engine, spec, start, end, as_of)
    trained = train(spec, labelled)
    version = registry.register(
        engine,
        spec,
        trained.pipeline,
        metrics=trained.metrics,
        trained_on={"start": start.isoformat(), "end": end.isoformat(), "labels_as_of": as_of.isoformat(), "rows": len(labelled)},
        parent_version=None,
        reference=trained.reference,
        threshold_policy=trained.threshold_policy,
        calibration=trained.calibration.to_json(),
    )
    if registry.alias_version(engine, spec.name, "champion") != version:
        registry.set_alias(engine, spec.name, "champion", version, reason="bootstrap: first champion from labelled history", actor="bootstrap")
    return version
