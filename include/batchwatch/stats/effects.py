"""What an effect size means at a given sample size: its bias under no drift, and the power to see one.

Two facts make a raw effect size unfit for a fixed threshold in small windows:

- Distances between distributions are biased upward by sampling noise. With no drift, the
  Jensen-Shannon distance of a 100-category feature has a median of about 0.19 at 500 rows (the
  threshold is 0.1), and PSI on ten bins grows like (bins - 1) / n. So every effect is judged by its
  **95% lower confidence bound**: the raw value with the 95th percentile of what noise alone gives at
  the window's sizes taken out (`null_*` below: analytic where a formula exists, else a seeded
  parametric bootstrap, mean + 2 SD of the draws). From a divergence (PSI) that noise bound is
  subtracted; from a distance (JS, Wasserstein, |h|) it is removed in quadrature,
  sqrt(d^2 - q95(d0^2)), since noise and a real difference add as squares. Floored at 0, the bound
  means the same at 500 rows as at 1M, and a noisy small window rarely passes a threshold by chance.
- A window too small to see a threshold-sized effect cannot call a check "ok". Each test's power
  against an effect exactly at its threshold (`power_*`) decides, per test, whether its "ok" means
  anything; a significant, large effect is drifted however few the rows.

Every function is pure and cheap (no more than a few hundred draws of at most `BOOTSTRAP_MAX_N`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from batchwatch.stats.drift import wasserstein_sorted

# Draws of the parametric bootstraps: the null mean they estimate moves by under 2% between seeds.
BOOTSTRAP_DRAWS = 64
# The Wasserstein bootstrap draws at most this many values and scales its mean square by m / n,
# the rate at which the expected square distance of an n-sample to its population falls.
BOOTSTRAP_MAX_N = 5_000
# The power a test needs against a threshold-sized effect before its "ok" counts.
REQUIRED_POWER = 0.8


def divergence_lower_bound(raw: float, noise: float) -> float:
    """A divergence's lower bound: minus the noise bound under no drift, floored at 0 (NaN stays NaN)."""
    if math.isnan(raw):
        return raw
    return max(raw - noise, 0.0)


def distance_lower_bound(raw: float, noise_square: float) -> float:
    """A distance's lower bound: the no-drift noise bound (of its square) taken out in quadrature, floored at 0."""
    if math.isnan(raw) or math.isinf(raw):
        return raw
    return math.sqrt(max(raw * raw - noise_square, 0.0))


def _bound(draws: np.ndarray) -> float:
    """About the 95th percentile of a bootstrap's draws, steadier than the empirical one from few draws."""
    return float(draws.mean() + 2 * draws.std(ddof=1)) if draws.size > 1 else float(draws.mean())


