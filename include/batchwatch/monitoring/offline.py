"""The drift check for a notebook or a CI job: two DataFrames in, the hourly check's tests and verdicts out.

No database, model, spec file or entity key: columns are compared as they are named, categorical ones
are recognised by dtype (or named) and need no category list, and scores are optional (without them
no score test is run). The statistics, the BH family, effect bounds, per-test power and the
verdicts are the hourly check's own (`monitoring.drift.evaluate`), so an offline verdict and a
scheduled one agree on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from batchwatch.errors import InvalidArgument
from batchwatch.monitoring.drift import (
    FrameSpec,
    ScoreSettings,
    TestResult,
    build_reference,
    check_verdicts,
    describe,
    evaluate,
    window_status,
)
from batchwatch.spec.model import Drift


@dataclass(frozen=True)
class DriftComparison:
    status: str  # drifted, ok or insufficient_data, as a scheduled window's
    checks: dict[str, str]  # check -> verdict
    drifted: list[str]  # one line per drifted check, as alerts word them
    results: list[TestResult]

    def table(self) -> pd.DataFrame:
        """One row per test, the columns of `drift_results`."""
        return pd.DataFrame([result.row() for result in self.results])


def _categorical(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    return [name for name in columns if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])]


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    reference_scores: Any = None,
    current_scores: Any = None,
    score_threshold: float = 0.5,
    settings: Drift | dict[str, Any] | None = None,
    seed: int = 0,
) -> DriftComparison:
    """Compare `current` with `reference` column by column (and jointly), as the hourly drift check does.

    `columns` defaults to the columns the two frames share; `categorical` to those of a non-numeric or
    boolean dtype in the reference. `settings` takes the spec's `drift:` section (thresholds, fdr,
    min_rows, multivariate, exclude) as a Drift or a dict. Scores count only when both sides have them.
    """
    drift_settings = settings if isinstance(settings, Drift) else Drift(**(settings or {}))
    shared = [name for name in reference.columns if name in current.columns]
    names = list(columns) if columns is not None else shared
    missing = sorted({name for name in names if name not in reference.columns or name not in current.columns})
    if missing:
        raise InvalidArgument(f"columns {missing} are not in both frames; shared columns: {shared}")
    if not names:
        raise InvalidArgument("the frames share no column to compare")
    kinds = list(categorical) if categorical is not None else _categorical(reference, names)
    frame_spec = FrameSpec(drift=drift_settings, model_features=names, categorical_features=[n for n in names if n in kinds],
                           scoring=ScoreSettings(score_threshold))
    numeric = [name for name in names if name not in frame_spec.categorical_features]
    for frame in (reference, current):
        for name in numeric:
            if not pd.api.types.is_numeric_dtype(frame[name]):
                raise InvalidArgument(f"column {name!r} is compared as numeric but holds {frame[name].dtype}; name it in `categorical`")
    with_scores = reference_scores is not None and current_scores is not None
    profile = build_reference(frame_spec, reference[names].reset_index(drop=True), np.asarray(reference_scores, dtype=float) if with_scores else None)
    results = evaluate(frame_spec, profile, current[names].reset_index(drop=True),
                       np.asarray(current_scores, dtype=float) if with_scores else None, seed=seed)
    return DriftComparison(window_status(results), check_verdicts(results), describe(results), results)
