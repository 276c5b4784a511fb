"""One day's classification performance from rows grouped by distinct score: realized and estimated.

The warehouse hands over a day as (distinct score, rows, labelled, positives), so every metric is a
few cumulative sums over the groups in score order: a million distinct scores take about 50 ms, and
under 0.2 s with their intervals.
Realized figures use the labelled rows and equal scikit-learn's on them; estimated figures (CBPE)
treat the calibrated probability of each score as its expected label, so the same formulas apply
with fractional positives and negatives.

Intervals come from a bootstrap over a compressed copy of the day (see `_compress`): at most about
`BOOTSTRAP_RANGES` contiguous score ranges, cut also at the threshold and at the calibration bins so
the threshold and calibration metrics lose nothing. Merging scores inside a range shifts the ranking
metrics a little, so each interval is re-centred: point + percentiles(draws - compressed point),
widened if need be to hold the point and clipped to [0, 1], the range of every metric here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

REALIZED_METRICS = ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "ece", "positive_rate", "label_rate", "label_coverage")
ESTIMATED_METRICS = ("roc_auc", "average_precision", "precision", "recall", "f1", "brier", "label_rate")
RANKING_METRICS = ("roc_auc", "average_precision")
# 200 draws over this many ranges are under a million numbers per array, whatever the day's size.
BOOTSTRAP_RANGES = 2_048
# Calibration bins as sklearn's calibration_curve(strategy="uniform", n_bins=10): [0, 0.1], (0.1, 0.2], ..., (0.9, 1].
ECE_EDGES = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True, eq=False)  # eq on ndarray fields would be ambiguous
class ScoreGroups:
    """One day's rows grouped by distinct score, ascending."""

    scores: np.ndarray  # float64, strictly ascending, in [0, 1]
    rows: np.ndarray  # int64, rows scored with that score (at least 1)
    labelled: np.ndarray  # int64, of them with a label
    positives: np.ndarray  # int64, of them labelled 1

    def __post_init__(self) -> None:
        for name in ("scores", "rows", "labelled", "positives"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64 if name == "scores" else np.int64))
        if self.scores.ndim != 1 or not self.scores.shape == self.rows.shape == self.labelled.shape == self.positives.shape:
            raise ValueError("scores, rows, labelled and positives must be 1-D arrays of one length")
        if not (np.isfinite(self.scores).all() and (self.scores >= 0).all() and (self.scores <= 1).all()):
            raise ValueError("scores must be probabilities in [0, 1]")
        if (np.diff(self.scores) <= 0).any():
            raise ValueError("scores must be strictly ascending (use from_aggregates to sort and merge)")
        if not ((self.rows >= 1).all() and (self.labelled <= self.rows).all() and (self.positives >= 0).all()):
            raise ValueError("each score needs rows >= 1 and labelled <= rows")
        if not ((self.positives <= self.labelled).all() and (self.labelled >= 0).all()):
            raise ValueError("each score needs 0 <= positives <= labelled")

    @classmethod
    def from_rows(cls, scores: ArrayLike, labels: ArrayLike) -> ScoreGroups:
        """Group scored rows; a label is 0, 1 or NaN for a row whose label has not arrived."""
        scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
        if scores.shape != labels.shape:
            raise ValueError(f"{scores.shape} scores but {labels.shape} labels")
        if not np.isin(labels[~np.isnan(labels)], (0.0, 1.0)).all():
            raise ValueError("labels must be 0, 1 or NaN")
        distinct, group = np.unique(scores, return_inverse=True)
        count = len(distinct)
        return cls(
            distinct,
            np.bincount(group, minlength=count),
            np.bincount(group, weights=~np.isnan(labels), minlength=count).astype(np.int64),
            np.bincount(group, weights=labels == 1, minlength=count).astype(np.int64),
        )

    @classmethod
    def from_aggregates(cls, scores: ArrayLike, rows: ArrayLike, labelled: ArrayLike, positives: ArrayLike) -> ScoreGroups:
        """Counts per score in any order, as SQL returns them; duplicate scores are merged."""
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0]) if len(scores) else np.zeros(0, dtype=np.intp)

        def merged(counts: ArrayLike) -> np.ndarray:
            counts = np.asarray(counts, dtype=np.int64)[order]
            return np.add.reduceat(counts, starts) if len(starts) else counts

        return cls(sorted_scores[starts], merged(rows), merged(labelled), merged(positives))

    @property
    def n_rows(self) -> int:
        return int(self.rows.sum())

    @property
    def n_labelled(self) -> int:
        return int(self.labelled.sum())

    @property
    def n_positives(self) -> int:
        return int(self.positives.sum())


