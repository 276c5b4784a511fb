"""Daily performance statistics: agreement with scikit-learn, brute-force CBPE, interval width and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats
from sklearn import metrics
from sklearn.calibration import calibration_curve

from batchwatch.stats.performance import (
    BOOTSTRAP_RANGES,
    ESTIMATED_METRICS,
    RANKING_METRICS,
    REALIZED_METRICS,
    Figure,
    ScoreGroups,
    _compress,
    _figures,
    _Layout,
    estimated,
    realized,
)

TIGHT = 1e-12
# Offset of the statistics' seeds from the simulated data's in the coverage tests.
UNRELATED = 100_000


def _day(seed: int, rows: int, *, decimals: int | None, unlabelled_share: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Scores in [0, 1] (with the calibration bin edges and both ends present), labels drawn from them, some NaN."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 5, rows)
    if decimals is not None:
        scores = np.round(scores, decimals)
    scores[:13] = [0.0, 1.0, 0.1, 0.2, 0.3, 0.7, 0.9, *np.linspace(0, 1, 11)[[1, 3, 6, 7, 9, 10]]]
    labels = (rng.random(rows) < scores).astype(float)
    labels[rng.random(rows) < unlabelled_share] = np.nan
    return scores, labels


def _sklearn_ece(labels: np.ndarray, scores: np.ndarray) -> float:
    """ECE from calibration_curve's per-bin means, weighted by the bins' row counts (assigned as it assigns them)."""
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], scores), minlength=10)
    counts = counts[counts > 0]
    return float((counts / counts.sum() * np.abs(prob_true - prob_pred)).sum())


def _sklearn_realized(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    labelled = ~np.isnan(labels)
    y, s = labels[labelled].astype(int), scores[labelled]
    predicted = (s >= threshold).astype(int)
    two_classes = 0 < y.sum() < len(y)
    return {
        "roc_auc": metrics.roc_auc_score(y, s) if two_classes else math.nan,
        "average_precision": metrics.average_precision_score(y, s) if two_classes else math.nan,
        "precision": metrics.precision_score(y, predicted, zero_division=np.nan),
        "recall": metrics.recall_score(y, predicted, zero_division=np.nan),
        "f1": metrics.f1_score(y, predicted, zero_division=np.nan),
        "brier": metrics.brier_score_loss(y, s, labels=[0, 1]),
        "ece": _sklearn_ece(y, s),
        "positive_rate": float(np.mean(scores >= threshold)),
        "label_rate": float(y.mean()),
        "label_coverage": float(labelled.mean()),
    }


def _assert_figures_equal(figures: dict[str, Figure], expected: dict[str, float]) -> None:
    for metric, value in expected.items():
        assert figures[metric].value == pytest.approx(value, abs=TIGHT, nan_ok=True), metric


def _assert_intervals_hold_points(figures: dict[str, Figure]) -> None:
    for metric, figure in figures.items():
        if math.isnan(figure.value):
            assert math.isnan(figure.lower) and math.isnan(figure.upper), metric
        else:
            assert 0 <= figure.lower <= figure.value <= figure.upper <= 1, metric


@pytest.mark.parametrize(
    ("rows", "decimals", "threshold"),
    [
        pytest.param(3_000, 3, 0.25, id="ties"),
        pytest.param(3_000, 1, 0.3, id="heavy-ties-threshold-on-a-score"),
        pytest.param(20_000, None, 0.4, id="continuous-compressed"),
        pytest.param(20_000, 4, 0.1, id="ties-compressed-threshold-on-a-bin-edge"),
    ],
)
def test_realized_equals_sklearn(rows: int, decimals: int | None, threshold: float) -> None:
    scores, labels = _day(7, rows, decimals=decimals)
    figures = realized(ScoreGroups.from_rows(scores, labels), threshold)
    assert tuple(figures) == REALIZED_METRICS
    _assert_figures_equal(figures, _sklearn_realized(scores, labels, threshold))
    _assert_intervals_hold_points(figures)
    assert all(figure.lower < figure.upper for metric, figure in figures.items() if metric != "ece")


@pytest.mark.parametrize("label", [0.0, 1.0], ids=["negatives-only", "positives-only"])
def test_one_class_leaves_ranking_undefined_and_the_rest_as_sklearn(label: float) -> None:
    scores, labels = _day(3, 2_000, decimals=2)
    labels[~np.isnan(labels)] = label
    figures = realized(ScoreGroups.from_rows(scores, labels), 0.3)
    _assert_figures_equal(figures, _sklearn_realized(scores, labels, 0.3))
    for metric in RANKING_METRICS:
        assert math.isnan(figures[metric].value) and math.isnan(figures[metric].lower) and math.isnan(figures[metric].upper)
    _assert_intervals_hold_points(figures)


def test_an_unlabelled_day_has_only_its_positive_rate_and_coverage() -> None:
    scores, _ = _day(5, 2_000, decimals=3)
    figures = realized(ScoreGroups.from_rows(scores, np.full(len(scores), np.nan)), 0.3)
    defined = {metric for metric, figure in figures.items() if not math.isnan(figure.value)}
    assert defined == {"positive_rate", "label_coverage"}
    assert figures["positive_rate"].value == pytest.approx(np.mean(scores >= 0.3), abs=TIGHT)
    assert figures["label_coverage"] == Figure(0.0, 0.0, 0.0)
    _assert_intervals_hold_points(figures)


def test_an_empty_day_is_undefined_everywhere() -> None:
    empty = ScoreGroups.from_aggregates([], [], [], [])
    for figures in (realized(empty, 0.5), estimated(empty, np.zeros(0), 0.5)):
        assert all(math.isnan(value) for figure in figures.values() for value in (figure.value, figure.lower, figure.upper))


def test_ranking_metrics_wait_for_min_positives() -> None:
    scores = np.linspace(0.01, 0.99, 500)
    labels = np.zeros(500)
    labels[[100, 300, 450]] = 1
    groups = ScoreGroups.from_rows(scores, labels)
    assert realized(groups, 0.5, min_positives=3)["roc_auc"].value == pytest.approx(metrics.roc_auc_score(labels, scores), abs=TIGHT)
    figures = realized(groups, 0.5, min_positives=4)
    assert all(math.isnan(figures[metric].value) for metric in RANKING_METRICS)
    assert figures["recall"].value == pytest.approx(2 / 3, abs=TIGHT)


def test_from_aggregates_sorts_and_merges_what_sql_returns() -> None:
    scores, labels = _day(11, 1_000, decimals=2)
    by_rows = ScoreGroups.from_rows(scores, labels)
    # each row as its own aggregate, shuffled: duplicates must merge back into the groups
    order = np.random.default_rng(0).permutation(len(scores))
    labelled = ~np.isnan(labels)
    merged = ScoreGroups.from_aggregates(scores[order], np.ones(len(scores))[order], labelled[order], (labels == 1)[order])
    for field in ("scores", "rows", "labelled", "positives"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(by_rows, field))
    assert (merged.n_rows, merged.n_labelled, merged.n_positives) == (1_000, int(labelled.sum()), int(np.nansum(labels)))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        pytest.param(([0.2, 0.1], [1, 1], [0, 0], [0, 0]), "ascending", id="unsorted"),
        pytest.param(([0.1, 1.5], [1, 1], [0, 0], [0, 0]), r"\[0, 1\]", id="not-a-probability"),
        pytest.param(([0.1, np.nan], [1, 1], [0, 0], [0, 0]), r"\[0, 1\]", id="nan-score"),
        pytest.param(([0.1, 0.2], [1, 1], [2, 0], [0, 0]), "labelled <= rows", id="too-many-labelled"),
        pytest.param(([0.1, 0.2], [1, 1], [1, 0], [2, 0]), "positives <= labelled", id="too-many-positives"),
        pytest.param(([0.1, 0.2], [1, 0], [0, 0], [0, 0]), "rows >= 1", id="no-rows"),
    ],
)
def test_groups_refuse_what_cannot_be_a_day(arrays: tuple[list[float], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreGroups(*(np.asarray(values) for values in arrays))


def test_labels_must_be_binary_or_missing() -> None:
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        ScoreGroups.from_rows([0.1, 0.2], [1.0, 2.0])


def test_intervals_are_seeded() -> None:
    groups = ScoreGroups.from_rows(*_day(2, 2_000, decimals=3))
    assert realized(groups, 0.3, seed=4) == realized(groups, 0.3, seed=4)
    assert realized(groups, 0.3, seed=4)["roc_auc"] != realized(groups, 0.3, seed=5)["roc_auc"]


def test_compression_keeps_threshold_and_calibration_figures_exact() -> None:
    scores, labels = _day(9, 50_000, decimals=None)
    groups = ScoreGroups.from_rows(scores, labels)
    negatives, unlabelled = groups.labelled - groups.positives, groups.rows - groups.labelled
    layout = _Layout.of(groups.scores, 0.35)
    exact = _figures(layout, groups.positives, negatives, unlabelled, 1)
    compressed, summed = _compress(layout, groups.labelled, groups.labelled, groups.positives, negatives, unlabelled)
    assert len(compressed.scores) <= BOOTSTRAP_RANGES + 12 < len(groups.scores)
    approximate = _figures(compressed, *summed, 1)
    for metric in ("precision", "recall", "f1", "ece", "positive_rate", "label_rate", "label_coverage"):
        assert approximate[metric] == pytest.approx(exact[metric], abs=TIGHT), metric
    for metric in ("roc_auc", "average_precision", "brier"):
        assert approximate[metric] == pytest.approx(exact[metric], abs=2e-3), metric


def _binormal_day(seed: int, rows: int, separation: float, base_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true AUC is Phi(separation / sqrt 2): N(separation, 1) for positives, N(0, 1) for negatives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < base_rate).astype(float)
    return special.expit(rng.normal(size=rows) + separation * labels - 2), labels


def _delong_interval(scores: np.ndarray, labels: np.ndarray, confidence: float) -> tuple[float, float]:
    """DeLong's normal interval for the AUC, from mid-ranks."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    m, n = len(positive), len(negative)
    all_ranks = stats.rankdata(np.r_[positive, negative])
    placements_positive = (all_ranks[:m] - stats.rankdata(positive)) / n
    placements_negative = 1 - (all_ranks[m:] - stats.rankdata(negative)) / m
    auc = placements_positive.mean()
    spread = math.sqrt(placements_positive.var(ddof=1) / m + placements_negative.var(ddof=1) / n)
    z = stats.norm.ppf(0.5 + confidence / 2)
    return auc - z * spread, auc + z * spread


