"""The single path from raw source rows to the model's feature frame.

Training, batch scoring and drift checks all call `build_features`, so a feature cannot mean one
thing at training time and another at scoring time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchwatch.spec import ModelSpec, SpecError, resolve


def coerce_numeric(values: pd.Series) -> pd.Series:
    """Numbers as float64; text that is not a number becomes NaN (validation reports it first)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values, errors="coerce").astype("float64")


def coerce_categorical(values: pd.Series) -> pd.Series:
    """Strings as Python objects with NaN for missing, the form sklearn's encoders expect."""
    return values.astype(object).where(values.notna(), np.nan)


def build_features(raw: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Columns `spec.model_features`, in that order, typed for the estimator."""
    columns = {}
    for feature in spec.features:
        column = raw[feature.name]
        columns[feature.name] = coerce_categorical(column) if feature.is_categorical else coerce_numeric(column)
    frame = pd.DataFrame(columns, index=raw.index)
    if spec.derived_features is None:
        return frame
    derive = resolve(spec.derived_features.function, "derived_features.function")
    derived = derive(frame.copy())
    for column in spec.derived_features.columns:
        if column.name not in derived:
            raise SpecError(
                f"derived_features.function {spec.derived_features.function!r} did not return declared column {column.name!r}"
            )
        values = derived[column.name]
        frame[column.name] = coerce_categorical(values) if column.type == "categorical" else coerce_numeric(values)
    return frame[spec.model_features]
