"""Benchmark: false positives of the canary's daily looks, always-valid confidence sequence vs repeated fixed-sample tests.

Simulated canaries with real per-row data, both arms drawn from the same process (A/A) or the
treatment worse by exactly the non-inferiority margin, looked at every day for 30 days as rows
accumulate (default 4,000 rows a day, 25% of them in the treatment arm):

  metric         per-row data                                         comparison                   margin
  positive_rate  each row flagged with probability 0.08                two_proportions              0.01, higher is worse
  brier          each row's (score - label)^2, the score its           welch_from_moments on the    0.005, higher is worse
                 probability ~ U(0.05, 0.5); worse: score + sqrt(0.005) running count, sum and sum
                 (E[Brier] grows by the square of a score's offset)    of squares (SQL's aggregates)
  roc_auc        label ~ Bernoulli(0.1), score = 1.19 label + N(0, 1)  delong_unpaired on all the   0.02, lower is worse
                 (binormal AUC 0.80); worse: AUC 0.78                  rows so far

Per metric it prints, with mixture_sd = margin and alpha = 0.05:

  A/A, H0 difference = 0   how often any look rejects: the confidence sequence (0 outside it) against
                           the fixed-sample 95% interval of the same Comparison, and naive / always-valid
  worse by the margin      how often any look declares non-inferiority (the bound clears the margin):
                           the false promotions of one ramp step, always-valid and naive
  A/A, power               the share of experiments that showed non-inferiority by the last look, the
                           share at the last look against power_non_inferiority at that look's SE, and
                           the rows (both arms) required_information + projected_sample_size ask for 80%

Judged: each always-valid rate <= alpha + 3 Monte-Carlo SDs (the SD of a rate of exactly alpha).
It also times delong_paired and delong_unpaired on 1M rows (min of 3), the speed the decision needs.
About 7 - 13 minutes, nearly all of it the AUC's 500 x 2 x 30 DeLong runs on up to 120k rows.

    .venv/bin/python bench/bench_canary_aa.py
    .venv/bin/python bench/bench_canary_aa.py --experiments 1000 --auc-experiments 100 --rows-per-day 20000 --share 0.05
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

from batchwatch.stats.comparisons import Comparison, delong_paired, delong_unpaired, two_proportions, welch_from_moments  # noqa: E402
from batchwatch.stats.sequential import (  # noqa: E402
    confidence_sequence,
    power_non_inferiority,
    projected_sample_size,
    required_information,
)

ALPHA = 0.05
POWER = 0.8
LOOKS = 30
POSITIVE_RATE = 0.08
LABEL_RATE = 0.10
AUC = 0.80


@dataclass(frozen=True)
class Metric:
    name: str
    test: str
    margin: float
    higher_is_worse: bool
    # simulate(rng, experiments, rows_control, rows_treatment, shift) -> experiments x LOOKS comparisons
    simulate: Callable[[np.random.Generator, int, int, int, float], list[list[Comparison]]]


def simulate_positive_rate(rng: np.random.Generator, experiments: int, rows_c: int, rows_t: int, shift: float) -> list[list[Comparison]]:
    """Each row flagged or not; the day's count is the sum over its rows."""
    hits_c = np.zeros(experiments, dtype=np.int64)
    hits_t = np.zeros(experiments, dtype=np.int64)
    looks: list[list[Comparison]] = [[] for _ in range(experiments)]
    for day in range(1, LOOKS + 1):
        hits_c += (rng.random((experiments, rows_c)) < POSITIVE_RATE).sum(axis=1)
        hits_t += (rng.random((experiments, rows_t)) < POSITIVE_RATE + shift).sum(axis=1)
        for e in range(experiments):
            looks[e].append(two_proportions(int(hits_c[e]), rows_c * day, int(hits_t[e]), rows_t * day, metric="positive_rate"))
    return looks


def _brier_rows(rng: np.random.Generator, experiments: int, rows: int, shift: float) -> np.ndarray:
    """Each row's squared error; a score off its probability by e adds e^2 to the expected Brier score."""
    probability = rng.uniform(0.05, 0.5, (experiments, rows))
    labels = rng.random((experiments, rows)) < probability
    return (probability + math.sqrt(shift) - labels) ** 2 if shift else (probability - labels) ** 2


