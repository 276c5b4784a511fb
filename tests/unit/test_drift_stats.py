"""Drift statistics: agreement with scipy, hand-checked values, edge cases and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from batchwatch.stats.drift import (
    KS_EXACT_MAX_N,
    CategoricalReference,
    NumericReference,
    benjamini_hochberg,
    compare_categorical,
    compare_numeric,
    ks_2samp_fast,
    ks_method,
    proportion_test,
    psi,
    wasserstein_sorted,
)

TIGHT = {"rel": 1e-9, "abs": 1e-12}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _with_non_finite(values: np.ndarray, seed: int) -> np.ndarray:
    """Sprinkle NaN, +inf and -inf over a copy, so the current window has nulls of every kind."""
    spoiled = values.astype(float).copy()
    positions = _rng(seed).choice(spoiled.size, size=spoiled.size // 10, replace=False)
    spoiled[positions] = np.resize([np.nan, np.inf, -np.inf], positions.size)
    return spoiled


NUMERIC_CASES = {
    # name: (reference values, current values); the sizes pick scipy's exact or asymptotic KS p-value
    "tiny_exact": (np.array([0.3, -1.2, 2.5]), np.array([0.1, 4.0])),
    "normal_exact": (_rng(1).normal(size=400), _rng(2).normal(0.3, 1.2, size=250)),
    "normal_asymptotic": (_rng(3).normal(size=50_000), _rng(4).normal(0.05, 1.0, size=200_000)),
    "normal_asymptotic_same": (_rng(5).normal(size=30_000), _rng(6).normal(size=40_000)),
    "shifted_past_reference": (_rng(7).uniform(0, 1, size=20_000), _rng(8).uniform(0.5, 2, size=30_000)),
    "ties_exact": (_rng(9).integers(0, 4, size=600).astype(float), _rng(10).integers(0, 5, size=500).astype(float)),
    "ties_asymptotic": (_rng(11).integers(0, 4, size=30_000).astype(float), _rng(12).integers(1, 6, size=40_000).astype(float)),
    "constant_same_exact": (np.full(50, 3.0), np.full(40, 3.0)),
    "constant_same_asymptotic": (np.full(20_000, 3.0), np.full(15_000, 3.0)),
    "constant_different_asymptotic": (np.full(20_000, 3.0), np.full(15_000, 5.0)),
    "non_finite_current": (_rng(13).normal(size=20_000), _with_non_finite(_rng(14).normal(0.2, 1, size=30_000), seed=15)),
    "large_values": (_rng(16).normal(1e9, 50, size=20_000), _rng(17).normal(1e9 + 5, 60, size=25_000)),
}


@pytest.mark.parametrize("case", NUMERIC_CASES)
def test_compare_numeric_matches_scipy(case: str) -> None:
    reference_values, current_values = NUMERIC_CASES[case]
    reference = NumericReference.from_values(reference_values)
    current_finite = current_values[np.isfinite(current_values)]

    result = compare_numeric(reference, current_values)

    expected_ks = stats.ks_2samp(reference.sample, current_finite, method=ks_method(reference.sample.size, current_finite.size))
    assert result.n_reference == reference.sample.size == min(reference_values.size, 10_000)
    assert result.n_current == current_finite.size
    assert result.ks_statistic == pytest.approx(expected_ks.statistic, **TIGHT)
    assert result.ks_pvalue == pytest.approx(expected_ks.pvalue, **TIGHT)
    expected_wasserstein = stats.wasserstein_distance(current_finite, reference.sample)
    assert result.wasserstein == pytest.approx(expected_wasserstein, rel=1e-9, abs=1e-9)
    if reference.std > 0:
        assert result.wasserstein_norm == pytest.approx(expected_wasserstein / reference.std, rel=1e-9, abs=1e-9)
    assert result.psi == pytest.approx(psi(reference, current_finite), **TIGHT)
    assert result.current_mean == pytest.approx(current_finite.mean(), **TIGHT)
    assert result.current_std == pytest.approx(current_finite.std(), **TIGHT)


def test_constant_columns_have_known_results() -> None:
    reference = NumericReference.from_values(np.full(20_000, 3.0))
    assert reference.edges.tolist() == [3.0]
    assert reference.counts.tolist() == [20_000, 0]

    same = compare_numeric(reference, np.full(15_000, 3.0))
    assert (same.ks_statistic, same.ks_pvalue, same.wasserstein, same.wasserstein_norm) == (0.0, 1.0, 0.0, 0.0)
    assert same.psi == 0.0

    different = compare_numeric(reference, np.full(15_000, 5.0))
    assert different.ks_statistic == 1.0
    assert different.ks_pvalue < 1e-300
    assert different.wasserstein == 2.0
    assert different.wasserstein_norm == math.inf
    # reference shares [1, 0 -> 1e-4], current shares [0 -> 1e-4, 1]: two equal terms (1 - 1e-4) * ln(1e4)
    assert different.psi == pytest.approx(2 * (1 - 1e-4) * math.log(1e4), **TIGHT)


def test_psi_by_hand_on_decile_bins() -> None:
    reference = NumericReference.from_values(np.arange(1.0, 11.0))
    # deciles of 1..10 are 1.9, 2.8, ..., 9.1, so every bin holds exactly one reference value
    np.testing.assert_allclose(reference.edges, 1 + 0.9 * np.arange(1, 10), rtol=1e-12)
    assert reference.counts.tolist() == [1] * 10

    current = np.array([1.0] * 5 + [10.0] * 5)
    # two bins at 0.5 vs 0.1, eight empty bins floored at 1e-4 vs 0.1
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert expected == pytest.approx(6.808228348909805, rel=1e-12)
    assert psi(reference, current) == pytest.approx(expected, **TIGHT)
    assert compare_numeric(reference, current).psi == pytest.approx(expected, **TIGHT)
    assert psi(reference, np.arange(1.0, 11.0)) == 0.0


def test_the_current_side_is_kept_on_the_reference_bins() -> None:
    """What the page draws beside the reference: the window's finite values counted on the reference's
    right-closed decile bins (open tails included), as numpy's histogram counts them on closed edges."""
    rng = _rng(11)
    reference = NumericReference.from_values(rng.normal(size=5_000))
    current = _with_non_finite(rng.normal(0.5, 1.2, size=3_000), seed=12)
    compared = compare_numeric(reference, current)
    finite = current[np.isfinite(current)]
    edges = np.concatenate([[-np.inf], reference.edges, [np.inf]])
    by_numpy = [int(np.sum((finite > low) & (finite <= high))) for low, high in zip(edges[:-1], edges[1:], strict=True)]
    assert list(compared.current_counts) == by_numpy and sum(compared.current_counts) == compared.n_current
    assert compare_numeric(reference, np.array([np.nan])).current_counts == (0,) * 10

    categorical = compare_categorical(CategoricalReference.from_values(pd.Series(["a", "b", "b"])), pd.Series(["b", "c", None, "b"]))
    assert categorical.current_frequencies == {"b": 2} and categorical.unseen == {"c": 1}