def test_auc_interval_is_as_wide_as_delong() -> None:
    scores, labels = _binormal_day(0, 3_000, 1.2, 0.1)
    scores = np.round(scores, 3)
    figure = realized(ScoreGroups.from_rows(scores, labels), 0.5, samples=2_000)["roc_auc"]
    lower, upper = _delong_interval(scores, labels, 0.95)
    assert figure.value == pytest.approx((lower + upper) / 2, abs=TIGHT)
    assert 0.8 < (figure.upper - figure.lower) / (upper - lower) < 1.2


def test_auc_interval_covers_the_true_auc() -> None:
    separation = 1.0
    true_auc = stats.norm.cdf(separation / math.sqrt(2))
    covered = []
    for seed in range(200):
        # the bootstrap's seed differs from the data's, or its draws would replay the uniforms that drew the labels
        figure = realized(ScoreGroups.from_rows(*_binormal_day(seed, 1_000, separation, 0.2)), 0.5, seed=UNRELATED + seed)["roc_auc"]
        covered.append(figure.lower <= true_auc <= figure.upper)
    assert 0.9 <= np.mean(covered) <= 0.99


def _weighted_twins(scores: np.ndarray, rows: np.ndarray, calibrated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each score twice, as a positive weighing rows * c and a negative weighing rows * (1 - c)."""
    return np.r_[scores, scores], np.r_[np.ones(len(scores)), np.zeros(len(scores))], np.r_[rows * calibrated, rows * (1 - calibrated)]


def test_estimated_equals_weighted_sklearn() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.beta(2, 5, 4_000), 2)
    groups = ScoreGroups.from_rows(scores, np.full(len(scores), np.nan))
    calibrated = np.clip(groups.scores**1.3 + 0.01, 0, 1)
    figures = estimated(groups, calibrated, 0.3)
    assert tuple(figures) == ESTIMATED_METRICS
    twins, truth, weight = _weighted_twins(groups.scores, groups.rows, calibrated)
    flagged = (twins >= 0.3).astype(int)
    expected = {
        "roc_auc": metrics.roc_auc_score(truth, twins, sample_weight=weight),
        "average_precision": metrics.average_precision_score(truth, twins, sample_weight=weight),
        "precision": metrics.precision_score(truth, flagged, sample_weight=weight),
        "recall": metrics.recall_score(truth, flagged, sample_weight=weight),
        "f1": metrics.f1_score(truth, flagged, sample_weight=weight),
        "brier": metrics.brier_score_loss(truth, twins, sample_weight=weight),
        "label_rate": np.average(calibrated, weights=groups.rows),
    }
    _assert_figures_equal(figures, expected)
    _assert_intervals_hold_points(figures)


def test_estimated_ranking_is_undefined_when_no_positive_is_expected() -> None:
    groups = ScoreGroups.from_rows(np.linspace(0, 1, 50), np.full(50, np.nan))
    figures = estimated(groups, np.zeros(50), 0.5)
    assert all(math.isnan(figures[metric].value) for metric in RANKING_METRICS)
    assert (figures["label_rate"].value, figures["precision"].value) == (0.0, 0.0) and math.isnan(figures["recall"].value)


def _calibrated_day(seed: int, rows: int) -> tuple[ScoreGroups, np.ndarray, ScoreGroups]:
    """A day whose labels are drawn from the calibrated probability of each raw score (3% base rate)."""
    rng = np.random.default_rng(seed)
    scores = np.round(special.expit(rng.normal(size=rows)), 4)
    labels = (rng.random(rows) < special.expit(1.7 * special.logit(scores) - 4.7)).astype(float)
    unlabelled = ScoreGroups.from_rows(scores, np.full(rows, np.nan))
    return unlabelled, special.expit(1.7 * special.logit(unlabelled.scores) - 4.7), ScoreGroups.from_rows(scores, labels)


def test_estimate_tracks_the_realized_auc_of_calibrated_days() -> None:
    errors, covered = [], []
    for seed in range(200):
        unlabelled, calibrated, labelled = _calibrated_day(seed, 100_000)
        assert 0.025 < labelled.n_positives / labelled.n_rows < 0.035
        estimate = estimated(unlabelled, calibrated, 0.5, seed=UNRELATED + seed)["roc_auc"]
        actual = realized(labelled, 0.5, samples=1)["roc_auc"].value
        errors.append(abs(estimate.value - actual))
        covered.append(estimate.lower <= actual <= estimate.upper)
    assert np.mean(errors) < 0.01
    assert 0.9 <= np.mean(covered) <= 0.99


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"threshold": math.nan}, "threshold", id="nan-threshold"),
        pytest.param({"samples": 0}, "samples", id="no-samples"),
        pytest.param({"confidence": 1.0}, "confidence", id="certainty"),
    ],
)
def test_arguments_are_checked(arguments: dict[str, float], message: str) -> None:
    groups = ScoreGroups.from_rows([0.1, 0.9], [0.0, 1.0])
    with pytest.raises(ValueError, match=message):
        realized(groups, **{"threshold": 0.5, **arguments})
    with pytest.raises(ValueError, match=message):
        estimated(groups, [0.1, 0.9], **{"threshold": 0.5, **arguments})


def test_calibrated_must_align_with_the_scores() -> None:
    with pytest.raises(ValueError, match="calibrated"):
        estimated(ScoreGroups.from_rows([0.1, 0.9], [0.0, 1.0]), [0.1], 0.5)
