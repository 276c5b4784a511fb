"""Two-sample comparisons of a canary's arms: each one a test *and* an effect, with its standard error.

The canary decision needs, per metric, the difference treatment - control, its standard error (the
sequential confidence sequence in `stats.sequential` is built from those two numbers alone) and a
fixed-sample test and interval for the record:

- rates (positive rate, label rate): the two-proportion z-test, its p-value from the pooled SE as
  scipy's chi2_contingency(correction=False), the risk difference's interval from the unpooled
  (Wald) SE, Cohen's h as the effect;
- means of per-row values (Brier contributions, scores): Welch's t with Welch-Satterthwaite degrees
  of freedom, as scipy's ttest_ind(equal_var=False), Cohen's d with the pooled SD as the effect;
- ROC AUC: DeLong's variance from the structural components (placements), on disjoint arms
  (`delong_unpaired`) or on rows both models scored (`delong_paired`, with the covariance).

Where a figure is undefined (an empty arm, a zero variance) it is NaN, so one empty day never
crashes a decision; inputs that cannot be read at all (labels that are not 0/1, NaN scores, counts
outside 0..n) raise ValueError.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from batchwatch.serialization import finite_or_none
from batchwatch.stats.auc import as_scores, binary_labels, why_auc_undefined


@dataclass(frozen=True)
class Comparison:
    """One metric compared between the control arm (champion) and the treatment arm (challenger)."""

    metric: str
    test: str  # "two_proportion_z" | "welch_t" | "delong_unpaired" | "delong_paired"
    control: float
    treatment: float
    difference: float  # treatment - control
    standard_error: float  # of the difference
    statistic: float  # z (or Welch's t) for H0: difference == 0
    p_value: float  # two-sided, fixed-sample
    lower: float  # fixed-sample interval of the difference at the confidence asked for
    upper: float
    effect_size: float | None
    effect_name: str | None  # "cohens_h" | "cohens_d" | None
    n_control: int
    n_treatment: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN and infinities become None (PostgreSQL's JSONB refuses them)."""
        return {
            field.name: finite_or_none(value) if isinstance(value, float) else value
            for field in fields(self)
            for value in (getattr(self, field.name),)
        }


# --- rates ------------------------------------------------------------------------------------


def two_proportions(
    successes_control: int, n_control: int, successes_treatment: int, n_treatment: int, *, metric: str, confidence: float = 0.95
) -> Comparison:
    """Two-proportion z-test with the risk difference as the estimate.

    The p-value uses the pooled SE (the SE under H0, so z^2 is Pearson's chi-square of the 2x2
    table); the interval and `standard_error` use the unpooled Wald SE, the SE of the estimate
    wherever the truth lies, which is what a non-inferiority bound needs.
    """
    _check_confidence(confidence)
    # counts as Python ints (numpy's would not serialise; a float count is a mistake, and index() refuses it)
    counts = map(operator.index, (successes_control, n_control, successes_treatment, n_treatment))
    successes_control, n_control, successes_treatment, n_treatment = counts
    for successes, n in ((successes_control, n_control), (successes_treatment, n_treatment)):
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not (n_control and n_treatment):
        rate_control = successes_control / n_control if n_control else math.nan
        rate_treatment = successes_treatment / n_treatment if n_treatment else math.nan
        return _undefined(metric, "two_proportion_z", rate_control, rate_treatment, "cohens_h", n_control, n_treatment)
    rate_control, rate_treatment = successes_control / n_control, successes_treatment / n_treatment
    difference = rate_treatment - rate_control
    pooled = (successes_control + successes_treatment) / (n_control + n_treatment)
    statistic, p_value = _z_test(difference, math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment)))
    wald_se = math.sqrt(rate_control * (1 - rate_control) / n_control + rate_treatment * (1 - rate_treatment) / n_treatment)
    lower, upper = _interval(difference, wald_se, _normal_quantile(confidence))
    cohens_h = 2 * math.asin(math.sqrt(rate_treatment)) - 2 * math.asin(math.sqrt(rate_control))
    return Comparison(
        metric, "two_proportion_z", rate_control, rate_treatment, difference, _defined(wald_se),
        statistic, p_value, lower, upper, cohens_h, "cohens_h", n_control, n_treatment,
    )  # fmt: skip


# --- means ------------------------------------------------------------------------------------


def welch(control_values: ArrayLike, treatment_values: ArrayLike, *, metric: str, confidence: float = 0.95) -> Comparison:
    """Welch's t on per-row values (e.g. each row's Brier contribution): unequal variances and sizes allowed."""
    control, treatment = _finite_values(control_values, "control_values"), _finite_values(treatment_values, "treatment_values")
    return welch_from_moments(*_moments(control), *_moments(treatment), metric=metric, confidence=confidence)