def test_psi_bins_are_right_closed() -> None:
    reference = NumericReference.from_values(np.arange(1.0, 11.0))
    on_first_edge = np.full(4, reference.edges[0])  # belongs to bin 0, together with the reference's 1.0
    expected = (1 - 0.1) * math.log(1 / 0.1) + 9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    assert psi(reference, on_first_edge) == pytest.approx(expected, **TIGHT)
    assert compare_numeric(reference, on_first_edge).psi == pytest.approx(expected, **TIGHT)


@pytest.mark.parametrize(
    "current",
    [np.array([]), np.array([np.nan, np.inf, -np.inf]), pd.Series([None, None], dtype="Float64")],
    ids=["empty", "non_finite", "nullable_na"],
)
def test_all_null_current_gives_nan_statistics(current: object) -> None:
    reference = NumericReference.from_values(_rng(20).normal(size=500))

    result = compare_numeric(reference, current)

    assert (result.n_reference, result.n_current) == (500, 0)
    numbers = [result.ks_statistic, result.ks_pvalue, result.wasserstein, result.wasserstein_norm, result.psi]
    assert all(math.isnan(value) for value in numbers + [result.current_mean, result.current_std])


def test_all_null_reference_gives_nan_statistics_and_stores_as_json() -> None:
    reference = NumericReference.from_values([np.nan, None, np.inf])
    assert (reference.rows, reference.nulls, reference.sample.size, reference.edges.size) == (3, 3, 0, 0)
    assert reference.counts.tolist() == [0]
    assert math.isnan(reference.mean) and math.isnan(reference.std)

    stored = json.loads(json.dumps(reference.to_dict(), allow_nan=False))
    assert stored["mean"] is None and stored["std"] is None
    result = compare_numeric(NumericReference.from_dict(stored), [1.0, 2.0])
    assert (result.n_reference, result.n_current) == (0, 2)
    assert math.isnan(result.ks_statistic) and math.isnan(result.wasserstein) and math.isnan(result.psi)
    assert result.current_mean == 1.5