@dataclass(frozen=True)
class Figure:
    """A point figure and its confidence interval; NaN where undefined."""

    value: float
    lower: float
    upper: float


def realized(
    groups: ScoreGroups, threshold: float, *, min_positives: int = 1, samples: int = 200, confidence: float = 0.95, seed: int = 0
) -> dict[str, Figure]:
    """REALIZED_METRICS from the labelled rows (positive_rate and label_coverage from all scored rows).

    Intervals: a Poisson bootstrap of the compressed day, the positives, negatives and unlabelled rows
    of each range drawn independently as Poisson(count) - a resample of rows without touching them.
    Ranking metrics are NaN when fewer than `min_positives` positives or negatives are labelled.
    Sampling noise only adds to the ECE, so its draws sit above the point and its lower bound is
    usually the point itself.
    """
    _check_arguments(threshold, samples, confidence)
    negatives, unlabelled = groups.labelled - groups.positives, groups.rows - groups.labelled
    layout = _Layout.of(groups.scores, threshold)
    point = _figures(layout, groups.positives, negatives, unlabelled, min_positives)
    mass = groups.labelled if groups.n_labelled else groups.rows
    compressed, summed = _compress(layout, mass, groups.labelled, groups.positives, negatives, unlabelled)
    compressed_point = _figures(compressed, *summed, min_positives)
    rng = np.random.default_rng(seed)
    draws = _figures(compressed, *(rng.poisson(counts, size=(samples, len(counts))) for counts in summed), min_positives)
    return {metric: _figure(point[metric], compressed_point[metric], draws[metric], confidence) for metric in REALIZED_METRICS}


def estimated(
    groups: ScoreGroups, calibrated: ArrayLike, threshold: float, *, samples: int = 200, confidence: float = 0.95, seed: int = 0
) -> dict[str, Figure]:
    """ESTIMATED_METRICS before labels arrive, from the calibrated probability of each score (CBPE).

    The value is each metric with every row counted as `calibrated` of a positive and the rest of a
    negative. The interval is where the realized figure should fall if the calibration holds: labels
    drawn as Binomial(rows, calibrated) per compressed range, the realized metric of each draw.
    """
    _check_arguments(threshold, samples, confidence)
    calibrated = np.asarray(calibrated, dtype=np.float64)
    if calibrated.shape != groups.scores.shape or not (np.isfinite(calibrated).all() and (calibrated >= 0).all() and (calibrated <= 1).all()):
        raise ValueError("calibrated must hold one probability in [0, 1] per distinct score")
    layout = _Layout.of(groups.scores, threshold)
    expected_positives = groups.rows * calibrated
    point = _figures(layout, expected_positives, groups.rows - expected_positives, np.zeros(len(groups.rows)), 0)
    # ranges of equal label variance, rows * c * (1 - c): resolution where the simulated labels are uncertain
    label_variance = expected_positives * (1 - calibrated)
    compressed, (rows, positives) = _compress(layout, label_variance, groups.rows, groups.rows, expected_positives)
    compressed_point = _figures(compressed, positives, rows - positives, np.zeros(len(rows)), 0)
    drawn = np.random.default_rng(seed).binomial(rows.astype(np.int64), np.clip(positives / rows, 0.0, 1.0), size=(samples, len(rows)))
    draws = _figures(compressed, drawn, rows - drawn, np.zeros(len(rows)), 1)
    return {metric: _figure(point[metric], compressed_point[metric], draws[metric], confidence) for metric in ESTIMATED_METRICS}


def _check_arguments(threshold: float, samples: int, confidence: float) -> None:
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


@dataclass(frozen=True, eq=False)
class _Layout:
    """What the metrics need of the scores: their values, which reach the threshold, where each calibration bin starts."""

    scores: np.ndarray
    above: np.ndarray
    bin_starts: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray, threshold: float) -> _Layout:
        bins = np.searchsorted(ECE_EDGES[1:-1], scores)  # side="left", as calibration_curve assigns them
        return cls(scores, scores >= threshold, np.flatnonzero(np.diff(bins, prepend=-1)))


