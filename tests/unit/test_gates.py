"""Promotion gates: the weighted AUC against sklearn, the paired bootstrap, and each gate's verdict."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from batchwatch.promotion.gates import (
    GateResult,
    all_passed,
    auc_non_inferiority,
    brier_ceiling,
    output_sanity,
    roc_auc_floor,
    shadow_agreement,
    slice_checks,
)
from batchwatch.stats.auc import paired_bootstrap_auc_difference, rank_for_auc, weighted_auc_presorted


def holdout(rows: int, seed: int = 0, positive_rate: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a good champion's scores, rounded to two decimals so ties are everywhere."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < positive_rate).astype(int)
    scores = np.round(np.clip(0.35 * labels + rng.normal(0.3, 0.15, rows), 0, 1), 2)
    return labels, scores


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {result.name: result for result in results}


# --- weighted AUC ------------------------------------------------------------------------------


def test_weighted_auc_matches_sklearn_with_ties_and_float_weights() -> None:
    labels, scores = holdout(5_000)
    assert len(np.unique(scores)) < 150  # many ties
    weights = np.random.default_rng(1).exponential(size=(3, len(labels)))
    aucs = weighted_auc_presorted(rank_for_auc(labels, scores), weights)
    expected = [roc_auc_score(labels, scores, sample_weight=row) for row in weights]
    np.testing.assert_allclose(aucs, expected, rtol=0, atol=1e-10)


def test_bootstrap_counts_give_the_auc_of_the_resampled_rows() -> None:
    labels, scores = holdout(2_000, seed=3)
    rng = np.random.default_rng(2)
    resample = rng.integers(0, len(labels), len(labels))
    counts = np.bincount(resample, minlength=len(labels))
    auc = weighted_auc_presorted(rank_for_auc(labels, scores), counts)
    assert auc == pytest.approx(roc_auc_score(labels[resample], scores[resample]), abs=1e-12)


def test_weighted_auc_is_nan_when_a_class_has_no_weight() -> None:
    ranking = rank_for_auc([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.2])
    assert np.isnan(weighted_auc_presorted(ranking, [1, 0, 2, 0]))
    assert weighted_auc_presorted(ranking, [1, 1, 1, 1]) == pytest.approx(0.75)


def test_weights_of_the_wrong_length_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_auc_presorted(rank_for_auc([0, 1], [0.1, 0.9]), [1, 1, 1])


# --- paired bootstrap --------------------------------------------------------------------------


def test_observed_difference_is_the_difference_of_sklearn_aucs_and_inside_the_ci() -> None:
    labels, champion = holdout(4_000)
    challenger = np.round(np.clip(champion + np.random.default_rng(5).normal(0, 0.1, len(labels)), 0, 1), 2)
    observed, lower, upper = paired_bootstrap_auc_difference(labels, challenger, champion, n_boot=200)
    assert observed == pytest.approx(roc_auc_score(labels, challenger) - roc_auc_score(labels, champion), abs=1e-12)
    assert lower < observed < upper


def test_bootstrap_is_deterministic_given_the_seed() -> None:
    labels, champion = holdout(1_000)
    challenger = champion[::-1].copy()
    first = paired_bootstrap_auc_difference(labels, challenger, champion, n_boot=50, seed=7)
    assert paired_bootstrap_auc_difference(labels, challenger, champion, n_boot=50, seed=7) == first
    assert paired_bootstrap_auc_difference(labels, challenger, champion, n_boot=50, seed=8) != first


def test_bootstrap_of_one_class_is_nan_not_an_error() -> None:
    result = paired_bootstrap_auc_difference([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], n_boot=10)
    assert all(math.isnan(number) for number in result)


@pytest.mark.parametrize("arguments", [{"n_boot": 0}, {"confidence": 1.0}])
def test_bootstrap_rejects_meaningless_settings(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap_auc_difference([0, 1], [0.1, 0.9], [0.2, 0.8], **arguments)


# --- holdout gates -----------------------------------------------------------------------------


def test_a_challenger_identical_to_the_champion_is_non_inferior() -> None:
    labels, champion = holdout(3_000)
    observed, lower, upper = paired_bootstrap_auc_difference(labels, champion.copy(), champion, n_boot=100)
    assert observed == lower == upper == 0.0
    gate = auc_non_inferiority(labels, champion.copy(), champion, margin=0.01, n_boot=100)
    assert gate.passed is True
    assert gate.value == 0.0 and gate.threshold == -0.01
    assert "CI" in gate.detail


def test_a_shuffled_challenger_fails_non_inferiority_and_the_floor() -> None:
    labels, champion = holdout(3_000)
    shuffled = np.random.default_rng(9).permutation(champion)
    gate = auc_non_inferiority(labels, shuffled, champion, margin=0.01, n_boot=100)
    assert gate.passed is False
    assert gate.value is not None and gate.value < -0.3
    floor = roc_auc_floor(labels, shuffled, minimum=0.7)
    assert floor.passed is False and floor.value is not None and floor.value < 0.6
    assert "< floor 0.700" in floor.detail


def test_roc_auc_floor_passes_a_good_model_with_its_sklearn_auc() -> None:
    labels, scores = holdout(2_000)
    gate = roc_auc_floor(labels, scores, minimum=0.7)
    assert gate.passed is True
    assert gate.value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert gate.detail.startswith(f"challenger AUC {gate.value:.3f} >= floor 0.700")


def test_brier_ceiling_by_hand() -> None:
    gate = brier_ceiling([0, 1, 1, 0], [0.0, 1.0, 0.5, 0.5], maximum=0.2)
    assert (gate.passed, gate.value, gate.threshold) == (True, 0.125, 0.2)
    assert brier_ceiling([0, 1], [1.0, 0.0], maximum=0.2).passed is False


@pytest.mark.parametrize(
    ("labels", "challenger", "reason"),
    [
        ([], [], "no rows"),
        ([1, 1, 1], [0.2, 0.5, 0.9], "only one class"),
        ([0, 1, 1], [0.2, np.nan, 0.9], "challenger has 1 NaN scores"),
    ],
)
def test_holdout_gates_fail_with_a_reason_when_the_auc_is_undefined(
    labels: list[int], challenger: list[float], reason: str
) -> None:
    champion = [0.5] * len(labels)
    for gate in (roc_auc_floor(labels, challenger, minimum=0.7), auc_non_inferiority(labels, challenger, champion, margin=0.01)):
        assert gate.passed is False and gate.value is None
        assert reason in gate.detail


def test_brier_ceiling_fails_on_empty_or_nan_scores() -> None:
    assert "no rows" in brier_ceiling([], [], maximum=0.2).detail
    assert brier_ceiling([0, 1], [0.1, np.nan], maximum=0.2).passed is False


@pytest.mark.parametrize(
    "call",
    [
        lambda: roc_auc_floor([0, 1, 1], [0.1, 0.9], minimum=0.7),
        lambda: auc_non_inferiority([0, 1], [0.1, 0.9], [0.1], margin=0.01),
        lambda: brier_ceiling([0, 2], [0.1, 0.9], maximum=0.2),
        lambda: slice_checks(pd.DataFrame({"c": ["a"]}), [0, 1], [0.1, 0.9], [0.1, 0.9], margin=0, min_rows=1, min_positives=1),
        lambda: shadow_agreement([0.1, 0.9], [0.1], champion_labels=[0, 1], challenger_labels=[0], min_agreement=0.9, min_rows=1),
        lambda: shadow_agreement([0.1, 0.9], [0.1, 0.9], champion_labels=[0], challenger_labels=[0, 1], min_agreement=0.9, min_rows=1),
    ],
)
def test_mismatched_or_invalid_inputs_raise(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# --- output sanity -----------------------------------------------------------------------------


def test_output_sanity_passes_clean_scores() -> None:
    gates = by_name(output_sanity([0.0, 0.2, 0.6, 1.0], threshold=0.5, positive_rate_min=0.1, positive_rate_max=0.6))
    assert all_passed(list(gates.values())) and len(gates) == 3
    assert gates["positive_rate_bounds"].value == 0.5
    assert gates["positive_rate_bounds"].threshold == 0.6  # the nearer bound


def test_output_sanity_flags_nan_out_of_range_and_positive_rate() -> None:
    gates = by_name(output_sanity([0.1, np.nan, 1.2, 0.9, -0.1], threshold=0.5, positive_rate_min=0.0, positive_rate_max=0.25))
    assert (gates["scores_not_nan"].passed, gates["scores_not_nan"].value) == (False, 1.0)
    assert (gates["scores_in_unit_interval"].passed, gates["scores_in_unit_interval"].value) == (False, 2.0)
    assert "2 of 4 non-NaN scores outside [0, 1] (min -0.1, max 1.2)" == gates["scores_in_unit_interval"].detail
    rate = gates["positive_rate_bounds"]
    assert (rate.passed, rate.value, rate.threshold) == (False, 0.5, 0.25)  # 1.2 and 0.9 of four non-NaN scores


def test_output_sanity_flags_a_positive_rate_below_the_minimum() -> None:
    gates = by_name(output_sanity([0.1] * 99 + [0.9], threshold=0.5, positive_rate_min=0.05, positive_rate_max=0.5))
    rate = gates["positive_rate_bounds"]
    assert (rate.passed, rate.value, rate.threshold) == (False, 0.01, 0.05)


def test_output_sanity_fails_every_gate_on_no_scores() -> None:
    gates = output_sanity([], threshold=0.5, positive_rate_min=0.0, positive_rate_max=1.0)
    assert [gate.passed for gate in gates] == [False, False, False]
    all_nan = by_name(output_sanity([np.nan, np.nan], threshold=0.5, positive_rate_min=0.0, positive_rate_max=1.0))
    assert all_nan["positive_rate_bounds"].passed is False and all_nan["scores_not_nan"].passed is False


# --- slices ------------------------------------------------------------------------------------


def test_slice_checks_fail_only_the_slice_where_the_challenger_collapses() -> None:
    rows = 6_000
    labels, champion = holdout(rows, seed=11)
    rng = np.random.default_rng(12)
    category = rng.choice(["travel", "grocery", "fuel"], size=rows).astype(object)
    category[:40] = "jewelry"  # too few rows to judge
    category[40:60] = None  # the null slice, also small
    channel = pd.Categorical(rng.choice(["web", "pos"], size=rows))
    challenger = champion.copy()
    travel = category == "travel"
    challenger[travel] = rng.permutation(challenger[travel])
    slices = pd.DataFrame({"merchant_category": category, "channel": channel, "amount": rng.random(rows)})

    gates = by_name(slice_checks(slices, labels, challenger, champion, margin=0.02, min_rows=100, min_positives=10))

    assert gates["slice_auc[merchant_category=travel]"].passed is False
    assert gates["slice_auc[merchant_category=grocery]"].passed is True
    assert gates["slice_auc[merchant_category=fuel]"].passed is True
    jewelry = gates["slice_auc[merchant_category=jewelry]"]
    assert jewelry.passed is None and "fewer than 100 rows" in jewelry.detail
    assert gates["slice_auc[merchant_category=<null>]"].passed is None
    channel_gates = {name for name in gates if name.startswith("slice_auc[channel=")}
    assert channel_gates == {"slice_auc[channel=web]", "slice_auc[channel=pos]"}
    assert not any("amount" in name for name in gates)  # numeric columns are not slices

    travel_gate = gates["slice_auc[merchant_category=travel]"]
    members = category == "travel"
    assert travel_gate.value == pytest.approx(roc_auc_score(labels[members], challenger[members]), abs=1e-12)
    assert travel_gate.threshold == pytest.approx(roc_auc_score(labels[members], champion[members]) - 0.02, abs=1e-12)


def test_slices_without_enough_positives_or_with_one_class_are_not_judged() -> None:
    labels = np.array([0] * 8 + [1, 1] + [0] * 10)
    scores = np.linspace(0, 1, 20)
    slices = pd.DataFrame({"segment": ["few"] * 10 + ["none"] * 10})
    gates = by_name(slice_checks(slices, labels, scores, scores, margin=0.0, min_rows=5, min_positives=3))
    assert "fewer than 3 positives" in gates["slice_auc[segment=few]"].detail
    none = gates["slice_auc[segment=none]"]
    assert none.passed is None and "fewer than 3 positives" in none.detail
    one_class = by_name(slice_checks(slices, labels, scores, scores, margin=0.0, min_rows=5, min_positives=0))
    assert one_class["slice_auc[segment=none]"].passed is None and "only one class" in one_class["slice_auc[segment=none]"].detail


# --- shadow agreement --------------------------------------------------------------------------


def decided(scores, threshold: float) -> np.ndarray:
    """The labels a model at `threshold` gives, as the nightly run writes them (a NaN score is never flagged)."""
    return (np.asarray(scores, dtype=float) >= threshold).astype(int)


def agreement(champion, challenger, champion_threshold: float = 0.5, challenger_threshold: float = 0.5, **settings):
    return shadow_agreement(
        champion, challenger, champion_labels=decided(champion, champion_threshold),
        challenger_labels=decided(challenger, challenger_threshold), **settings,
    )


def test_shadow_agreement_counts_shared_decisions() -> None:
    champion = np.array([0.1, 0.2, 0.6, 0.9, 0.4, 0.7, 0.3, 0.8, 0.05, 0.55])
    challenger = champion.copy()
    challenger[[2, 4]] = [0.4, 0.6]  # two flipped decisions
    gate = agreement(champion, challenger, min_agreement=0.75, min_rows=10)
    assert (gate.passed, gate.value, gate.threshold) == (True, 0.8, 0.75)
    assert "Spearman correlation" in gate.detail
    assert agreement(champion, challenger, min_agreement=0.9, min_rows=10).passed is False


def test_shadow_agreement_compares_each_models_decisions_at_its_own_threshold() -> None:
    champion = np.array([0.1, 0.2, 0.6, 0.9, 0.4, 0.7, 0.3, 0.8, 0.05, 0.55])
    challenger = champion / 2  # the same ranking on another scale: at its own threshold (half the champion's) it decides alike
    assert agreement(champion, challenger, 0.5, 0.25, min_agreement=1.0, min_rows=10).value == 1.0
    # At the champion's threshold it would flag none of the champion's five.
    assert agreement(champion, challenger, 0.5, 0.5, min_agreement=1.0, min_rows=10).value == 0.5


def test_shadow_agreement_counts_nan_as_disagreement_and_reports_rank_correlation() -> None:
    champion = np.array([0.1, 0.2, 0.3, 0.9])
    gate = agreement(champion, np.array([0.15, 0.25, np.nan, 0.95]), min_agreement=0.5, min_rows=1)
    assert gate.value == 0.75
    assert "Spearman correlation 1.000, 1 rows with a NaN score" in gate.detail


def test_shadow_agreement_with_too_few_rows_is_not_applicable() -> None:
    assert agreement([0.1, 0.9], [0.2, 0.8], min_agreement=0.9, min_rows=100).passed is None
    assert agreement([], [], min_agreement=0.9, min_rows=0).passed is None


# --- results -----------------------------------------------------------------------------------


def test_all_passed_ignores_not_applicable_gates() -> None:
    passed, failed, skipped = (GateResult("g", verdict, None, None, "") for verdict in (True, False, None))
    assert all_passed([passed, skipped])
    assert all_passed([skipped])
    assert all_passed([])
    assert not all_passed([passed, skipped, failed])
    assert not all_passed([GateResult("g", np.bool_(False), None, None, "")])


def test_to_dict_is_json_with_nan_and_inf_as_null() -> None:
    result = GateResult("g", np.bool_(True), float("nan"), float("inf"), "detail")
    expected = {"name": "g", "passed": True, "value": None, "threshold": None, "detail": "detail"}
    assert json.loads(json.dumps(result.to_dict())) == expected
    labels, scores = holdout(500)
    gates = [roc_auc_floor(labels, scores, 0.7), *output_sanity(scores, threshold=0.5, positive_rate_min=0, positive_rate_max=1)]
    json.dumps([gate.to_dict() for gate in gates], allow_nan=False)