def test_nullable_and_object_inputs_count_nulls() -> None:
    reference = NumericReference.from_values(pd.Series([1.0, pd.NA, 3.0, np.inf], dtype="Float64"))
    assert (reference.rows, reference.nulls, reference.mean, reference.std) == (4, 2, 2.0, 1.0)
    from_objects = NumericReference.from_values(np.array([1.0, None, 3.0, -np.inf], dtype=object))
    assert (from_objects.rows, from_objects.nulls) == (4, 2)
    np.testing.assert_array_equal(from_objects.sample, [1.0, 3.0])


def test_reference_summary() -> None:
    values = _with_non_finite(_rng(21).gamma(2.0, size=50_000), seed=22)
    finite = values[np.isfinite(values)]

    reference = NumericReference.from_values(values, sample_size=2_000, seed=7)

    assert (reference.rows, reference.nulls) == (50_000, 5_000)
    assert reference.mean == pytest.approx(finite.mean(), **TIGHT)
    assert reference.std == pytest.approx(finite.std(ddof=0), **TIGHT)
    assert reference.sample.size == 2_000
    assert reference.sample.dtype == np.float64
    assert np.all(np.diff(reference.sample) >= 0)
    expected_sample = np.sort(np.random.default_rng(7).choice(finite, size=2_000, replace=False))
    np.testing.assert_array_equal(reference.sample, expected_sample)
    assert not np.array_equal(reference.sample, NumericReference.from_values(values, sample_size=2_000, seed=8).sample)
    np.testing.assert_array_equal(reference.edges, np.unique(np.quantile(finite, np.arange(1, 10) / 10)))
    lower = np.concatenate([[-np.inf], reference.edges])
    upper = np.concatenate([reference.edges, [np.inf]])
    by_bin = [int(np.sum((finite > low) & (finite <= high))) for low, high in zip(lower, upper, strict=True)]
    assert reference.counts.tolist() == by_bin
    assert reference.counts.sum() == finite.size


def test_small_reference_keeps_every_value() -> None:
    reference = NumericReference.from_values([3.0, 1.0, np.nan, 2.0], sample_size=10)
    np.testing.assert_array_equal(reference.sample, [1.0, 2.0, 3.0])


def test_numeric_reference_json_round_trip_gives_identical_comparisons() -> None:
    reference = NumericReference.from_values(_with_non_finite(_rng(23).lognormal(size=30_000), seed=24))
    current = _with_non_finite(_rng(25).lognormal(0.1, 1, size=40_000), seed=26)

    restored = NumericReference.from_dict(json.loads(json.dumps(reference.to_dict(), allow_nan=False)))

    np.testing.assert_array_equal(restored.sample, reference.sample)
    np.testing.assert_array_equal(restored.edges, reference.edges)
    np.testing.assert_array_equal(restored.counts, reference.counts)
    assert (restored.rows, restored.nulls, restored.mean, restored.std) == (
        reference.rows,
        reference.nulls,
        reference.mean,
        reference.std,
    )
    assert compare_numeric(restored, current) == compare_numeric(reference, current)


