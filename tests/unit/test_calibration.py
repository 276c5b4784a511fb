"""Expected calibration error against sklearn's calibration_curve, and the isotonic calibration chosen out of fold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression

from batchwatch.stats.calibration import Calibration, expected_calibration_error, fit_calibration, out_of_fold_isotonic


def calibrated_sample(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities with a fraud-like skew (mean ~6%) and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    probabilities = rng.beta(0.5, 8.0, rows)
    return (rng.random(rows) < probabilities).astype(int), probabilities


def ece_from_sklearn(labels: np.ndarray, scores: np.ndarray, bins: int) -> float:
    """sum_b n_b / N |mean(label)_b - mean(score)_b| from calibration_curve's per-bin means and the bins' row counts."""
    observed, predicted = calibration_curve(labels, scores, n_bins=bins, strategy="uniform")
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=bins)
    counts = counts[counts > 0]  # calibration_curve leaves empty bins out
    return float(np.sum(counts / len(scores) * np.abs(observed - predicted)))


@pytest.mark.parametrize("bins", [10, 5, 20])
@pytest.mark.parametrize("power", [1.0, 3.0], ids=["calibrated", "cubed"])
def test_ece_matches_calibration_curve(bins: int, power: float) -> None:
    labels, probabilities = calibrated_sample(5_000, seed=1)
    # Scores exactly on bin edges, and at 0 and 1, land in the bin calibration_curve puts them in.
    scores = np.concatenate([probabilities**power, np.linspace(0.0, 1.0, bins + 1)])
    labels = np.concatenate([labels, np.arange(bins + 1) % 2])
    assert expected_calibration_error(labels, scores, bins) == pytest.approx(ece_from_sklearn(labels, scores, bins), abs=1e-12)


def test_ece_of_a_hand_computed_case() -> None:
    # Bin [0, 0.1]: scores 0.05, 0.1 (mean 0.075), labels 0, 1 (rate 0.5); bin (0.9, 1]: score 0.95, label 1.
    assert expected_calibration_error([0, 1, 1], [0.05, 0.1, 0.95]) == pytest.approx(2 / 3 * 0.425 + 1 / 3 * 0.05, abs=1e-15)


def test_ece_refuses_what_is_not_a_label_or_a_probability() -> None:
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        expected_calibration_error([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="within"):
        expected_calibration_error([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="finite"):
        expected_calibration_error([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        expected_calibration_error([0, 1], [0.1])
    assert np.isnan(expected_calibration_error([], []))


def test_a_miscalibrated_score_gets_isotonic_and_a_much_lower_ece() -> None:
    labels, probabilities = calibrated_sample(8_000, seed=2)
    scores = probabilities**3  # ranks kept, probabilities far too low
    calibration = fit_calibration(labels, scores)
    assert calibration.method == "isotonic"
    assert calibration.ece_raw == pytest.approx(expected_calibration_error(labels, scores), abs=1e-15)
    assert calibration.ece_calibrated < calibration.ece_raw / 5
    assert (calibration.rows, calibration.positives) == (8_000, int(labels.sum()))

    # The stored step function is sklearn's isotonic regression on the same rows, clipped beyond them.
    fitted = IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    probes = np.concatenate([np.linspace(0.0, 1.0, 201), scores[:500]])
    np.testing.assert_allclose(calibration.apply(probes), fitted.predict(probes), rtol=0, atol=1e-12)

    # And it holds on rows it never saw: fresh draws from the same process.
    fresh_labels, fresh_probabilities = calibrated_sample(8_000, seed=3)
    fresh_scores = fresh_probabilities**3
    assert expected_calibration_error(fresh_labels, calibration.apply(fresh_scores)) < expected_calibration_error(fresh_labels, fresh_scores) / 5


def test_an_exactly_calibrated_score_keeps_the_raw_scores() -> None:
    # Every score's rows hold exactly that share of positives: raw ECE 0, which no map can beat.
    scores = np.repeat([0.02, 0.1, 0.25, 0.5, 0.8], 200)
    labels = np.concatenate([np.arange(200) < 200 * share for share in (0.02, 0.1, 0.25, 0.5, 0.8)]).astype(int)
    calibration = fit_calibration(labels, scores)
    assert calibration.method == "none" and calibration.x == ()
    assert calibration.ece_raw == pytest.approx(0.0, abs=1e-15)
    assert calibration.ece_calibrated is not None and calibration.ece_calibrated >= calibration.ece_raw
    np.testing.assert_array_equal(calibration.apply(scores), scores)


def test_too_few_positives_to_judge_out_of_fold_keep_the_raw_scores() -> None:
    labels = np.zeros(500, dtype=int)
    labels[[10, 200, 300, 400]] = 1  # four positives for five folds
    scores = np.linspace(0.0, 0.5, 500) ** 3
    calibration = fit_calibration(labels, scores, folds=5)
    assert calibration.method == "none" and calibration.ece_calibrated is None
    assert calibration.ece_raw == pytest.approx(expected_calibration_error(labels, scores), abs=1e-15)


def test_out_of_fold_scores_are_reproducible_and_differ_from_the_in_sample_fit() -> None:
    labels, probabilities = calibrated_sample(3_000, seed=4)
    scores = probabilities**2
    first = out_of_fold_isotonic(labels, scores, folds=5, seed=0)
    np.testing.assert_array_equal(first, out_of_fold_isotonic(labels, scores, folds=5, seed=0))
    in_sample = IsotonicRegression(out_of_bounds="clip").fit(scores, labels).predict(scores)
    assert not np.allclose(first, in_sample)
    # In sample, isotonic regression is calibrated on its own bins; out of fold it pays for what it learned from noise.
    assert expected_calibration_error(labels, first) > expected_calibration_error(labels, in_sample)


def test_json_round_trip_and_none_is_the_identity() -> None:
    labels, probabilities = calibrated_sample(4_000, seed=5)
    calibration = fit_calibration(labels, probabilities**3)
    stored = json.loads(json.dumps(calibration.to_json(), allow_nan=False))
    assert set(stored) == {"method", "x", "y", "ece_raw", "ece_calibrated", "rows", "positives"}
    assert Calibration.from_json(stored) == calibration
    identity = Calibration.from_json(None)
    assert identity.method == "none"
    np.testing.assert_array_equal(identity.apply([0.0, 0.3, 1.0]), [0.0, 0.3, 1.0])
