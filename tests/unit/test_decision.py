"""The decision threshold's policies against sklearn and numpy on the same validation scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_curve, precision_score, recall_score

from batchwatch.errors import PermanentError
from batchwatch.modeling.decision import ThresholdUnreachable, alert_rate_threshold, fit_threshold, min_precision_threshold
from batchwatch.spec.model import AlertRate, MinPrecision


def validation(rows: int, seed: int, signal: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels at a ~3% base rate and distinct scores that rank them imperfectly."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.03).astype(int)
    scores = 1 / (1 + np.exp(-(-4 + signal * labels + rng.normal(0, 1, rows))))
    return labels, scores


def flagged_share(scores: np.ndarray, threshold: float) -> float:
    return float(np.mean(scores >= threshold))


# --- alert rate --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "rate"), [(1_000, 0.01), (4_000, 0.05), (500, 0.2)])
def test_alert_rate_is_the_quantile_when_the_share_is_whole_rows(rows: int, rate: float) -> None:
    _, scores = validation(rows, seed=rows)
    threshold = alert_rate_threshold(scores, rate)
    assert threshold == np.quantile(scores, 1 - rate, method="higher")
    assert flagged_share(scores, threshold) == pytest.approx(rate, abs=1e-12)


def test_alert_rate_flags_the_whole_rows_of_the_share_and_no_more() -> None:
    _, scores = validation(1_234, seed=7)
    threshold = alert_rate_threshold(scores, 0.01)  # 12.34 rows: 12 flagged
    assert int(np.sum(scores >= threshold)) == 12
    assert threshold == np.sort(scores)[::-1][11]


@pytest.mark.parametrize("seed", range(20))
def test_alert_rate_with_ties_is_the_lowest_score_within_the_rate(seed: int) -> None:
    """Brute force over every distinct score: the chosen one is the lowest whose flagged share is not above the rate."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 30, rng.integers(20, 400)) / 30  # many ties
    rate = float(rng.uniform(0.02, 0.5))
    threshold = alert_rate_threshold(scores, rate)
    within = [value for value in np.unique(scores) if np.mean(scores >= value) <= rate]
    if within:
        assert threshold == min(within)
    else:  # even the top tie is over the budget: nothing is flagged
        assert threshold > scores.max()
    assert flagged_share(scores, threshold) <= rate


def test_a_tie_at_the_boundary_is_left_unflagged_whole() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.7, 0.7, 0.2, 0.1, 0.1, 0.05, 0.0])
    threshold = alert_rate_threshold(scores, 0.3)  # 3 rows allowed; the tie at 0.7 would make 5
    assert threshold == 0.8 and flagged_share(scores, threshold) == 0.2


def test_an_alert_rate_under_one_row_flags_nothing_on_validation() -> None:
    _, scores = validation(50, seed=1)
    threshold = alert_rate_threshold(scores, 0.01)  # half a row
    assert threshold > scores.max() and threshold == np.nextafter(scores.max(), math.inf)
    assert alert_rate_threshold(np.array([0.3, 0.3, 0.3]), 0.5) > 0.3  # the top tie is over the budget


def test_a_share_that_rounds_below_a_whole_row_still_counts_it() -> None:
    scores = np.arange(100) / 100
    assert int(np.sum(scores >= alert_rate_threshold(scores, 0.29))) == 29  # 0.29 * 100 = 28.999999999999996


# --- minimum precision -------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.2, 0.4, 0.6])
def test_min_precision_is_the_lowest_curve_threshold_reaching_it(target: float) -> None:
    labels, scores = validation(5_000, seed=11)
    threshold = min_precision_threshold(labels, scores, target)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    reaching = thresholds[precision[:-1] >= target]
    assert threshold == reaching.min()
    assert precision_score(labels, scores >= threshold) >= target
    # The most recall at that precision: no threshold reaching it recalls more.
    best_recall = recall[:-1][precision[:-1] >= target].max()
    assert recall_score(labels, scores >= threshold) == pytest.approx(best_recall, abs=1e-12)


def test_min_precision_out_of_reach_fails_training_with_what_to_do() -> None:
    labels, scores = validation(3_000, seed=5, signal=0.3)  # a weak model
    precision, _, thresholds = precision_recall_curve(labels, scores)
    best = precision[:-1].max()
    assert best < 0.95
    with pytest.raises(ThresholdUnreachable) as raised:
        min_precision_threshold(labels, scores, 0.95)
    message = str(raised.value)
    assert isinstance(raised.value, PermanentError)
    assert message.startswith("scoring.threshold.min_precision: no threshold reaches a precision of 0.95 on the 3,000 validation rows")
    assert f"the best reached is {best:.4g} (score >= {thresholds[np.argmax(precision[:-1])]:.4g}" in message
    assert f"Lower scoring.threshold.min_precision to {math.floor(best * 1000) / 1000:g} or below" in message
    assert "{alert_rate: ...}" in message


def test_min_precision_without_positives_fails() -> None:
    with pytest.raises(ThresholdUnreachable, match="hold no positive label"):
        min_precision_threshold(np.zeros(100, dtype=int), np.linspace(0, 1, 100), 0.5)


# --- the stored policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "name", "target"),
    [
        pytest.param(0.4, "fixed", 0.4, id="fixed"),
        pytest.param(AlertRate(alert_rate=0.02), "alert_rate", 0.02, id="alert-rate"),
        pytest.param(MinPrecision(min_precision=0.3), "min_precision", 0.3, id="min-precision"),
    ],
)
def test_fit_threshold_records_the_policy_and_its_validation_figures(policy, name: str, target: float) -> None:
    labels, scores = validation(4_000, seed=3)
    decision = fit_threshold(policy, labels, scores)
    threshold = decision["threshold"]
    assert (decision["policy"], decision["target"]) == (name, target)
    if name == "fixed":
        assert threshold == 0.4
    elif name == "alert_rate":
        assert threshold == alert_rate_threshold(scores, 0.02)
    else:
        assert threshold == min_precision_threshold(labels, scores, 0.3)
    flagged = scores >= threshold
    assert decision["validation"] == pytest.approx(
        {
            "precision": precision_score(labels, flagged), "recall": recall_score(labels, flagged), "f1": f1_score(labels, flagged),
            "positive_rate": flagged.mean(), "rows": 4_000, "positives": int(labels.sum()),
        },
        abs=1e-12,
    )
    assert json.loads(json.dumps(decision, allow_nan=False)) == decision


def test_undefined_validation_figures_are_null() -> None:
    labels, scores = validation(50, seed=2)
    decision = fit_threshold(AlertRate(alert_rate=0.01), labels, scores)  # flags none of 50 rows
    assert decision["validation"]["precision"] is None and decision["validation"]["positive_rate"] == 0.0
    assert fit_threshold(0.5, np.zeros(10, dtype=int), np.zeros(10))["validation"]["f1"] is None
