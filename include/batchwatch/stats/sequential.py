"""Always-valid inference for the canary's daily looks: confidence sequences and mSPRT p-values.

Why always-valid. The canary decision is looked at every day as labels mature, and a fixed-sample
95% interval checked daily excludes the truth on *some* day far more often than 5% of the time
(29% of A/A experiments over 30 looks in tests/unit/test_sequential.py; see also
bench/bench_canary_aa.py). The normal-mixture confidence sequence (the mixture SPRT of Johari et
al. 2017, "Always valid inference"; Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences") covers the truth at every look simultaneously with
probability >= 1 - alpha, so:

- any number of looks is allowed, and they need not be planned in advance (a skipped day, a late
  label batch or an extra look costs nothing, unlike a group-sequential alpha-spending plan);
- each step of the ramp (5% -> 25% -> 50% -> promote) is one sequential test that may stop the
  first day its bound clears the margin;
- a promotion needs every step to pass. That is an intersection-union test: a challenger truly
  worse than the margin is promoted only if *every* step wrongly passes, which is no more likely
  than any one step doing so, so false promotion stays <= alpha with each step at alpha and no
  correction. A step uses only the sequence's lower bound, so its error is one-sided: <= alpha
  (0.9% at alpha = 0.05 in the test's simulation at a true difference of -margin).

The boundary is stated in the estimate and its standard error (V = se^2), so it serves every test
in `stats.comparisons` through the normal approximation of the estimate: with a mixing
distribution N(0, tau^2) over the effect, the likelihood ratio is
Lambda = sqrt(V / (V + tau^2)) exp(tau^2 (estimate - null)^2 / (2 V (V + tau^2))), and
{null : Lambda < 1 / alpha} is the two-sided confidence sequence below.

The mixture's scale `mixture_sd` (tau): pass the non-inferiority margin. At a fixed V the radius
is smallest when tau^2 / V = 2 log(1 / alpha) + log(1 + tau^2 / V), i.e. tau = 2.87 se at
alpha = 0.05 (V = tau^2 / 8.2, not V = tau^2): a mixture is tuned to the information at which the
decision will be made. A non-inferiority look decides when the radius is about the margin; with
tau = margin the look with 80% power comes at se = 0.26 margin (tau = 3.9 se), near that tightest
point. Checked numerically (test_sequential.py): over alpha 0.025 - 0.1 and power 0.8 - 0.9 the
rows needed with tau = margin are 1 - 3% more than with the best tau (0.63 - 0.76 margin); a
quarter of the margin needs 19 - 28% more rows, four margins 17 - 25% more.
"""

from __future__ import annotations

import math

from scipy import optimize, special


def _log_mixture_ratio(difference: float, variance: float, mixture_sd: float) -> float:
    """log Lambda of the normal-mixture SPRT at `difference` from the null."""
    tau_square = mixture_sd * mixture_sd
    return -0.5 * math.log1p(tau_square / variance) + tau_square * difference * difference / (2 * variance * (variance + tau_square))


def _radius(standard_error: float, alpha: float, mixture_sd: float) -> float:
    """Half-width of the confidence sequence: where log Lambda reaches log(1 / alpha)."""
    variance, tau_square = standard_error * standard_error, mixture_sd * mixture_sd
    return math.sqrt(2 * variance * (variance + tau_square) / tau_square * (math.log(1 / alpha) + 0.5 * math.log1p(tau_square / variance)))


def _check(alpha: float | None, mixture_sd: float) -> None:
    if alpha is not None and not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (mixture_sd > 0 and math.isfinite(mixture_sd)):
        raise ValueError(f"mixture_sd must be positive and finite, got {mixture_sd}")


def _usable(standard_error: float) -> bool:
    return standard_error > 0 and math.isfinite(standard_error)


def confidence_sequence(estimate: float, standard_error: float, *, alpha: float, mixture_sd: float) -> tuple[float, float]:
    """(lower, upper) of the two-sided normal-mixture confidence sequence at the current look.

    Valid uniformly over looks: the chance that any day's interval misses the truth is <= alpha.
    Callers may also intersect the intervals over looks (the running max of lower bounds, min of
    upper), which stays valid. NaN where the SE is zero or undefined.
    """
    _check(alpha, mixture_sd)
    if not _usable(standard_error) or math.isnan(estimate):
        return math.nan, math.nan
    radius = _radius(standard_error, alpha, mixture_sd)
    return estimate - radius, estimate + radius


def always_valid_p_value(estimate: float, standard_error: float, *, null: float, mixture_sd: float) -> float:
    """mSPRT p-value for H0: difference == null at this look, min(1, 1 / Lambda).

    Always valid only as a running minimum over looks (callers keep it); it is <= alpha exactly
    when `null` is outside confidence_sequence(..., alpha=alpha). NaN where the SE is undefined.
    """
    _check(None, mixture_sd)
    if not _usable(standard_error) or math.isnan(estimate):
        return math.nan
    return math.exp(-max(_log_mixture_ratio(estimate - null, standard_error * standard_error, mixture_sd), 0.0))


def power_non_inferiority(standard_error: float, *, margin: float, alpha: float, mixture_sd: float, true_difference: float = 0.0) -> float:
    """P(the CS lower bound > -margin) at a look with this SE, when the truth is `true_difference`.

    The estimate is taken as normal around the truth with this SE; this is the power of one look,
    a lower bound on the power of having passed by that look.
    """
    _check(alpha, mixture_sd)
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if not _usable(standard_error):
        return math.nan
    return float(special.ndtr((true_difference + margin - _radius(standard_error, alpha, mixture_sd)) / standard_error))


def required_information(margin: float, *, alpha: float, power: float, mixture_sd: float) -> float:
    """The largest SE of the difference at which a look has `power` to show non-inferiority (truth 0).

    Power falls as the SE grows (the radius grows faster than the SE), so this is where the power
    curve crosses `power`, found by brentq on log(se).
    """
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    _check(alpha, mixture_sd)

    def shortfall(log_se: float) -> float:
        return power_non_inferiority(math.exp(log_se), margin=margin, alpha=alpha, mixture_sd=mixture_sd) - power

    low, high = math.log(margin) - 30, math.log(margin)  # e^-30: the radius is tiny there, power ~ 1
    while shortfall(high) >= 0:  # only for power close to 0 would the crossing lie above se = margin
        high += 1.0
    return math.exp(optimize.brentq(shortfall, low, high, xtol=1e-12, rtol=1e-12))


def projected_sample_size(n_now: int, se_now: float, se_required: float) -> int:
    """Rows needed for the SE to fall to `se_required`, with the SE scaling as 1 / sqrt(n).

    Less than `n_now` means the current data already suffice; the ramp keeps each arm's share, so
    the rows are of the same mix as today's.
    """
    if n_now <= 0:
        raise ValueError(f"n_now must be positive, got {n_now}")
    if not (_usable(se_now) and _usable(se_required)):
        raise ValueError(f"standard errors must be positive and finite, got {se_now} and {se_required}")
    return math.ceil(n_now * (se_now / se_required) ** 2)
