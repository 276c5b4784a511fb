"""Effect sizes that mean the same at 500 rows as at 1M, and power figures that agree with simulation.

Each claim is checked against scipy on simulated data: the lower bound of a no-drift sample's distance
is about 0 at every size while the raw distance is not, a real drift keeps about its size, and each
power formula matches the rejection rate of the real test at the sample size it names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from batchwatch.stats import effects
from batchwatch.stats.drift import PSI_FLOOR, NumericReference, compare_numeric, proportion_test

ZIPF = 1 / np.arange(1, 101) ** 0.8
ZIPF /= ZIPF.sum()


def rows_for_power(power: Callable[[int], float], low: int = 2, high: int = 10**9) -> int:
    """The fewest current rows at which `power(n)` reaches the required power (bisection)."""
    while low < high:
        middle = (low + high) // 2
        if power(middle) >= effects.REQUIRED_POWER:
            high = middle
        else:
            low = middle + 1
    return low


def _js(p: np.ndarray, counts: np.ndarray) -> float:
    return float(jensenshannon(p, counts / counts.sum(), base=2))


def test_jensen_shannon_of_100_categories_is_biased_and_the_debiased_one_is_not() -> None:
    """The evaluation's numbers: no drift, ~100 categories, median JS 0.19 at 500 rows, 0.14 at 1,000."""
    rng = np.random.default_rng(0)
    reference = np.round(ZIPF * 1_000_000)
    p = reference / reference.sum()
    for n, raw_median in ((500, 0.19), (1_000, 0.14)):
        raw = [_js(p, rng.multinomial(n, p)) for _ in range(200)]
        assert np.median(raw) == pytest.approx(raw_median, abs=0.03)
        noise = effects.null_jensen_shannon(reference, n, rng)
        corrected = [effects.distance_lower_bound(value, noise) for value in raw]
        # The typical no-drift window now reads ~0; the tail past the threshold is what the chi-square test guards.
        assert np.median(corrected) < 0.02 and np.mean(np.array(corrected) >= 0.1) < 0.1 < np.mean(np.array(raw) >= 0.1)
    # A real change of the mix: its lower bound sits just under its size, closer the more rows.
    moved = np.roll(p, 7)
    true_distance = _js(p, moved)
    for n in (500, 10_000, 1_000_000):
        sample = rng.multinomial(n, moved)
        corrected = effects.distance_lower_bound(_js(p, sample), effects.null_jensen_shannon(reference, n, rng))
        assert true_distance - 3 / math.sqrt(n) - 0.01 <= corrected <= true_distance + 0.01


def test_psi_and_wasserstein_debiased_mean_the_same_at_every_size() -> None:
    rng = np.random.default_rng(1)
    reference = NumericReference.from_values(rng.normal(size=200_000))
    for n in (500, 5_000, 200_000):
        stationary = compare_numeric(reference, rng.normal(size=n))
        assert effects.divergence_lower_bound(stationary.psi, effects.null_psi(reference.counts, n, PSI_FLOOR, rng)) < 0.02
        noise = effects.null_wasserstein(reference.sample, n, rng) / reference.std**2
        assert effects.distance_lower_bound(stationary.wasserstein_norm, noise) < 0.05
        # W of a 0.3 SD shift is 0.3: on average over windows, at every size.
        shifted = [compare_numeric(reference, rng.normal(0.3, 1, size=n)).wasserstein_norm for _ in range(20)]
        assert np.mean([effects.distance_lower_bound(w, noise) for w in shifted]) == pytest.approx(0.3, abs=1 / math.sqrt(n) + 0.01)


def test_cohens_h_noise_bound_is_the_95th_percentile_and_a_real_h_keeps_its_size() -> None:
    rng = np.random.default_rng(2)
    hits = rng.binomial(400, 0.1, 20_000)
    h = np.array([proportion_test(1_000, 10_000, int(k), 400).cohens_h for k in hits])
    assert np.mean(h**2 <= effects.null_cohens_h_square(10_000, 400)) == pytest.approx(0.95, abs=0.015)
    moved = np.array([proportion_test(1_000, 10_000, int(k), 400).cohens_h for k in rng.binomial(400, 0.2, 2_000)])
    true_h = 2 * math.asin(math.sqrt(0.2)) - 2 * math.asin(math.sqrt(0.1))
    corrected = [effects.distance_lower_bound(abs(value), effects.null_cohens_h_square(10_000, 400)) for value in moved]
    assert np.mean(corrected) == pytest.approx(true_h, abs=0.025)