def _compress(layout: _Layout, mass: np.ndarray, weight: np.ndarray, *counts: np.ndarray) -> tuple[_Layout, list[np.ndarray]]:
    """Contiguous score ranges of about equal `mass`, cut also at the threshold and the calibration bins.

    Each range scores its `weight`-weighted mean score, so with the labelled rows as weight the score
    sum of every calibration bin, hence the ECE, stays exact, as does every count on either side of
    the threshold. `counts` come back summed per range.
    """
    count = len(mass)
    forced = np.zeros(count, dtype=bool)
    forced[layout.bin_starts] = True
    forced[1:] |= layout.above[1:] != layout.above[:-1]
    if count > BOOTSTRAP_RANGES:
        share = np.floor((np.cumsum(mass) - mass) * (BOOTSTRAP_RANGES / max(float(mass.sum()), 1e-300)))
        forced[1:] |= share[1:] != share[:-1]
    else:
        forced[:] = True
    starts = np.flatnonzero(forced)
    if not len(starts):
        return layout, list(counts)
    weight_sum = np.add.reduceat(weight, starts).astype(np.float64)
    unweighted = np.add.reduceat(layout.scores, starts) / np.diff(starts, append=count)  # where nothing weighs, nothing reads it
    scores = np.divide(np.add.reduceat(layout.scores * weight, starts), weight_sum, out=unweighted, where=weight_sum > 0)
    bin_starts = np.flatnonzero(np.isin(starts, layout.bin_starts))
    return _Layout(scores, layout.above[starts], bin_starts), [np.add.reduceat(values, starts) for values in counts]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (sklearn's zero_division=np.nan), with no warning."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64))
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator != 0)


def _figures(layout: _Layout, positives: ArrayLike, negatives: ArrayLike, unlabelled: ArrayLike, min_class: float) -> dict[str, np.ndarray]:
    """Every metric of counts per score, shaped (..., scores); one figure per leading index (one per draw)."""
    positives, negatives, unlabelled = (np.asarray(values, dtype=np.float64) for values in (positives, negatives, unlabelled))
    total_positives, total_negatives = positives.sum(axis=-1), negatives.sum(axis=-1)
    labelled = positives + negatives
    total_labelled = total_positives + total_negatives
    scored = total_labelled + unlabelled.sum(axis=-1)
    if not layout.scores.size:
        empty = np.full(scored.shape, np.nan)
        return {metric: empty for metric in REALIZED_METRICS}
    true_positives = positives[..., layout.above].sum(axis=-1)
    flagged = labelled[..., layout.above].sum(axis=-1)
    ranked = (total_positives >= min_class) & (total_negatives >= min_class) & (total_positives > 0) & (total_negatives > 0)

    # AUC: each positive earns the negatives scoring below it, and half of those tied with it.
    negatives_below = np.cumsum(negatives, axis=-1) - negatives
    auc = _ratio((positives * (negatives_below + negatives / 2)).sum(axis=-1), total_positives * total_negatives)
    # Average precision: precision at each score (as threshold) weighted by the recall it adds; ties form one step.
    positives_from = np.cumsum(positives[..., ::-1], axis=-1)[..., ::-1]
    labelled_from = np.cumsum(labelled[..., ::-1], axis=-1)[..., ::-1]
    precision_from = np.divide(positives_from, labelled_from, out=np.zeros(positives_from.shape), where=labelled_from > 0)
    average_precision = _ratio((positives * precision_from).sum(axis=-1), total_positives)
    # ECE = sum over bins of n_b/N |mean label - mean score| = sum over bins of |positives_b - score sum_b| / N.
    bin_positives = np.add.reduceat(positives, layout.bin_starts, axis=-1)
    bin_score_sums = np.add.reduceat(labelled * layout.scores, layout.bin_starts, axis=-1)
    squared_error = positives * (1 - layout.scores) ** 2 + negatives * layout.scores**2
    return {
        "roc_auc": np.where(ranked, auc, np.nan),
        "average_precision": np.where(ranked, average_precision, np.nan),
        "precision": _ratio(true_positives, flagged),
        "recall": _ratio(true_positives, total_positives),
        "f1": _ratio(2 * true_positives, flagged + total_positives),
        "brier": _ratio(squared_error.sum(axis=-1), total_labelled),
        "ece": _ratio(np.abs(bin_positives - bin_score_sums).sum(axis=-1), total_labelled),
        "positive_rate": _ratio(flagged + unlabelled[..., layout.above].sum(axis=-1), scored),
        "label_rate": _ratio(total_positives, total_labelled),
        "label_coverage": _ratio(total_labelled, scored),
    }


def _figure(point: np.ndarray, compressed_point: np.ndarray, draws: np.ndarray, confidence: float) -> Figure:
    """The point with the draws' percentile interval re-centred on it; draws where the metric is undefined are left out."""
    value = float(point)
    defined = draws[~np.isnan(draws)]
    if math.isnan(value) or np.isnan(compressed_point) or not defined.size:
        return Figure(value, math.nan, math.nan)
    tail = 50 * (1 - confidence)
    lower, upper = value + np.percentile(defined - compressed_point, [tail, 100 - tail])
    return Figure(value, float(np.clip(min(lower, value), 0, 1)), float(np.clip(max(upper, value), 0, 1)))
