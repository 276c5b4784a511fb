"""Always-valid confidence sequences hold their level over 30 daily looks where repeated fixed-sample intervals do not.

The A/A simulations draw each day's rows of both arms as binomial counts (exactly the sum of per-row
Bernoulli draws), accumulate them, and look every day through two_proportions, as the canary's
decision will. Monte-Carlo tolerance: with 2,000 experiments the rate's SD at alpha = 0.05 is
sqrt(0.05 * 0.95 / 2000) = 0.0049, so alpha + 0.015 (3 SD) fails a correct sequence about once in
700 seeds; with the seed fixed the test is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from batchwatch.stats.comparisons import two_proportions
from batchwatch.stats.sequential import (
    always_valid_p_value,
    confidence_sequence,
    power_non_inferiority,
    projected_sample_size,
    required_information,
)

ALPHA = 0.05
MARGIN = 0.01
EXPERIMENTS, LOOKS = 2_000, 30
ROWS_CONTROL, ROWS_TREATMENT = 3_000, 1_000  # a day at a 25% canary share
BASE_RATE = 0.10
TOLERANCE = 0.015


def daily_looks(rng: np.random.Generator, rate_control: float, rate_treatment: float) -> list[list]:
    """Per experiment, the comparison at each of LOOKS days of accumulating rows."""
    hits_c = rng.binomial(ROWS_CONTROL, rate_control, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    hits_t = rng.binomial(ROWS_TREATMENT, rate_treatment, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    return [
        [two_proportions(int(hits_c[e, k]), ROWS_CONTROL * (k + 1), int(hits_t[e, k]), ROWS_TREATMENT * (k + 1), metric="rate") for k in range(LOOKS)]
        for e in range(EXPERIMENTS)
    ]


def test_aa_superiority_ever_rejects_at_most_alpha_while_daily_fixed_intervals_do_not() -> None:
    """True difference 0: how often does any of 30 looks exclude 0?"""
    experiments = daily_looks(np.random.default_rng(7), BASE_RATE, BASE_RATE)
    sequential, fixed, p_value_rejects = [], [], []
    for looks in experiments:
        bounds = [confidence_sequence(c.difference, c.standard_error, alpha=ALPHA, mixture_sd=MARGIN) for c in looks]
        sequential.append(any(not lower <= 0 <= upper for lower, upper in bounds))
        fixed.append(any(not c.lower <= 0 <= c.upper for c in looks))
        running_minimum = min(always_valid_p_value(c.difference, c.standard_error, null=0.0, mixture_sd=MARGIN) for c in looks)
        p_value_rejects.append(running_minimum <= ALPHA)
    assert np.mean(sequential) <= ALPHA + TOLERANCE
    assert p_value_rejects == sequential  # the running-minimum p-value and the sequence are one test
    # Repeated 95% intervals: about 28% of A/A experiments "find" a difference within 30 days.
    assert np.mean(fixed) > 0.2


def test_aa_non_inferiority_at_the_margin_passes_at_most_alpha_while_daily_fixed_intervals_do_not() -> None:
    """True difference exactly -margin (the challenger as bad as allowed): how often does a look declare it non-inferior?"""
    experiments = daily_looks(np.random.default_rng(8), BASE_RATE, BASE_RATE - MARGIN)
    sequential = [
        any(confidence_sequence(c.difference, c.standard_error, alpha=ALPHA, mixture_sd=MARGIN)[0] > -MARGIN for c in looks) for looks in experiments
    ]
    fixed = [any(c.lower > -MARGIN for c in looks) for looks in experiments]
    assert np.mean(sequential) <= ALPHA + TOLERANCE
    assert np.mean(fixed) > ALPHA + 0.05  # one-sided 2.5% each day, about 13% over 30 days


def test_power_formula_matches_the_simulated_pass_rate_at_a_look() -> None:
    """True difference 0: the share of experiments whose lower bound clears -margin on day k is power_non_inferiority(se_k)."""
    experiments = daily_looks(np.random.default_rng(9), BASE_RATE, BASE_RATE)
    for day in (5, 10, 30):
        looks = [looks[day - 1] for looks in experiments]
        passed = np.mean([confidence_sequence(c.difference, c.standard_error, alpha=ALPHA, mixture_sd=MARGIN)[0] > -MARGIN for c in looks])
        se = math.sqrt(BASE_RATE * (1 - BASE_RATE) * (1 / (ROWS_CONTROL * day) + 1 / (ROWS_TREATMENT * day)))
        predicted = power_non_inferiority(se, margin=MARGIN, alpha=ALPHA, mixture_sd=MARGIN)
        assert passed == pytest.approx(predicted, abs=0.03)  # 3 SD of a rate from 2,000 experiments is <= 0.034
        assert 0.01 < predicted < 0.999  # the days tested span the interesting part of the curve


def test_confidence_sequence_is_the_mixture_boundary_and_the_p_value_its_dual() -> None:
    estimate, se, tau = 0.003, 0.002, 0.01
    lower, upper = confidence_sequence(estimate, se, alpha=ALPHA, mixture_sd=tau)
    variance = se * se
    radius = math.sqrt(2 * variance * (variance + tau**2) / tau**2 * (math.log(1 / ALPHA) + 0.5 * math.log((variance + tau**2) / variance)))
    assert (lower, upper) == pytest.approx((estimate - radius, estimate + radius), rel=1e-12)
    # on the boundary the mSPRT p-value is exactly alpha; inside it is larger, outside smaller
    assert always_valid_p_value(estimate, se, null=lower, mixture_sd=tau) == pytest.approx(ALPHA, rel=1e-10)
    assert always_valid_p_value(estimate, se, null=upper, mixture_sd=tau) == pytest.approx(ALPHA, rel=1e-10)
    assert always_valid_p_value(estimate, se, null=estimate, mixture_sd=tau) == 1.0
    just_inside, just_outside = (always_valid_p_value(estimate, se, null=lower + step, mixture_sd=tau) for step in (1e-4, -1e-4))
    assert just_inside > ALPHA > just_outside
    # wider than the fixed-sample interval at every information level: the price of looking any time
    for standard_error in (1e-4, 1e-3, 1e-2, 1e-1):
        width = confidence_sequence(0.0, standard_error, alpha=ALPHA, mixture_sd=tau)[1]
        assert width > special.ndtri(1 - ALPHA / 2) * standard_error
    assert all(math.isnan(bound) for bound in confidence_sequence(0.0, math.nan, alpha=ALPHA, mixture_sd=tau))
    assert all(math.isnan(bound) for bound in confidence_sequence(0.0, 0.0, alpha=ALPHA, mixture_sd=tau))
    with pytest.raises(ValueError, match="alpha"):
        confidence_sequence(0.0, se, alpha=1.5, mixture_sd=tau)
    with pytest.raises(ValueError, match="mixture_sd"):
        always_valid_p_value(0.0, se, null=0.0, mixture_sd=0.0)


def test_power_is_monotone_and_required_information_inverts_it() -> None:
    standard_errors = np.geomspace(1e-5, 1e-1, 200)
    powers = [power_non_inferiority(se, margin=MARGIN, alpha=ALPHA, mixture_sd=MARGIN) for se in standard_errors]
    assert np.all(np.diff(powers) <= 0) and powers[0] == 1.0 and powers[-1] < 1e-6
    inside = [power for power in powers if 1e-9 < power < 1 - 1e-9]
    assert len(inside) > 50 and np.all(np.diff(inside) < 0)  # strictly falling wherever it is not saturated
    for alpha, power in ((0.05, 0.8), (0.05, 0.9), (0.1, 0.5), (0.01, 0.95)):
        se = required_information(MARGIN, alpha=alpha, power=power, mixture_sd=MARGIN)
        assert power_non_inferiority(se, margin=MARGIN, alpha=alpha, mixture_sd=MARGIN) == pytest.approx(power, abs=1e-9)
        assert power_non_inferiority(se * 1.01, margin=MARGIN, alpha=alpha, mixture_sd=MARGIN) < power
    # a challenger truly better than the control needs less information, a worse one more
    assert power_non_inferiority(0.003, margin=MARGIN, alpha=ALPHA, mixture_sd=MARGIN, true_difference=0.002) > power_non_inferiority(
        0.003, margin=MARGIN, alpha=ALPHA, mixture_sd=MARGIN, true_difference=-0.002
    )
    with pytest.raises(ValueError, match="power"):
        required_information(MARGIN, alpha=ALPHA, power=1.0, mixture_sd=MARGIN)


def test_mixture_sd_equal_to_the_margin_is_within_three_percent_of_the_best() -> None:
    """The module docstring's claim: rows needed for 80-90% power with tau = margin versus the best tau on a grid."""
    taus = MARGIN * np.geomspace(0.05, 20, 300)
    for alpha, power in ((0.05, 0.8), (0.05, 0.9), (0.1, 0.8), (0.025, 0.8)):
        required = np.array([required_information(MARGIN, alpha=alpha, power=power, mixture_sd=tau) for tau in taus])
        best_tau = taus[required.argmax()]
        rows_ratio = (required.max() / required_information(MARGIN, alpha=alpha, power=power, mixture_sd=MARGIN)) ** 2
        assert 1.0 <= rows_ratio < 1.03
        assert 0.6 * MARGIN < best_tau < 0.8 * MARGIN
        for far in (MARGIN / 4, 4 * MARGIN):
            assert (required.max() / required_information(MARGIN, alpha=alpha, power=power, mixture_sd=far)) ** 2 > 1.15
    # at a fixed information level the interval is tightest with tau ~ 2.87 se (alpha 0.05): tau^2/V = 2 log(1/alpha) + log(1 + tau^2/V)
    se = 0.001
    widths = [confidence_sequence(0.0, se, alpha=ALPHA, mixture_sd=tau)[1] for tau in se * np.linspace(1, 6, 501)]
    assert se * np.linspace(1, 6, 501)[int(np.argmin(widths))] / se == pytest.approx(2.87, abs=0.02)


def test_projected_sample_size_follows_the_square_root_law() -> None:
    day = two_proportions(300, 3_000, 100, 1_000, metric="rate")
    four_days = two_proportions(1_200, 12_000, 400, 4_000, metric="rate")
    assert projected_sample_size(4_000, day.standard_error, four_days.standard_error) == pytest.approx(16_000, abs=1)  # ceil of float noise
    assert projected_sample_size(1_000, 0.02, 0.01) == 4_000
    assert projected_sample_size(1_000, 0.01, 0.02) == 250  # already more than enough
    with pytest.raises(ValueError, match="standard errors"):
        projected_sample_size(1_000, 0.01, math.nan)