def simulate_brier(rng: np.random.Generator, experiments: int, rows_c: int, rows_t: int, shift: float) -> list[list[Comparison]]:
    """Running count, sum and sum of squares per arm, the aggregates one SQL query returns."""
    sums = {arm: np.zeros((experiments, 2)) for arm in ("control", "treatment")}
    looks: list[list[Comparison]] = [[] for _ in range(experiments)]
    for day in range(1, LOOKS + 1):
        for arm, rows, arm_shift in (("control", rows_c, 0.0), ("treatment", rows_t, shift)):
            values = _brier_rows(rng, experiments, rows, arm_shift)
            sums[arm] += np.stack([values.sum(axis=1), (values * values).sum(axis=1)], axis=1)
        n_c, n_t = rows_c * day, rows_t * day
        for e in range(experiments):
            (sum_c, square_c), (sum_t, square_t) = sums["control"][e], sums["treatment"][e]
            var_c, var_t = (square_c - sum_c * sum_c / n_c) / (n_c - 1), (square_t - sum_t * sum_t / n_t) / (n_t - 1)
            looks[e].append(welch_from_moments(sum_c / n_c, var_c, n_c, sum_t / n_t, var_t, n_t, metric="brier"))
    return looks


def _scores(rng: np.random.Generator, labels: np.ndarray, auc: float) -> np.ndarray:
    """Binormal scores: positives shifted by sqrt(2) Phi^-1(auc) standard deviations have exactly that AUC."""
    return math.sqrt(2) * float(special.ndtri(auc)) * labels + rng.normal(size=len(labels))


def _scored_rows(rng: np.random.Generator, rows: int, auc: float) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(rows) < LABEL_RATE).astype(np.int64)
    return labels, _scores(rng, labels, auc)


def simulate_auc(rng: np.random.Generator, experiments: int, rows_c: int, rows_t: int, shift: float) -> list[list[Comparison]]:
    """Every labelled row kept: each look's DeLong runs on all rows so far (a prefix of the 30 days' rows), as the daily decision will."""
    looks: list[list[Comparison]] = []
    for _ in range(experiments):
        labels_c, scores_c = _scored_rows(rng, rows_c * LOOKS, AUC)
        labels_t, scores_t = _scored_rows(rng, rows_t * LOOKS, AUC + shift)
        looks.append(
            [
                delong_unpaired(labels_c[: rows_c * day], scores_c[: rows_c * day], labels_t[: rows_t * day], scores_t[: rows_t * day])
                for day in range(1, LOOKS + 1)
            ]
        )
    return looks


METRICS = (
    Metric("positive_rate", "two_proportion_z", 0.01, True, simulate_positive_rate),
    Metric("brier", "welch_t", 0.005, True, simulate_brier),
    Metric("roc_auc", "delong_unpaired", 0.02, False, simulate_auc),
)


def non_inferior(metric: Metric, lower: float, upper: float) -> bool:
    """The step passes: the bound on the worse side clears the margin."""
    return upper < metric.margin if metric.higher_is_worse else lower > -metric.margin


def sequence(metric: Metric, comparison: Comparison) -> tuple[float, float]:
    return confidence_sequence(comparison.difference, comparison.standard_error, alpha=ALPHA, mixture_sd=metric.margin)


@dataclass(frozen=True)
class Rates:
    always_valid: float
    naive: float

    @property
    def ratio(self) -> float:
        return self.naive / self.always_valid if self.always_valid else math.inf


def false_rejections(metric: Metric, experiments: list[list[Comparison]]) -> Rates:
    """A/A: how often any look excludes a difference of 0."""
    always_valid = [any(not lower <= 0 <= upper for lower, upper in (sequence(metric, c) for c in looks)) for looks in experiments]
    naive = [any(not c.lower <= 0 <= c.upper for c in looks) for looks in experiments]
    return Rates(float(np.mean(always_valid)), float(np.mean(naive)))


def passes(metric: Metric, experiments: list[list[Comparison]]) -> Rates:
    """How often any look declares non-inferiority."""
    always_valid = [any(non_inferior(metric, *sequence(metric, c)) for c in looks) for looks in experiments]
    naive = [any(non_inferior(metric, c.lower, c.upper) for c in looks) for looks in experiments]
    return Rates(float(np.mean(always_valid)), float(np.mean(naive)))