def _shares(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total else counts


def _jensen_shannon_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Base-2 JS distance of p against each row of q."""
    middle = (p + q) / 2
    divergence = (special.rel_entr(p, middle).sum(axis=-1) + special.rel_entr(q, middle).sum(axis=-1)) / math.log(2)
    return np.sqrt(np.maximum(divergence / 2, 0.0))


def null_jensen_shannon(reference_counts: np.ndarray, n_current: int, rng: np.random.Generator) -> float:
    """Noise bound of the square JS distance between the reference shares and `n_current` draws from them."""
    p = _shares(reference_counts)
    if n_current <= 0 or p.size < 2:
        return 0.0
    draws = rng.multinomial(n_current, p, size=BOOTSTRAP_DRAWS) / n_current
    return _bound(_jensen_shannon_rows(p, draws) ** 2)


def null_psi(reference_counts: np.ndarray, n_current: int, floor: float, rng: np.random.Generator) -> float:
    """Noise bound of the PSI of `n_current` draws from the reference bins (the same floor as the statistic)."""
    p = _shares(reference_counts)
    if n_current <= 0 or p.size < 2:
        return 0.0
    q = np.maximum(rng.multinomial(n_current, p, size=BOOTSTRAP_DRAWS) / n_current, floor)
    p = np.maximum(p, floor)
    return _bound(np.sum((q - p) * np.log(q / p), axis=1))


def null_wasserstein(sorted_reference: np.ndarray, n_current: int, rng: np.random.Generator) -> float:
    """Noise bound of the square Wasserstein distance between `n_current` draws from the reference sample and the sample."""
    if n_current <= 0 or sorted_reference.size < 2:
        return 0.0
    m = min(n_current, BOOTSTRAP_MAX_N)
    distances = [wasserstein_sorted(np.sort(rng.choice(sorted_reference, size=m)), sorted_reference) for _ in range(BOOTSTRAP_DRAWS // 4)]
    return _bound(np.square(distances)) * m / n_current


def null_cohens_h_square(n_reference: int, n_current: int) -> float:
    """Noise bound of h^2 with no drift: h is about normal with variance 1/n1 + 1/n2, so h^2 / var is chi2(1)."""
    if n_reference <= 0 or n_current <= 0:
        return math.nan
    return float(stats.chi2.ppf(0.95, 1)) * (1 / n_reference + 1 / n_current)


def good_turing_unseen_rate(frequencies: dict[str, int]) -> float:
    """How often the training data itself met a category it had not seen: singletons / rows (Good-Turing).

    A window drawn from the training distribution shows about this share of unseen categories, so an
    unseen share is tested against it, not against 0. At least one singleton is assumed, so a
    reference without any still allows for the category it may have missed.
    """
    rows = sum(frequencies.values())
    if rows == 0:
        return math.nan
    singletons = sum(1 for count in frequencies.values() if count == 1)
    return max(singletons, 1) / rows


def unseen_test(unseen: int, n_current: int, expected_rate: float) -> float:
    """One-sided exact binomial p-value: more unseen values than the reference's own unseen rate allows."""
    if n_current <= 0 or math.isnan(expected_rate):
        return math.nan
    return float(stats.binom.sf(unseen - 1, n_current, min(expected_rate, 1.0)))


# --- power against a threshold-sized effect ---------------------------------------------------


def _effective_n(n_reference: int, n_current: int) -> float:
    return 0.0 if n_reference <= 0 or n_current <= 0 else 1 / (1 / n_reference + 1 / n_current)


def power_proportion(cohens_h: float, n_reference: int, n_current: int, alpha: float) -> float:
    """Two-sided two-proportion z-test against a true |h| = `cohens_h` (arcsine scale: the z-test is about normal there)."""
    n = _effective_n(n_reference, n_current)
    return float(stats.norm.cdf(cohens_h * math.sqrt(n) - stats.norm.ppf(1 - alpha / 2)))


def power_ks_shift(shift_in_sd: float, n_reference: int, n_current: int, alpha: float) -> float:
    """KS against a location shift of `shift_in_sd` reference SDs of a normal (the Wasserstein threshold's meaning).

    The population KS distance of that shift is 2 Phi(shift / 2) - 1; sqrt(n) times the sample distance
    is about normal around sqrt(n) times it, with the Kolmogorov distribution's own spread (0.26) at 0.
    """
    n = _effective_n(n_reference, n_current)
    distance = 2 * stats.norm.cdf(shift_in_sd / 2) - 1
    critical = stats.kstwobign.isf(alpha)
    return float(stats.norm.cdf((math.sqrt(n) * distance - critical) / 0.26))


def power_chi2_jensen_shannon(distance: float, categories: int, n_reference: int, n_current: int, alpha: float) -> float:
    """Chi-square homogeneity test against two distributions `distance` apart in JS distance.

    For close distributions sum (p - q)^2 / m ~ 8 ln2 JSD, so the test's noncentrality is
    n_eff * 8 ln2 * distance^2 with categories - 1 degrees of freedom.
    """
    if categories < 2:
        return 0.0
    dof = categories - 1
    noncentrality = _effective_n(n_reference, n_current) * 8 * math.log(2) * distance**2
    return float(stats.ncx2.sf(stats.chi2.isf(alpha, dof), dof, noncentrality))


def power_unseen(excess: float, expected_rate: float, n_current: int, alpha: float) -> float:
    """Exact power of the one-sided binomial test of the unseen share against `expected_rate` when the truth
    is `excess` above it: the chance of reaching the smallest count the test calls significant."""
    if n_current <= 0 or math.isnan(expected_rate):
        return 0.0
    p0, p1 = min(expected_rate, 1.0), min(expected_rate + excess, 1.0)
    critical = int(stats.binom.isf(alpha, n_current, p0)) + 1  # the smallest k with P(X >= k | p0) <= alpha
    while critical > 0 and stats.binom.sf(critical - 2, n_current, p0) <= alpha:
        critical -= 1
    return float(stats.binom.sf(critical - 1, n_current, p1))


def power_auc(auc: float, n_each: int, alpha: float) -> float:
    """Mann-Whitney test of a classifier's AUC against 0.5 with `n_each` rows per side (Hanley-McNeil's SE under H0)."""
    if n_each <= 0:
        return 0.0
    standard_error = math.sqrt((2 * n_each + 1) / (12 * n_each * n_each))
    return float(stats.norm.cdf((auc - 0.5) / standard_error - stats.norm.ppf(1 - alpha)))