def test_ks_fast_path_matches_scipy_on_random_shapes() -> None:
    """The asymptotic branch, where D is computed here rather than by scipy, over shifts, ties and overlaps."""
    rng = _rng(30)
    for _ in range(12):
        sorted_reference = np.sort(np.round(rng.normal(size=rng.integers(1, 3_000)), rng.integers(0, 3)))
        current = np.round(rng.normal(rng.normal(0, 0.5), rng.uniform(0.5, 2), size=rng.integers(KS_EXACT_MAX_N + 1, 30_000)), 1)
        expected = stats.ks_2samp(sorted_reference, current, method="asymp")

        statistic, pvalue = ks_2samp_fast(sorted_reference, current)

        assert statistic == pytest.approx(expected.statistic, **TIGHT)
        assert pvalue == pytest.approx(expected.pvalue, **TIGHT)
        assert (statistic, pvalue) == ks_2samp_fast(sorted_reference, np.sort(current))


def test_ks_on_empty_side_is_nan() -> None:
    assert all(math.isnan(value) for value in ks_2samp_fast(np.array([1.0]), np.array([])))
    assert all(math.isnan(value) for value in ks_2samp_fast(np.array([]), np.arange(20_000.0)))


def test_wasserstein_sorted_matches_scipy() -> None:
    rng = _rng(40)
    pairs = [
        (rng.normal(size=size_a), rng.normal(0.4, 2, size=size_b))
        for size_a, size_b in [(1, 1), (1, 7), (7, 3), (100, 30), (1_000, 1_000), (999, 1_001), (12_345, 677)]
    ]
    pairs += [
        (rng.integers(0, 4, size=5_000).astype(float), rng.integers(0, 6, size=333).astype(float)),
        (np.full(50, 3.0), np.full(7, 3.0)),
        (np.full(50, 3.0), np.full(7, 5.0)),
        (rng.normal(1e12, 10, size=3_000), rng.normal(1e12 + 3, 12, size=700)),
    ]
    for a, b in pairs:
        sorted_a, sorted_b = np.sort(a), np.sort(b)
        expected = stats.wasserstein_distance(a, b)
        assert wasserstein_sorted(sorted_a, sorted_b) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert wasserstein_sorted(sorted_b, sorted_a) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert math.isnan(wasserstein_sorted(np.array([]), np.array([1.0])))


def test_wasserstein_by_hand() -> None:
    # ECDF gap 1/2 over [0, 1) and 1/2 over [1, 3): area 0.5 + 1.0
    assert wasserstein_sorted(np.array([0.0, 3.0]), np.array([1.0])) == pytest.approx(1.5, **TIGHT)


def _expected_categorical(reference_values: list, current_values: list) -> tuple[np.ndarray, list[str]]:
    """The contingency table written out directly from the raw values, for comparing with scipy."""
    reference_counts = pd.Series([str(v) for v in reference_values if not pd.isna(v)]).value_counts()
    current_counts = pd.Series([str(v) for v in current_values if not pd.isna(v)], dtype=object).value_counts()
    categories = sorted(reference_counts.index) + sorted(set(current_counts.index) - set(reference_counts.index))
    table = np.array([[reference_counts.get(c, 0) for c in categories], [current_counts.get(c, 0) for c in categories]])
    return table, categories


def test_compare_categorical_matches_scipy_with_nulls_and_unseen() -> None:
    rng = _rng(50)
    reference_values = list(rng.choice(["a", "b", "c", "d"], p=[0.4, 0.3, 0.2, 0.1], size=5_000)) + [None] * 30 + [np.nan] * 20
    current_values = list(rng.choice(["a", "b", "c", "x", "y"], p=[0.3, 0.3, 0.3, 0.07, 0.03], size=4_000)) + [None] * 40
    rng.shuffle(current_values)
    table, categories = _expected_categorical(reference_values, current_values)
    assert categories[:4] == ["a", "b", "c", "d"] and categories[4:] == ["x", "y"]

    reference = CategoricalReference.from_values(np.array(reference_values, dtype=object))
    result = compare_categorical(reference, np.array(current_values, dtype=object))

    assert (reference.rows, reference.nulls) == (5_050, 50)
    assert (result.n_reference, result.n_current) == (5_000, 4_000)
    expected = stats.chi2_contingency(table)
    assert result.chi2_statistic == pytest.approx(expected.statistic, **TIGHT)
    assert result.chi2_pvalue == pytest.approx(expected.pvalue, **TIGHT)
    assert result.dof == expected.dof == 5
    assert result.jensen_shannon == pytest.approx(jensenshannon(table[0], table[1], base=2), **TIGHT)
    unseen_expected = {"x": int(table[1][4]), "y": int(table[1][5])}
    assert result.unseen == unseen_expected
    assert list(result.unseen) == ["x", "y"]  # most frequent first
    assert result.unseen_share == pytest.approx(sum(unseen_expected.values()) / 4_000, **TIGHT)


