"""Derived features of the demo fraud model, named by `derived_features.function` in its spec."""

from __future__ import annotations

import numpy as np
import pandas as pd


def derive_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Ratios and transforms a fraud analyst would compute; null where their inputs are null."""
    typical = frame["avg_amount_7d"].where(frame["avg_amount_7d"] > 0)
    return pd.DataFrame(
        {
            "amount_to_avg_7d": frame["amount"] / typical,
            "log_amount": np.log1p(frame["amount"].clip(lower=0)),
            "is_night": (frame["hour"] < 6).astype("float64"),
        },
        index=frame.index,
    )
