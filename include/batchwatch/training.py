"""Estimator factories, labelled-data assembly and training with an out-of-time validation split."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.drift import ReferenceProfile, build_reference
from batchwatch.errors import PermanentError
from batchwatch.features import build_features
from batchwatch.scoring import score
from batchwatch.spec import ModelSpec, quote, resolve
from batchwatch.validation import validate
from batchwatch.warehouse import read_frame, utc_timestamp

LABEL = "__label__"


class NotEnoughLabelledData(PermanentError, ValueError):
    """The window holds too few valid labelled rows, or one class only: a retry reads the same rows; wait for labels or widen the window."""


class CategoryCodes(TransformerMixin, BaseEstimator):
    """Each categorical column to the position of its value in a fixed category list; unknown and missing to NaN.

    The codes OrdinalEncoder(categories=..., handle_unknown="use_encoded_value", unknown_value=nan,
    encoded_missing_value=nan) gives, but looked up in pandas' C hash table instead of one Python
    dict lookup per value: encoding three columns had taken scoring as long as all the trees.
    """

    def __init__(self, categories: list[list[str]]) -> None:
        self.categories = categories

    def _check(self, X: Any) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"CategoryCodes takes a DataFrame, got {type(X).__name__}")
        if X.shape[1] != len(self.categories):
            raise ValueError(f"CategoryCodes has {len(self.categories)} category lists for {X.shape[1]} columns")

    def fit(self, X: pd.DataFrame, y: Any = None) -> CategoryCodes:
        self._check(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        self._check(X)
        codes = np.empty((len(X), len(self.categories)), dtype=np.float64)
        for position, categories in enumerate(self.categories):
            column = pd.Categorical(X.iloc[:, position], categories=categories).codes
            codes[:, position] = np.where(column >= 0, column, np.nan)
        return codes

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self)
        return self.feature_names_in_


def _encoder(spec: ModelSpec) -> ColumnTransformer:
    """Categoricals to codes over the spec's categories (unknown and missing -> NaN)."""
    categorical = spec.categorical_features
    numeric = [name for name in spec.model_features if name not in categorical]
    encoder = CategoryCodes([list(spec.categories_of(name)) for name in categorical])
    return ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", "passthrough", numeric)],
        verbose_feature_names_out=False,
    )


def hist_gradient_boosting(spec: ModelSpec, **params: Any) -> Pipeline:
    """The default: fast on millions of rows, native missing values and categoricals."""
    n_categorical = len(spec.categorical_features)
    mask = [True] * n_categorical + [False] * (len(spec.model_features) - n_categorical)
    params = {"max_iter": 40, "learning_rate": 0.2, "max_leaf_nodes": 8, "min_samples_leaf": 200, "early_stopping": False, "random_state": 0, **params}
    return Pipeline(
        [("encode", _encoder(spec)), ("model", HistGradientBoostingClassifier(categorical_features=mask, **params))]
    )


def gradient_boosting(spec: ModelSpec, **params: Any) -> Pipeline:
    """The seed's model, kept for comparison: exact but slow, and it needs imputation."""
    params = {"n_estimators": 100, "random_state": 0, **params}
    return Pipeline(
        [
            ("encode", _encoder(spec)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("model", GradientBoostingClassifier(**params)),
        ]
    )


def make_pipeline(spec: ModelSpec) -> Pipeline:
    factory = resolve(spec.estimator.factory, "estimator.factory")
    return factory(spec, **spec.estimator.params)


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
    return read_frame(engine, query, params, columns, text, spec.categorical_features, f"model spec {spec.name}: {spec.source.field} (joined with label.table)")


def valid_rows(spec: ModelSpec, labelled: pd.DataFrame) -> pd.DataFrame:
    """The rows a model may learn from or be judged on, in their order."""
    return validate(labelled, spec).valid.reset_index(drop=True)


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    both_classes = len(np.unique(labels)) == 2
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else float("nan"),
        "average_precision": float(average_precision_score(labels, scores)) if both_classes else float("nan"),
        "brier": float(brier_score_loss(labels, scores)),
        "positive_rate": float(np.mean(scores >= threshold)),
        "label_rate": float(np.mean(labels)),
        "rows": int(len(labels)),
    }


@dataclass(frozen=True)
class TrainedModel:
    pipeline: Pipeline
    metrics: dict[str, Any]
    reference: ReferenceProfile  # what the drift check compares with: training rows, validation scores
    holdout_from: str | None  # event time (UTC, ISO) of the first validation row; None when there is none


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
    threshold = spec.scoring.threshold
    train_scores = score(pipeline, features.iloc[:split])
    validation_scores = score(pipeline, features.iloc[split:])
    metrics = {
        "train": evaluate(labels[:split], train_scores, threshold),
        "validation": evaluate(labels[split:], validation_scores, threshold),
        "fit_seconds": round(fit_seconds, 3),
    }
    holdout_from = utc_timestamp(valid[spec.source.event_time].iloc[split]).isoformat() if split < len(valid) else None
    return TrainedModel(pipeline, metrics, build_reference(spec, arrived_before_holdout, validation_scores), holdout_from)


def bootstrap_champion(engine: Engine, spec: ModelSpec, *, start: datetime, end: datetime) -> int:
    """Train the first champion on the labelled history of [start, end) and register it."""
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
    )
    registry.set_alias(engine, spec.name, "champion", version, reason="bootstrap: first champion from labelled history", actor="bootstrap")
    return version
