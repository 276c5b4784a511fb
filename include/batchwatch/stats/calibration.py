"""How far scores are from probabilities (expected calibration error), and a calibration that brings them closer.

A label-free estimate of performance (CBPE) reads a score as the chance the row is positive, which a
boosted model's score is only approximately. An isotonic map fitted on the validation set fixes that
when it helps; whether it helps is judged out of fold on the same rows, because isotonic regression
fitted and judged on one set always looks calibrated there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.isotonic import IsotonicRegression

from batchwatch.serialization import finite_or_none

ECE_BINS = 10


def _labels_and_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    label_array = np.asarray(labels, dtype=float).ravel()
    score_array = np.asarray(scores, dtype=float).ravel()
    if label_array.shape != score_array.shape:
        raise ValueError(f"{label_array.size} labels but {score_array.size} scores")
    if not np.isin(label_array, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(score_array).all() or (score_array < 0).any() or (score_array > 1).any():
        raise ValueError("scores must be finite and within [0, 1]")
    return label_array, score_array


def expected_calibration_error(labels: ArrayLike, scores: ArrayLike, bins: int = ECE_BINS) -> float:
    """sum over equal-width score bins of (rows in bin / rows) * |observed positive rate - mean score|; nan with no rows.

    Bins split [0, 1] at multiples of 1/bins and include their upper edge (a score of exactly 0.1 is in the
    first bin), as sklearn's calibration_curve(strategy="uniform") places them.
    """
    label_array, score_array = _labels_and_scores(labels, scores)
    if score_array.size == 0:
        return math.nan
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.searchsorted(edges[1:-1], score_array)
    rows = np.bincount(bin_of, minlength=bins)
    gaps = np.abs(np.bincount(bin_of, weights=label_array, minlength=bins) - np.bincount(bin_of, weights=score_array, minlength=bins))
    # Per bin n_b |mean(label)_b - mean(score)_b| = |sum(label)_b - sum(score)_b|, so empty bins add nothing.
    return float(gaps.sum() / rows.sum())


@dataclass(frozen=True)
class Calibration:
    """A map from raw score to probability, fitted on a version's validation set, with the ECEs it was chosen by.

    `method` "isotonic": the isotonic step function, linear between the points (x, y) and flat beyond
    them, which is what sklearn's IsotonicRegression(out_of_bounds="clip") predicts. "none": the raw
    score is kept, because the isotonic map did not lower the out-of-fold ECE (or could not be judged).
    """

    method: Literal["isotonic", "none"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    ece_raw: float | None = None  # of the raw validation scores
    ece_calibrated: float | None = None  # of isotonic maps fitted out of fold; None when too few rows of a class to judge
    rows: int = 0
    positives: int = 0

    def apply(self, scores: ArrayLike) -> np.ndarray:
        """The calibrated scores (a copy of the raw ones for "none")."""
        raw = np.asarray(scores, dtype=float)
        if self.method == "none":
            return raw.copy()
        return np.clip(np.interp(raw, self.x, self.y), 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method, "x": list(self.x), "y": list(self.y), "ece_raw": finite_or_none(self.ece_raw),
            "ece_calibrated": finite_or_none(self.ece_calibrated), "rows": self.rows, "positives": self.positives,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration:
        """A stored calibration; None (a version registered before calibrations were stored) is the identity."""
        if data is None:
            return cls("none")
        return cls(
            method=data["method"], x=tuple(map(float, data.get("x", ()))), y=tuple(map(float, data.get("y", ()))),
            ece_raw=data.get("ece_raw"), ece_calibrated=data.get("ece_calibrated"), rows=int(data.get("rows", 0)),
            positives=int(data.get("positives", 0)),
        )


def _isotonic(labels: np.ndarray, scores: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(scores, labels)


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per row, each class dealt round-robin after a shuffle: every fold gets its share of the rare class."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(labels.size, dtype=int)
    for value in (0.0, 1.0):
        rows = rng.permutation(np.flatnonzero(labels == value))
        fold_of[rows] = np.arange(rows.size) % folds
    return fold_of


def out_of_fold_isotonic(labels: ArrayLike, scores: ArrayLike, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each row's score calibrated by an isotonic map fitted on the other folds: what a fitted map does on rows it never saw."""
    label_array, score_array = _labels_and_scores(labels, scores)
    fold_of = _stratified_folds(label_array, folds, seed)
    calibrated = np.empty_like(score_array)
    for fold in range(folds):
        held_out = fold_of == fold
        calibrated[held_out] = _isotonic(label_array[~held_out], score_array[~held_out]).predict(score_array[held_out])
    return calibrated


def fit_calibration(labels: ArrayLike, scores: ArrayLike, *, folds: int = 5, seed: int = 0) -> Calibration:
    """Isotonic regression on the validation rows, kept only when its out-of-fold ECE is below the raw scores' ECE.

    With fewer than `folds` rows of either class the out-of-fold ECE cannot be judged, and the raw score is kept.
    """
    label_array, score_array = _labels_and_scores(labels, scores)
    positives = int(label_array.sum())
    rows = int(label_array.size)
    ece_raw = expected_calibration_error(label_array, score_array)
    if min(positives, rows - positives) < folds:
        return Calibration("none", ece_raw=finite_or_none(ece_raw), rows=rows, positives=positives)
    ece_calibrated = expected_calibration_error(label_array, out_of_fold_isotonic(label_array, score_array, folds=folds, seed=seed))
    if not ece_calibrated < ece_raw:
        return Calibration("none", ece_raw=ece_raw, ece_calibrated=ece_calibrated, rows=rows, positives=positives)
    fitted = _isotonic(label_array, score_array)
    return Calibration(
        "isotonic", x=tuple(map(float, fitted.X_thresholds_)), y=tuple(map(float, fitted.y_thresholds_)),
        ece_raw=ece_raw, ece_calibrated=ece_calibrated, rows=rows, positives=positives,
    )
