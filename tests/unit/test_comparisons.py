"""Two-sample comparisons of a canary's arms, each checked against scipy, sklearn, a slow reference or a published result.

The DeLong reference below is written from DeLong, DeLong & Clarke-Pearson (1988), "Comparing the
areas under two or more correlated receiver operating characteristic curves", Biometrics 44:837-845:
psi(X, Y) = 1, 1/2, 0 for X >, =, < Y over every (positive, negative) pair, structural components
V10(X_i) = mean_j psi(X_i, Y_j) and V01(Y_j) = mean_i psi(X_i, Y_j), and
Cov(AUC_r, AUC_s) = S10_rs / m + S01_rs / n with S the sample covariances (ddof=1) of the components.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats
from sklearn.metrics import roc_auc_score

from batchwatch.stats.comparisons import Comparison, delong_paired, delong_unpaired, two_proportions, welch, welch_from_moments

TIGHT = {"rel": 1e-10, "abs": 1e-13}

# pROC's aSAH data (113 patients after aneurysmal subarachnoid hemorrhage; Turck et al. 2010, Intensive Care
# Medicine 36:107-115), read from data/aSAH.RData of github.com/xrobin/pROC: outcome (1 = Poor), the WFNS grade
# and S100B in µg/L, in the data frame's row order.
ASAH_POOR = "00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000000001111110001000"
ASAH_WFNS = "11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113125225552445111"
ASAH_S100B = (
    "0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 0.09 0.09 0.07 0.11 0.07 0.17 "
    "0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 "
    "0.08 0.06 0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27 0.71 0.08 0.26 0.08 0.16 0.09 "
    "0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07 0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 "
    "0.32 0.82 0.74 0.15 0.47 0.17 0.44 0.15 0.5 0.48"
)


# --- two proportions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts",
    [
        pytest.param((120, 1_000, 150, 1_000), id="equal-arms"),
        pytest.param((4_800, 95_000, 290, 5_000), id="5pct-canary"),
        pytest.param((3, 40, 0, 12), id="small-with-a-zero"),
        pytest.param((500, 1_000, 480, 1_000), id="near-half"),
    ],
)
def test_two_proportions_is_pearsons_chi_square_and_a_wald_interval(counts: tuple[int, int, int, int]) -> None:
    hits_c, n_c, hits_t, n_t = counts
    result = two_proportions(hits_c, n_c, hits_t, n_t, metric="positive_rate", confidence=0.9)
    table = np.array([[hits_c, n_c - hits_c], [hits_t, n_t - hits_t]])
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert result.statistic**2 == pytest.approx(chi2, **TIGHT)
    assert result.p_value == pytest.approx(p_value, **TIGHT)
    # by hand: the risk difference +- z_0.95 times the unpooled SE
    p_c, p_t = hits_c / n_c, hits_t / n_t
    wald = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    assert (result.difference, result.standard_error) == pytest.approx((p_t - p_c, wald), **TIGHT)
    assert (result.lower, result.upper) == pytest.approx((p_t - p_c - 1.6448536269514722 * wald, p_t - p_c + 1.6448536269514722 * wald), **TIGHT)
    assert result.effect_size == pytest.approx(2 * math.asin(math.sqrt(p_t)) - 2 * math.asin(math.sqrt(p_c)), **TIGHT)
    assert (result.test, result.effect_name, result.n_control, result.n_treatment) == ("two_proportion_z", "cohens_h", n_c, n_t)
    assert math.copysign(1, result.statistic) == math.copysign(1, p_t - p_c)


def test_two_proportions_undefined_cases_are_nan_and_bad_counts_raise() -> None:
    empty = two_proportions(0, 0, 5, 100, metric="positive_rate")
    assert math.isnan(empty.control) and empty.treatment == 0.05
    assert all(math.isnan(getattr(empty, name)) for name in ("difference", "standard_error", "statistic", "p_value", "lower", "upper", "effect_size"))
    payload = empty.to_dict()
    assert payload["p_value"] is None and payload["treatment"] == 0.05 and payload["n_control"] == 0
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    # no positives in either arm: the rates are known (0 and 0) but nothing can be inferred from no variation
    none_positive = two_proportions(0, 500, 0, 50, metric="positive_rate")
    assert none_positive.difference == 0 and none_positive.effect_size == 0
    assert math.isnan(none_positive.standard_error) and math.isnan(none_positive.p_value) and math.isnan(none_positive.lower)
    with pytest.raises(ValueError, match="successes"):
        two_proportions(11, 10, 0, 10, metric="positive_rate")
    with pytest.raises(ValueError, match="confidence"):
        two_proportions(1, 10, 0, 10, metric="positive_rate", confidence=95)
    with pytest.raises(TypeError):
        two_proportions(1.5, 10, 0, 10, metric="positive_rate")


# --- Welch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.95, 0.8])
@pytest.mark.parametrize(
    "sizes_and_scales",
    [pytest.param((40, 60, 1.0, 1.0), id="similar"), pytest.param((5_000, 300, 0.2, 0.6), id="unequal"), pytest.param((3, 2, 1.0, 5.0), id="tiny")],
)
def test_welch_matches_scipy_ttest_ind_unequal_var(sizes_and_scales: tuple[int, int, float, float], confidence: float) -> None:
    n_c, n_t, sd_c, sd_t = sizes_and_scales
    rng = np.random.default_rng(n_c + n_t)
    control, treatment = rng.normal(0.20, sd_c, n_c), rng.normal(0.23, sd_t, n_t)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    interval = reference.confidence_interval(confidence)
    pooled_sd = math.sqrt(((n_c - 1) * control.var(ddof=1) + (n_t - 1) * treatment.var(ddof=1)) / (n_c + n_t - 2))
    from_rows = welch(control, treatment, metric="brier", confidence=confidence)
    from_moments = welch_from_moments(
        control.mean(), control.var(ddof=1), n_c, treatment.mean(), treatment.var(ddof=1), n_t, metric="brier", confidence=confidence
    )
    for result in (from_rows, from_moments):
        assert result.statistic == pytest.approx(reference.statistic, **TIGHT)
        assert result.p_value == pytest.approx(reference.pvalue, **TIGHT)
        assert (result.lower, result.upper) == pytest.approx((interval.low, interval.high), **TIGHT)
        assert result.difference == pytest.approx(treatment.mean() - control.mean(), **TIGHT)
        assert result.standard_error == pytest.approx(math.sqrt(control.var(ddof=1) / n_c + treatment.var(ddof=1) / n_t), **TIGHT)
        assert result.effect_size == pytest.approx((treatment.mean() - control.mean()) / pooled_sd, **TIGHT)
        assert (result.test, result.effect_name) == ("welch_t", "cohens_d")
    assert from_rows == from_moments


def test_welch_undefined_cases_are_nan_and_unreadable_values_raise() -> None:
    one_row = welch([0.1], [0.2, 0.3, 0.4], metric="brier")
    assert one_row.control == 0.1 and one_row.treatment == pytest.approx(0.3)
    assert math.isnan(one_row.standard_error) and math.isnan(one_row.p_value) and math.isnan(one_row.effect_size)
    empty = welch([], [0.2, 0.3], metric="brier")
    assert math.isnan(empty.control) and math.isnan(empty.difference) and empty.n_control == 0
    constant = welch([0.5, 0.5, 0.5], [0.5, 0.5], metric="brier")
    assert constant.difference == 0 and math.isnan(constant.statistic) and math.isnan(constant.lower) and math.isnan(constant.effect_size)
    assert constant.to_dict()["statistic"] is None
    # one arm constant: the other carries all the variance, df = its n - 1
    half = welch([0.5, 0.5, 0.5], [0.1, 0.3, 0.2, 0.6], metric="brier")
    assert half.p_value == pytest.approx(stats.ttest_1samp([0.1, 0.3, 0.2, 0.6], 0.5).pvalue, **TIGHT)
    with pytest.raises(ValueError, match="NaN"):
        welch([0.1, math.nan], [0.2, 0.3], metric="brier")
    with pytest.raises(ValueError, match="variance"):
        welch_from_moments(0.1, -1.0, 10, 0.2, 0.1, 10, metric="brier")


# --- DeLong -----------------------------------------------------------------------------------


def slow_delong(labels: np.ndarray, *score_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs, their covariance matrix) from the 1988 definition, O(m n) per model."""
    positives, negatives = labels == 1, labels == 0
    m, n = int(positives.sum()), int(negatives.sum())
    v10, v01 = [], []
    for scores in score_sets:
        x, y = scores[positives][:, None], scores[negatives][None, :]
        psi = (x > y) + 0.5 * (x == y)
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    aucs = np.array([components.mean() for components in v10])
    covariance = np.atleast_2d(np.cov(np.array(v10), ddof=1)) / m + np.atleast_2d(np.cov(np.array(v01), ddof=1)) / n
    return aucs, covariance