def test_compare_categorical_accepts_category_dtype() -> None:
    reference_raw = ["low"] * 60 + ["mid"] * 30 + ["high"] * 10 + [None] * 5
    current_raw = ["low"] * 20 + ["mid"] * 50 + [None] * 7
    dtype = pd.CategoricalDtype(["low", "mid", "high", "unused"])

    reference = CategoricalReference.from_values(pd.Series(reference_raw, dtype=dtype))
    result = compare_categorical(reference, pd.Series(current_raw, dtype=dtype))

    assert reference.frequencies == {"low": 60, "mid": 30, "high": 10}
    assert (reference.rows, reference.nulls) == (105, 5)
    table = np.array([[10, 60, 30], [0, 20, 50]])  # sorted: high, low, mid
    expected = stats.chi2_contingency(table)
    assert (result.chi2_statistic, result.chi2_pvalue, result.dof) == pytest.approx(
        (expected.statistic, expected.pvalue, expected.dof), **TIGHT
    )
    assert result.jensen_shannon == pytest.approx(jensenshannon(table[0], table[1], base=2), **TIGHT)
    assert (result.unseen, result.unseen_share) == ({}, 0.0)
    plain = compare_categorical(reference, np.array(current_raw, dtype=object))
    assert plain == result


def test_two_by_two_table_uses_scipy_default_continuity_correction() -> None:
    reference = CategoricalReference.from_values(["yes"] * 30 + ["no"] * 70)
    result = compare_categorical(reference, ["yes"] * 45 + ["no"] * 55)
    expected = stats.chi2_contingency([[70, 30], [55, 45]])
    assert result.dof == 1
    assert result.chi2_statistic == pytest.approx(expected.statistic, **TIGHT)
    assert result.chi2_pvalue == pytest.approx(expected.pvalue, **TIGHT)


def test_unseen_categories_are_capped_and_ordered() -> None:
    reference = CategoricalReference.from_values(["known"] * 100)
    current = ["known"] * 100 + [f"new{i:02d}" for i in range(25) for _ in range(i + 1)]

    result = compare_categorical(reference, current)

    assert list(result.unseen) == [f"new{i:02d}" for i in range(24, 4, -1)]
    assert result.unseen["new24"] == 25
    unseen_total = sum(range(1, 26))
    assert result.unseen_share == pytest.approx(unseen_total / (100 + unseen_total), **TIGHT)
    assert result.dof == 25


def test_categorical_degenerate_tables() -> None:
    reference = CategoricalReference.from_values(["a"] * 10 + [None])

    single_column = compare_categorical(reference, ["a", "a", None])
    assert (single_column.chi2_statistic, single_column.chi2_pvalue, single_column.dof) == (0.0, 1.0, 0)
    assert single_column.jensen_shannon == 0.0

    all_null = compare_categorical(reference, [None, np.nan])
    assert (all_null.n_reference, all_null.n_current) == (10, 0)
    assert (all_null.chi2_statistic, all_null.chi2_pvalue, all_null.dof) == (0.0, 1.0, 0)
    assert math.isnan(all_null.jensen_shannon) and math.isnan(all_null.unseen_share)

    disjoint = compare_categorical(reference, ["b"] * 5)
    assert disjoint.jensen_shannon == pytest.approx(1.0, **TIGHT)
    assert (disjoint.unseen, disjoint.unseen_share) == ({"b": 5}, 1.0)


def test_jensen_shannon_of_near_identical_shares_is_not_nan() -> None:
    """scipy's jensenshannon takes sqrt of a -1e-17 rounding residue here and returns NaN; the distance is ~0."""
    reference = CategoricalReference(rows=2_300_000_003, nulls=0, frequencies={"a": 10**9, "b": 10**9 + 3, "c": 3 * 10**8})
    result = compare_categorical(reference, ["a"] * 10 + ["b"] * 10 + ["c"] * 3)
    assert 0.0 <= result.jensen_shannon < 1e-6