def welch_from_moments(
    mean_c: float, var_c: float, n_c: int, mean_t: float, var_t: float, n_t: int, *, metric: str, confidence: float = 0.95
) -> Comparison:
    """Welch's t from each arm's mean, sample variance (ddof=1) and count, as one SQL aggregate gives them.

    An arm of fewer than two rows has no variance, so everything but the means is NaN.
    """
    _check_confidence(confidence)
    n_c, n_t = operator.index(n_c), operator.index(n_t)
    if n_c < 0 or n_t < 0:
        raise ValueError(f"counts must be >= 0, got {n_c} and {n_t}")
    for variance, n in ((var_c, n_c), (var_t, n_t)):
        if n >= 2 and not variance >= 0:
            raise ValueError(f"a variance must be >= 0 where n >= 2, got {variance} with n={n}")
    mean_c, mean_t = (float(mean_c) if n_c else math.nan), (float(mean_t) if n_t else math.nan)
    if n_c < 2 or n_t < 2:
        return _undefined(metric, "welch_t", mean_c, mean_t, "cohens_d", n_c, n_t)
    difference = mean_t - mean_c
    share_c, share_t = var_c / n_c, var_t / n_t  # each arm's part of the difference's variance
    standard_error = math.sqrt(share_c + share_t)
    statistic, p_value, lower, upper = math.nan, math.nan, math.nan, math.nan
    if standard_error > 0:
        dof = (share_c + share_t) ** 2 / (share_c**2 / (n_c - 1) + share_t**2 / (n_t - 1))  # Welch-Satterthwaite
        statistic = difference / standard_error
        p_value = float(2 * special.stdtr(dof, -abs(statistic)))
        lower, upper = _interval(difference, standard_error, float(special.stdtrit(dof, 0.5 + confidence / 2)))
    pooled_sd = math.sqrt(((n_c - 1) * var_c + (n_t - 1) * var_t) / (n_c + n_t - 2))
    cohens_d = difference / pooled_sd if pooled_sd > 0 else math.nan
    return Comparison(
        metric, "welch_t", mean_c, mean_t, difference, _defined(standard_error),
        statistic, p_value, lower, upper, cohens_d, "cohens_d", n_c, n_t,
    )  # fmt: skip


def _finite_values(values: ArrayLike, what: str) -> np.ndarray:
    array = as_scores(values, None, what)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return array


def _moments(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, sample variance, n) with NaN where undefined rather than numpy's warnings."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    return mean, float(values.var(ddof=1)) if n >= 2 else math.nan, n


# --- ROC AUC (DeLong) -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Placements:
    """DeLong's structural components of one model on one set of rows, each in row order.

    positive[i] = share of negatives the i-th positive outranks (ties count half); its mean is the AUC.
    negative[j] = share of positives that outrank the j-th negative (ties half); its mean is the AUC too.
    """

    positive: np.ndarray
    negative: np.ndarray

    @property
    def auc(self) -> float:
        return float(self.positive.mean())


def _placements(labels: np.ndarray, scores: np.ndarray) -> _Placements:
    """Placements in O(n log n) with exact ties: one sort per class and a binary search per row.

    This is Sun & Xu's (2014) fast DeLong: their midrank in the pooled sample minus the midrank
    within the row's own class is exactly the count of the other class below it plus half of those
    tied, which searchsorted's left and right positions give without forming ranks. The queries go
    in sorted order (then back to row order), which keeps the searches in cache: 3x faster at 1M rows.
    """
    is_positive = labels == 1
    positive_scores, negative_scores = scores[is_positive], scores[~is_positive]
    positive_order, negative_order = np.argsort(positive_scores), np.argsort(negative_scores)
    sorted_positive, sorted_negative = positive_scores[positive_order], negative_scores[negative_order]
    positives, negatives = len(sorted_positive), len(sorted_negative)
    # left + right = 2 * (strictly below) + (tied): twice the tie-aware count
    twice_below = np.searchsorted(sorted_negative, sorted_positive, "left") + np.searchsorted(sorted_negative, sorted_positive, "right")
    twice_at_or_below = np.searchsorted(sorted_positive, sorted_negative, "left") + np.searchsorted(sorted_positive, sorted_negative, "right")
    positive, negative = np.empty(positives), np.empty(negatives)
    positive[positive_order] = twice_below / (2.0 * negatives)
    negative[negative_order] = (2.0 * positives - twice_at_or_below) / (2.0 * positives)
    return _Placements(positive, negative)


def _covariance(a: np.ndarray, b: np.ndarray) -> float:
    """Sample covariance (ddof=1); NaN below two values."""
    if len(a) < 2:
        return math.nan
    return float(np.dot(a - a.mean(), b - b.mean()) / (len(a) - 1))


