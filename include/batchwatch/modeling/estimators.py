"""Estimator factories: a spec in, an unfitted sklearn Pipeline (encoding + model) out.

A spec names its factory by dotted path (`estimator.factory`); stored artifacts pickle the classes
used here, so `batchwatch.training` keeps re-exporting them for artifacts dumped before this move.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from batchwatch.spec import ModelSpec, resolve


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
    params = {
        "max_iter": 40,
        "learning_rate": 0.2,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 200,
        "early_stopping": False,
        "random_state": 0,
        **params,
    }
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