def test_category_keys_are_strings() -> None:
    reference = CategoricalReference.from_values(pd.Series([1, 2, 2, "1", None], dtype=object))
    assert reference.frequencies == {"1": 2, "2": 2}
    assert (reference.rows, reference.nulls) == (5, 1)



@pytest.mark.parametrize(
    "values",
    [
        pytest.param(pd.Series([1.0, 2.0, 2.0, np.nan]), id="float64-with-NaN"),
        pytest.param(pd.Series([1, 2, 2, None], dtype="Int64"), id="nullable-Int64"),
        pytest.param(pd.Series([1.0, 2.0, 2.0, None], dtype="Float64"), id="nullable-Float64"),
        pytest.param(pd.Series([1.0, 2.0, 2.0, np.nan], dtype=np.float32), id="float32"),
        pytest.param(pd.Series([np.int64(1), np.float64(2.0), 2, None], dtype=object), id="object-numpy-and-python-numbers"),
        pytest.param(pd.Series(["1", "2", "2", None]), id="text-as-the-SQL-path-reads-it"),
        pytest.param(pd.Series([1.0, 2.0, 2.0, np.nan]).astype("category"), id="category-of-floats"),
        pytest.param(np.array([1, 2, 2, None], dtype=object), id="numpy-object"),
    ],
)
def test_category_keys_do_not_depend_on_the_dtype(values: object) -> None:
    """Integers and integral floats key as the integer, whatever the column was read as."""
    reference = CategoricalReference.from_values(values)
    assert reference.frequencies == {"1": 1, "2": 2}
    assert (reference.rows, reference.nulls) == (4, 1)


def test_a_float_reference_with_a_null_is_not_drifted_from_an_int_window_of_the_same_values() -> None:
    """A column with a null reads as floats (1.0), the same column without one as ints (1): the same data, no drift."""
    counts = {1: 400, 2: 300, 3: 200, 7: 100}
    values = [value for value, count in counts.items() for _ in range(count)]
    reference = CategoricalReference.from_values(pd.Series([*values, None], dtype="float64"))
    result = compare_categorical(reference, pd.Series(values, dtype="int64"))

    assert result.unseen == {} and result.unseen_share == 0.0
    assert result.jensen_shannon == pytest.approx(0.0, abs=1e-12)
    assert result.chi2_pvalue == pytest.approx(1.0)
    assert result.current_frequencies == {"1": 400, "2": 300, "3": 200, "7": 100}


def test_mixed_object_columns_key_by_value_keeping_booleans_and_text_as_they_are() -> None:
    """Booleans stay apart from 1 and 0 (pandas alone counts True with 1); text is never stripped, case-folded or parsed."""
    values = [True, 1, np.int64(1), 1.0, "1", False, 0, np.True_, "True", "a", "A", " a", "1.0", 1.5, np.float32(2.5), None, np.nan, pd.NA]
    reference = CategoricalReference.from_values(pd.Series(values, dtype=object))
    assert reference.frequencies == {
        "True": 3, "False": 1, "1": 4, "0": 1, "a": 1, "A": 1, " a": 1, "1.0": 1, "1.5": 1, "2.5": 1,
    }
    assert (reference.rows, reference.nulls) == (len(values), 3)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.array([True, False, True]), id="numpy-bool"),
        pytest.param(pd.Series([True, False, True, None], dtype="boolean"), id="nullable-boolean"),
        pytest.param(pd.Series([True, False, np.True_, None], dtype=object), id="object-bools"),
    ],
)
def test_booleans_key_as_true_and_false(values: object) -> None:
    assert CategoricalReference.from_values(values).frequencies == {"True": 2, "False": 1}

def test_categorical_reference_json_round_trip_gives_identical_comparisons() -> None:
    reference = CategoricalReference.from_values(["a"] * 50 + ["b"] * 30 + [None] * 4)
    current = ["a"] * 20 + ["b"] * 40 + ["z"] * 3 + [None]

    restored = CategoricalReference.from_dict(json.loads(json.dumps(reference.to_dict(), allow_nan=False)))

    assert restored == reference
    assert compare_categorical(restored, current) == compare_categorical(reference, current)