def tied_scores(rng: np.random.Generator, labels: np.ndarray, separation: float, decimals: int) -> np.ndarray:
    """Scores rounded so that many rows tie, within and across classes."""
    return np.round(rng.normal(size=len(labels)) + separation * labels, decimals)


@pytest.mark.parametrize("seed, rows, rate, decimals", [(0, 300, 0.3, 1), (1, 1_000, 0.05, 2), (2, 57, 0.5, 0), (3, 2_000, 0.2, 6)])
def test_delong_paired_equals_the_1988_definition_and_sklearn(seed: int, rows: int, rate: float, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < rate).astype(int)
    labels[:2] = [0, 1]
    champion, challenger = tied_scores(rng, labels, 1.0, decimals), tied_scores(rng, labels, 1.2, decimals)
    challenger = np.where(rng.random(rows) < 0.5, champion + 0.1 * np.round(rng.normal(size=rows)), challenger)  # correlated models
    (auc_c, auc_t), covariance = slow_delong(labels, champion, challenger)
    result = delong_paired(labels, champion, challenger)
    assert (result.control, result.treatment) == pytest.approx((roc_auc_score(labels, champion), roc_auc_score(labels, challenger)), **TIGHT)
    assert (result.control, result.treatment) == pytest.approx((auc_c, auc_t), **TIGHT)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    assert result.standard_error**2 == pytest.approx(variance, **TIGHT)
    z = (auc_t - auc_c) / math.sqrt(variance)
    assert (result.statistic, result.p_value) == pytest.approx((z, 2 * special.ndtr(-abs(z))), **TIGHT)
    half_width = 1.959963984540054 * math.sqrt(variance)
    assert (result.lower, result.upper) == pytest.approx((auc_t - auc_c - half_width, auc_t - auc_c + half_width), **TIGHT)
    assert result.effect_size is None and result.n_control == result.n_treatment == rows


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_delong_unpaired_adds_each_arms_own_variance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels_c, labels_t = (rng.random(800) < 0.15).astype(int), (rng.random(150) < 0.15).astype(int)
    scores_c, scores_t = tied_scores(rng, labels_c, 1.0, 1), tied_scores(rng, labels_t, 0.8, 1)
    (auc_c,), variance_c = slow_delong(labels_c, scores_c)
    (auc_t,), variance_t = slow_delong(labels_t, scores_t)
    result = delong_unpaired(labels_c, scores_c, labels_t, scores_t)
    assert (result.control, result.treatment) == pytest.approx((roc_auc_score(labels_c, scores_c), roc_auc_score(labels_t, scores_t)), **TIGHT)
    assert (result.control, result.treatment) == pytest.approx((auc_c, auc_t), **TIGHT)
    assert result.standard_error**2 == pytest.approx(variance_c[0, 0] + variance_t[0, 0], **TIGHT)
    assert (result.n_control, result.n_treatment, result.test) == (800, 150, "delong_unpaired")


