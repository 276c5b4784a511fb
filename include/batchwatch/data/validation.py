"""Row checks derived from the spec: valid rows go on to scoring, the rest are quarantined.

Every check is a vectorised mask over the whole chunk; reasons are assembled only for the rows
that fail, so a clean chunk costs a handful of array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchwatch.data.features import coerce_numeric
from batchwatch.spec import ModelSpec

# The longest entity key scored, in characters. The predictions' unique index keeps (model_name,
# entity_id, ds, model_version) in one btree entry, which PostgreSQL caps at 2,704 bytes: one
# longer key failed the whole day. 256 characters are at most 1,024 bytes of UTF-8, beside a model
# name of at most 63 bytes (a PostgreSQL identifier), so a key of any script fits with room to spare.
MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class Validated:
    valid: pd.DataFrame
    rejected: pd.DataFrame  # the raw rows that failed, unchanged
    reasons: pd.Series  # aligned with `rejected`: every check the row failed, joined by "; "


def _not_a_number(column: pd.Series, numbers: np.ndarray) -> np.ndarray:
    """Values that are present but do not parse as a number ('NaN' itself is a number)."""
    if pd.api.types.is_numeric_dtype(column):
        return np.zeros(len(column), dtype=bool)
    spelled_nan = column.astype(str).str.strip().str.lower().eq("nan").to_numpy()
    return np.isnan(numbers) & column.notna().to_numpy() & ~spelled_nan


def _checks(raw: pd.DataFrame, spec: ModelSpec, seen_before: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
    key = raw[spec.source.entity_key]
    duplicated = key.duplicated(keep="first").to_numpy()
    if seen_before is not None:
        duplicated = duplicated | seen_before
    present = key.notna().to_numpy()
    checks = [
        (f"{spec.source.entity_key} is null", ~present),
        (f"{spec.source.entity_key} is duplicated in the batch", duplicated & present),
        (f"{spec.source.entity_key} longer than {MAX_KEY_LENGTH} characters", present & (key.astype(str).str.len() > MAX_KEY_LENGTH).to_numpy()),
    ]
    for feature in spec.features:
        column = raw[feature.name]
        if feature.is_categorical:
            missing = column.isna().to_numpy()
            if feature.nulls == "reject":
                checks.append((f"{feature.name} is null", missing))
            if feature.unknown_categories == "reject":
                known = column.isin(feature.categories).to_numpy()
                checks.append((f"{feature.name} has an unknown category", ~known & ~missing))
            continue
        numbers = coerce_numeric(column).to_numpy()
        present = ~np.isnan(numbers)
        wrong_type = _not_a_number(column, numbers)
        if feature.nulls == "reject":
            checks.append((f"{feature.name} is null or NaN", ~present & ~wrong_type))
        checks.append((f"{feature.name} is not a number (wrong type)", wrong_type))
        checks.append((f"{feature.name} is infinite", np.isinf(numbers)))
        finite = np.isfinite(numbers)
        if feature.type == "integer":
            fractional = np.zeros_like(finite)
            fractional[finite] = numbers[finite] != np.round(numbers[finite])
            checks.append((f"{feature.name} is not an integer (wrong type)", fractional))
        if feature.min is not None:
            checks.append((f"{feature.name} is below the minimum {feature.min:g}", present & finite & (numbers < feature.min)))
        if feature.max is not None:
            checks.append((f"{feature.name} is above the maximum {feature.max:g}", present & finite & (numbers > feature.max)))
    return checks


def validate(raw: pd.DataFrame, spec: ModelSpec, *, seen_before: np.ndarray | None = None) -> Validated:
    """Split `raw` into valid and rejected rows; `seen_before` marks rows whose key an earlier chunk of the batch had."""
    checks = _checks(raw, spec, seen_before)
    failed = np.zeros(len(raw), dtype=bool)
    for _, mask in checks:
        failed |= mask
    if not failed.any():
        return Validated(raw, raw.iloc[:0], pd.Series([], dtype=object))
    reasons = [[] for _ in range(int(failed.sum()))]
    for message, mask in checks:
        for position in np.flatnonzero(mask[failed]):
            reasons[position].append(message)
    rejected = raw[failed]
    return Validated(raw[~failed], rejected, pd.Series(["; ".join(r) for r in reasons], index=rejected.index, dtype=object))