def test_proportion_test_by_hand() -> None:
    result = proportion_test(50, 1_000, 80, 1_000)
    # pooled 130/2000 = 0.065; se = sqrt(0.065 * 0.935 * (1/1000 + 1/1000)) = sqrt(1.2155e-4) = 0.0110249717
    # z = (0.08 - 0.05) / se = 2.7210954; two-sided p = erfc(z / sqrt 2) = 0.0065066
    # h = 2 asin(sqrt 0.08) - 2 asin(sqrt 0.05) = 0.5735131 - 0.4510268 = 0.1224863
    assert (result.reference_rate, result.current_rate) == (0.05, 0.08)
    assert result.z == pytest.approx(2.721095431170472, rel=1e-9)
    assert result.pvalue == pytest.approx(0.00650659748363783, rel=1e-9)
    assert result.cohens_h == pytest.approx(0.12248629262683436, rel=1e-9)
    assert result.pvalue == pytest.approx(2 * stats.norm.sf(result.z), rel=1e-9)


def test_proportion_test_is_antisymmetric() -> None:
    forward = proportion_test(12, 300, 30, 450)
    backward = proportion_test(30, 450, 12, 300)
    assert backward.z == pytest.approx(-forward.z, **TIGHT)
    assert backward.cohens_h == pytest.approx(-forward.cohens_h, **TIGHT)
    assert backward.pvalue == pytest.approx(forward.pvalue, **TIGHT)
    assert forward.z > 0 and forward.cohens_h > 0  # the rate rose from 0.04 to 0.067

def test_proportion_test_edge_cases() -> None:
    assert dataclasses.astuple(proportion_test(0, 100, 0, 200)) == (0.0, 0.0, 0.0, 1.0, 0.0)
    assert dataclasses.astuple(proportion_test(100, 100, 200, 200)) == (1.0, 1.0, 0.0, 1.0, 0.0)
    one_sided_empty = proportion_test(5, 100, 0, 0)
    assert one_sided_empty.reference_rate == 0.05
    assert all(math.isnan(v) for v in (one_sided_empty.current_rate, one_sided_empty.z, one_sided_empty.pvalue))
    assert math.isnan(one_sided_empty.cohens_h)
    assert all(math.isnan(v) for v in dataclasses.astuple(proportion_test(0, 0, 0, 0)))
    with pytest.raises(ValueError):
        proportion_test(5, 4, 0, 10)


def test_benjamini_hochberg_by_hand() -> None:
    # sorted: 0.005, 0.01, 0.03, 0.04, 0.2 -> p * 5 / rank: 0.025, 0.025, 0.05, 0.05, 0.2 (already monotone)
    adjusted = benjamini_hochberg([0.01, 0.04, 0.03, 0.005, 0.2])
    np.testing.assert_allclose(adjusted, [0.025, 0.05, 0.05, 0.025, 0.2], rtol=1e-12)
    # sorted: 0.01, 0.02, 0.03, 0.5 -> p * 4 / rank: 0.04, 0.04, 0.04, 0.5; NaN is not counted in m
    with_gap = benjamini_hochberg([0.03, np.nan, 0.02, 0.5, 0.01])
    np.testing.assert_allclose(with_gap, [0.04, np.nan, 0.04, 0.5, 0.04], rtol=1e-12)
    # step-up: 0.04 * 3 / 2 = 0.06 is lowered to the 0.05 of rank 3
    np.testing.assert_allclose(benjamini_hochberg([0.05, 0.04, 0.001]), [0.05, 0.05, 0.003], rtol=1e-12)


def test_benjamini_hochberg_matches_scipy() -> None:
    pvalues = _rng(60).uniform(0, 0.2, size=40) ** 2
    pvalues[[3, 17, 29]] = np.nan
    tested = ~np.isnan(pvalues)

    adjusted = benjamini_hochberg(pvalues)

    np.testing.assert_allclose(adjusted[tested], stats.false_discovery_control(pvalues[tested], method="bh"), rtol=1e-12)
    assert np.isnan(adjusted[~tested]).all()
    assert benjamini_hochberg([]).size == 0
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()
    with pytest.raises(ValueError):
        benjamini_hochberg([0.5, 1.5])
