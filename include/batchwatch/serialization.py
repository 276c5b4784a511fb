"""Values into JSON the warehouse accepts: PostgreSQL's JSONB refuses NaN and infinities."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    return value


def json_safe(value: Any) -> Any:
    """The value with NaN/inf, numpy scalars and datetimes made valid JSON (PostgreSQL's JSONB refuses NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return _json_safe(value)


def finite_or_none(value: float | None, keep_inf: bool = False) -> float | None:
    """A float for storage: None for missing and NaN (JSON has none), and for ±inf unless kept."""
    if value is None or math.isnan(value) or (math.isinf(value) and not keep_inf):
        return None
    return float(value)


def to_json(payload: dict[str, Any]) -> str:
    return json.dumps(json_safe(payload), allow_nan=False)