def test_delong_reproduces_proc_roc_test_on_the_asah_data() -> None:
    """pROC's own expectations (tests/testthat/test-roc.test.R and test-var.R at github.com/xrobin/pROC):
    roc.test(r.wfns, r.s100b) gives Z = 2.20898359144091, p = 0.0271757822291882 and the 95% interval of
    AUC(wfns) - AUC(s100b) [0.0104061769564846, 0.174214419249478]; var(r.wfns) = 0.00146991470882363 and
    var(r.s100b) = 0.00266868245717244; the unpaired test's statistic D = 1.43490640926908 (pROC takes its
    p-value from a t distribution, ours from the normal)."""
    poor = np.array([int(c) for c in ASAH_POOR])
    wfns = np.array([int(c) for c in ASAH_WFNS], dtype=float)
    s100b = np.array([float(v) for v in ASAH_S100B.split()])
    assert len(poor) == len(wfns) == len(s100b) == 113 and poor.sum() == 41
    paired = delong_paired(poor, s100b, wfns)
    assert (paired.control, paired.treatment) == pytest.approx((0.731368563685637, 0.823678861788618), rel=1e-12)
    assert (paired.statistic, paired.p_value) == pytest.approx((2.20898359144091, 0.0271757822291882), rel=1e-12)
    assert (paired.lower, paired.upper) == pytest.approx((0.0104061769564846, 0.174214419249478), rel=1e-12)
    unpaired = delong_unpaired(poor, s100b, poor, wfns)
    assert unpaired.standard_error**2 == pytest.approx(0.00146991470882363 + 0.00266868245717244, rel=1e-12)
    assert unpaired.statistic == pytest.approx(1.43490640926908, rel=1e-12)


def test_delong_raises_naming_the_arm_without_both_classes_and_identical_models_are_nan() -> None:
    labels, scores = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.3])
    with pytest.raises(ValueError, match="treatment arm.*only one class"):
        delong_unpaired(labels, scores, [0, 0, 0], [0.2, 0.5, 0.1])
    with pytest.raises(ValueError, match="control arm.*only one class"):
        delong_unpaired([1, 1], [0.2, 0.5], labels, scores)
    with pytest.raises(ValueError, match="only one class"):
        delong_paired([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="NaN"):
        delong_paired(labels, scores, [0.1, math.nan, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        delong_paired([0, 2, 1, 0], scores, scores)
    same = delong_paired(labels, scores, scores)
    assert same.difference == 0 and math.isnan(same.standard_error) and math.isnan(same.p_value)
    # one positive: its structural component has no variance estimate, so neither has the AUC
    single = delong_unpaired([0, 0, 1], [0.1, 0.2, 0.3], labels, scores)
    assert single.control == 1.0 and math.isnan(single.standard_error)


def test_comparison_to_dict_is_json() -> None:
    result = two_proportions(np.int64(10), np.int64(100), np.int64(12), np.int64(100), metric="positive_rate")  # counts as SQL/numpy give them
    payload = result.to_dict()
    assert isinstance(result, Comparison) and payload["metric"] == "positive_rate" and payload["effect_name"] == "cohens_h"
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload and payload["difference"] == pytest.approx(0.02)