def power_report(metric: Metric, experiments: list[list[Comparison]], rows_per_day: int) -> str:
    last = [looks[-1] for looks in experiments]
    at_last = float(np.mean([non_inferior(metric, *sequence(metric, c)) for c in last]))
    se = float(np.median([c.standard_error for c in last]))
    predicted = power_non_inferiority(se, margin=metric.margin, alpha=ALPHA, mixture_sd=metric.margin)
    needed_se = required_information(metric.margin, alpha=ALPHA, power=POWER, mixture_sd=metric.margin)
    rows_needed = projected_sample_size(rows_per_day * LOOKS, se, needed_se)
    first_days = [next((day for day, c in enumerate(looks, 1) if non_inferior(metric, *sequence(metric, c))), None) for looks in experiments]
    passed_days = [day for day in first_days if day is not None]
    median_day = f"{np.median(passed_days):.0f}" if passed_days else "-"
    by_last = len(passed_days) / len(experiments)
    return (
        f"  power (A/A): passed by day {LOOKS} {by_last:.3f} (median first day {median_day}); at day {LOOKS} {at_last:.3f} "
        f"vs power_non_inferiority(se={se:.5f}) {predicted:.3f}; {POWER:.0%} power needs se {needed_se:.5f}, "
        f"about {rows_needed:,} rows ({rows_needed / rows_per_day:.1f} days)"
    )


def time_delong(rows: int) -> str:
    rng = np.random.default_rng(0)
    labels, champion = _scored_rows(rng, rows, AUC)
    challenger = _scores(rng, labels, AUC + 0.01)
    champion, challenger = np.round(champion, 3), np.round(challenger, 3)  # stored scores tie
    half = rows // 2
    timings = {}
    for name, run in (
        ("delong_paired", lambda: delong_paired(labels, champion, challenger)),
        ("delong_unpaired", lambda: delong_unpaired(labels[:half], champion[:half], labels[half:], challenger[half:])),
    ):
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        timings[name] = min(seconds)
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4_000, help="simulated canaries per scenario for the rate and the Brier score")
    parser.add_argument("--auc-experiments", type=int, default=500, help="for the AUC (DeLong on every row so far, at every look)")
    parser.add_argument("--rows-per-day", type=int, default=4_000, help="matured rows a day, both arms")
    parser.add_argument("--share", type=float, default=0.25, help="the treatment arm's share of the rows")
    parser.add_argument("--delong-rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows_t = round(args.rows_per_day * args.share)
    rows_c = args.rows_per_day - rows_t
    print(f"{LOOKS} daily looks, {rows_c:,} control + {rows_t:,} treatment rows a day, alpha {ALPHA}, mixture_sd = margin\n")
    header = f"{'metric':<14}{'test':<18}{'margin':>7}  {'scenario':<34}{'always-valid':>13}{'naive':>8}{'naive/AV':>10}  AV <= alpha"
    print(header)
    print("-" * len(header))
    for index, metric in enumerate(METRICS):
        experiments = args.auc_experiments if metric.name == "roc_auc" else args.experiments
        rng = np.random.default_rng([args.seed, index])
        start = time.perf_counter()
        same = metric.simulate(rng, experiments, rows_c, rows_t, 0.0)
        worse = metric.simulate(rng, experiments, rows_c, rows_t, metric.margin if metric.higher_is_worse else -metric.margin)
        seconds = time.perf_counter() - start
        scenarios = (("A/A, any look rejects diff = 0", false_rejections(metric, same)), ("worse by margin, any look passes", passes(metric, worse)))
        # judged: the always-valid rate within 3 Monte-Carlo SDs of alpha (the SD it would have at exactly alpha)
        bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)
        for scenario, rates in scenarios:
            verdict = "met" if rates.always_valid <= bound else "MISSED"
            rates_text = f"{rates.always_valid:>13.4f}{rates.naive:>8.4f}{rates.ratio:>10.1f}  {verdict}"
            print(f"{metric.name:<14}{metric.test:<18}{metric.margin:>7g}  {scenario:<34}{rates_text}")
        print(power_report(metric, same, args.rows_per_day))
        print(f"  ({experiments:,} experiments per scenario, {seconds:.0f} s)")
    print(f"\nDeLong on {args.delong_rows:,} rows (min of 3): {time_delong(args.delong_rows)}")


if __name__ == "__main__":
    main()