@pytest.mark.parametrize("n", [200, 800])
def test_power_of_the_proportion_test_matches_simulation(n: int) -> None:
    rng = np.random.default_rng(3)
    p0 = 0.2
    p1 = math.sin(math.asin(math.sqrt(p0)) + 0.1) ** 2  # h = 0.2 exactly
    rejected = np.mean([proportion_test(int(rng.binomial(50_000, p0)), 50_000, int(rng.binomial(n, p1)), n).pvalue < 0.05 for _ in range(3_000)])
    assert effects.power_proportion(0.2, 50_000, n, 0.05) == pytest.approx(rejected, abs=0.04)


def test_power_of_ks_against_the_wasserstein_threshold_matches_simulation() -> None:
    """At the rows the formula says give 80% power against a 0.1 SD shift, scipy's KS rejects about that often."""
    rng = np.random.default_rng(4)
    reference = np.sort(rng.normal(size=10_000))
    n = rows_for_power(lambda rows: effects.power_ks_shift(0.1, 10_000, rows, 0.05))
    rejected = np.mean([stats.ks_2samp(reference, rng.normal(0.1, 1, n)).pvalue < 0.05 for _ in range(300)])
    assert 0.7 <= rejected <= 0.92, (n, rejected)
    assert effects.power_ks_shift(0.1, 10_000, n // 4, 0.05) < 0.4


def test_power_of_chi2_against_the_jensen_shannon_threshold_matches_simulation() -> None:
    rng = np.random.default_rng(5)
    p = ZIPF
    q = (1 - 0.2) * p + 0.2 * np.roll(p, 1)  # a mild change of the mix
    distance = float(jensenshannon(p, q, base=2))
    reference = np.round(p * 1_000_000).astype(int)
    n = rows_for_power(lambda rows: effects.power_chi2_jensen_shannon(distance, 100, 1_000_000, rows, 0.05))
    rejected = []
    for _ in range(300):
        table = np.vstack([reference, rng.multinomial(n, q)])
        table = table[:, table.sum(axis=0) > 0]
        rejected.append(stats.chi2_contingency(table).pvalue < 0.05)
    assert 0.65 <= np.mean(rejected) <= 0.95, (distance, n, np.mean(rejected))


def test_unseen_share_is_tested_against_the_references_own_unseen_rate() -> None:
    """Drawing from a long-tailed training distribution meets new categories at the Good-Turing rate: no alarm."""
    rng = np.random.default_rng(6)
    tail = 1 / np.arange(1, 20_001) ** 1.1
    tail /= tail.sum()
    training = rng.choice(20_000, 50_000, p=tail)
    frequencies = {str(k): int(c) for k, c in zip(*np.unique(training, return_counts=True), strict=True)}
    expected = effects.good_turing_unseen_rate(frequencies)
    p_values = []
    for _ in range(300):
        window = rng.choice(20_000, 2_000, p=tail)
        unseen = sum(str(k) not in frequencies for k in window)
        p_values.append(effects.unseen_test(unseen, 2_000, expected))
    assert np.mean(np.array(p_values) < 0.05) <= 0.08
    assert effects.unseen_test(60, 2_000, expected) < 1e-6 if expected < 0.01 else True


def test_exact_power_of_the_unseen_test_matches_simulation() -> None:
    rng = np.random.default_rng(7)
    for n in (100, 300):
        k = rng.binomial(n, 0.01 + 1e-5, 20_000)
        simulated = np.mean(stats.binom.sf(k - 1, n, 1e-5) <= 0.05)
        assert effects.power_unseen(0.01, 1e-5, n, 0.05) == pytest.approx(simulated, abs=0.02)


def test_power_of_the_auc_test_matches_mann_whitney() -> None:
    rng = np.random.default_rng(8)
    shift = math.sqrt(2) * stats.norm.ppf(0.6)  # two normals this far apart have AUC 0.6
    rejected = np.mean(
        [stats.mannwhitneyu(rng.normal(shift, 1, 150), rng.normal(0, 1, 150), alternative="greater").pvalue < 0.05 for _ in range(1_000)]
    )
    assert effects.power_auc(0.6, 150, 0.05) == pytest.approx(rejected, abs=0.06)