def _auc_covariance(first: _Placements, second: _Placements) -> float:
    """DeLong's Cov(AUC1, AUC2) over the same rows: S10 / m + S01 / n; with first is second, the variance."""
    return _covariance(first.positive, second.positive) / len(first.positive) + _covariance(first.negative, second.negative) / len(first.negative)


def _arm_placements(labels: ArrayLike, scores: ArrayLike, arm: str) -> tuple[np.ndarray, _Placements]:
    label_array = binary_labels(labels)
    score_array = as_scores(scores, len(label_array), f"{arm} scores")
    reason = why_auc_undefined(label_array, {arm: score_array})
    if reason:
        raise ValueError(f"the {arm} arm has no AUC: {reason}")
    return label_array, _placements(label_array, score_array)


def delong_unpaired(
    labels_control: ArrayLike,
    scores_control: ArrayLike,
    labels_treatment: ArrayLike,
    scores_treatment: ArrayLike,
    *,
    metric: str = "roc_auc",
    confidence: float = 0.95,
) -> Comparison:
    """AUC difference between disjoint arms (the canary's served rows): the arms are independent, so Var = V_c + V_t.

    An arm without a positive or a negative raises ValueError: its AUC does not exist.
    """
    _check_confidence(confidence)
    labels_c, control = _arm_placements(labels_control, scores_control, "control")
    labels_t, treatment = _arm_placements(labels_treatment, scores_treatment, "treatment")
    variance = _auc_covariance(control, control) + _auc_covariance(treatment, treatment)
    return _auc_comparison(metric, "delong_unpaired", control.auc, treatment.auc, variance, confidence, len(labels_c), len(labels_t))


def delong_paired(
    labels: ArrayLike, scores_control: ArrayLike, scores_treatment: ArrayLike, *, metric: str = "roc_auc", confidence: float = 0.95
) -> Comparison:
    """AUC difference of two models on the same rows (shadow scoring): Var = V_c + V_t - 2 Cov.

    Noise common to both models cancels, so this is far tighter than comparing disjoint arms when
    the models rank alike. Rows without a positive or a negative raise ValueError.
    """
    _check_confidence(confidence)
    label_array = binary_labels(labels)
    rows = len(label_array)
    scores = {"control": as_scores(scores_control, rows, "scores_control"), "treatment": as_scores(scores_treatment, rows, "scores_treatment")}
    reason = why_auc_undefined(label_array, scores)
    if reason:
        raise ValueError(f"no AUC to compare: {reason}")
    control, treatment = (_placements(label_array, scores[arm]) for arm in ("control", "treatment"))
    variance = _auc_covariance(control, control) + _auc_covariance(treatment, treatment) - 2 * _auc_covariance(control, treatment)
    return _auc_comparison(metric, "delong_paired", control.auc, treatment.auc, variance, confidence, rows, rows)


def _auc_comparison(metric: str, test: str, auc_c: float, auc_t: float, variance: float, confidence: float, n_c: int, n_t: int) -> Comparison:
    # Rounding can leave the paired variance of near-identical models a hair below 0.
    standard_error = math.sqrt(max(variance, 0.0)) if not math.isnan(variance) else math.nan
    difference = auc_t - auc_c
    statistic, p_value = _z_test(difference, standard_error)
    lower, upper = _interval(difference, standard_error, _normal_quantile(confidence))
    return Comparison(metric, test, auc_c, auc_t, difference, _defined(standard_error), statistic, p_value, lower, upper, None, None, n_c, n_t)


# --- shared -----------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _undefined(metric: str, test: str, control: float, treatment: float, effect_name: str | None, n_c: int, n_t: int) -> Comparison:
    """An arm too small for any inference: the metrics it has, NaN for the rest."""
    nan = math.nan
    return Comparison(metric, test, control, treatment, treatment - control, nan, nan, nan, nan, nan, nan, effect_name, n_c, n_t)


def _defined(standard_error: float) -> float:
    """A standard error that can carry inference: positive and finite, else NaN (a zero SE claims certainty)."""
    return standard_error if standard_error > 0 and math.isfinite(standard_error) else math.nan


def _normal_quantile(confidence: float) -> float:
    return float(special.ndtri(0.5 + confidence / 2))


def _z_test(difference: float, standard_error: float) -> tuple[float, float]:
    """(z, two-sided p); both NaN where the SE is zero or undefined."""
    if not (standard_error > 0 and math.isfinite(standard_error)) or math.isnan(difference):
        return math.nan, math.nan
    z = difference / standard_error
    return z, math.erfc(abs(z) / math.sqrt(2))


def _interval(difference: float, standard_error: float, quantile: float) -> tuple[float, float]:
    if not (standard_error > 0 and math.isfinite(standard_error)):
        return math.nan, math.nan
    return difference - quantile * standard_error, difference + quantile * standard_error
