"""Drift statistics between a stored training reference and the current scoring window.

The hourly check compares windows of millions of rows, so everything here is vectorised and the
reference is reduced once to a compact summary (a sorted sample, decile bins, category counts)
that is stored as JSON. The numbers agree with scipy's (ks_2samp, wasserstein_distance,
chi2_contingency, jensenshannon, false_discovery_control) so verdicts can be reasoned about
with the textbook definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from batchwatch.serialization import finite_or_none

DECILES = np.arange(1, 10) / 10
MAX_UNSEEN_REPORTED = 20
# scipy's ks_2samp(method="auto") computes the exact p-value up to this size, the asymptotic one above.
KS_EXACT_MAX_N = 10_000
# scipy's exact p-value costs O(n * m): 1.5 s at 10k x 9k, per column. Beyond a million cells the
# asymptotic distribution is accurate to well under any alerting threshold, so that is used instead.
KS_EXACT_MAX_CELLS = 1_000_000


def ks_method(n_reference: int, n_current: int) -> str:
    """scipy's `method` this module uses for a KS p-value: 'exact' only where it is cheap."""
    exact = max(n_reference, n_current) <= KS_EXACT_MAX_N and n_reference * n_current <= KS_EXACT_MAX_CELLS
    return "exact" if exact else "asymp"


def _as_floats(values: Any) -> np.ndarray:
    """Any 1-D numeric input as float64, with pandas' missing markers (None, pd.NA) as NaN."""
    if isinstance(values, (pd.Series, pd.Index)):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    floats = np.asarray(values, dtype=np.float64)
    if floats.ndim != 1:
        raise ValueError(f"expected a 1-D array of values, got shape {floats.shape}")
    return floats


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True, eq=False)  # eq on ndarray fields would be ambiguous, so identity it is
class NumericReference:
    rows: int  # all reference rows, nulls included
    nulls: int  # null / NaN / ±inf count: a non-finite value is unusable, so it counts as null
    mean: float  # of the finite values (nan if none)
    std: float  # population std (ddof=0) of the finite values (nan if none)
    sample: np.ndarray  # sorted float64 sample of the finite values, at most sample_size
    edges: np.ndarray  # interior decile edges of the finite values, deduplicated
    counts: np.ndarray  # all finite values per right-closed bin: bin i = searchsorted(edges, x, "left")

    @classmethod
    def from_values(cls, values: Any, sample_size: int = 10_000, seed: int = 0) -> NumericReference:
        """Summarise the training column; the seeded sample makes a re-run reproduce the same reference."""
        if sample_size < 1:
            raise ValueError(f"sample_size must be at least 1, got {sample_size}")
        floats = _as_floats(values)
        finite = floats[np.isfinite(floats)]
        if finite.size > sample_size:
            sample = np.random.default_rng(seed).choice(finite, size=sample_size, replace=False)
            sample.sort()
        else:
            sample = np.sort(finite)
        if finite.size:
            edges = np.unique(np.quantile(finite, DECILES))
            mean, std = float(finite.mean()), float(finite.std())
        else:
            edges = np.empty(0, dtype=np.float64)
            mean = std = math.nan
        counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=edges.size + 1)
        return cls(
            rows=int(floats.size),
            nulls=int(floats.size - finite.size),
            mean=mean,
            std=std,
            sample=sample,
            edges=edges,
            counts=counts,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "nulls": self.nulls,
            "mean": finite_or_none(self.mean, keep_inf=True),
            "std": finite_or_none(self.std, keep_inf=True),
            "sample": self.sample.tolist(),
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericReference:
        return cls(
            rows=int(data["rows"]),
            nulls=int(data["nulls"]),
            mean=_none_to_nan(data["mean"]),
            std=_none_to_nan(data["std"]),
            sample=np.asarray(data["sample"], dtype=np.float64),
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
        )


# infer_dtype's names for object columns that may mix booleans with numbers, which pandas counts as one value (True == 1).
_MAY_MIX_BOOLS_AND_NUMBERS = ("mixed", "mixed-integer")
_BOOLEAN_TYPES = {bool, np.bool_}


def _count_categories(values: Any) -> tuple[int, int, dict[str, int]]:
    """(rows, nulls, non-null category -> count), counting by hashing rather than per-row Python.

    Categories are keyed by text, so they survive JSON, and the key does not depend on the dtype a
    column was read with: a reference read as floats (1.0, because the column had a null) meets a
    window read as ints (1). Integers and integral floats (within int64) are keyed as the integer
    ("1"), booleans as "True"/"False", other floats as str() ("1.5"), strings exactly as they are
    (never stripped, case-folded or parsed: "1.0" stays "1.0"); None, NaN, NaT and pd.NA are nulls.
    Values that only differ in type are therefore merged (1, 1.0, np.int64(1) and "1").
    """
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    mixed = series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in _MAY_MIX_BOOLS_AND_NUMBERS
    if mixed and _BOOLEAN_TYPES & set(map(type, series.to_numpy())):  # the rare mixed column pays a pass per row
        booleans = series.map(type).isin(_BOOLEAN_TYPES)
        series = series.mask(booleans, series[booleans].map(str))
    counts = series.value_counts(dropna=True)
    counts = counts[counts > 0]  # a category dtype lists its unused categories with count 0
    frequencies: dict[str, int] = {}
    for key, count in zip(_category_keys(counts.index), counts.to_numpy().tolist(), strict=True):
        frequencies[key] = frequencies.get(key, 0) + count  # distinct values with one key (1 and "1") add up
    return len(series), int(series.isna().sum()), frequencies


def _category_key(value: Any) -> str:
    """One value's key, by the rules of _count_categories."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer() and abs(value) < 2.0**63:
        return str(int(value))
    return str(value)


def _category_keys(categories: pd.Index) -> list[str]:
    """The keys of distinct values, by the rules of _count_categories: by dtype at once, value by value only for mixed objects."""
    if isinstance(categories.dtype, pd.CategoricalDtype):
        categories = pd.Index(np.asarray(categories))
    if pd.api.types.is_float_dtype(categories.dtype):
        native = categories.to_numpy()  # float32 as numpy prints it ("0.1"), the way str() does a float32 value
        numbers = native.astype(np.float64)
        keys = native.astype(str).astype(object)
        integral = np.isfinite(numbers) & (numbers == np.trunc(numbers)) & (np.abs(numbers) < 2.0**63)
        keys[integral] = numbers[integral].astype(np.int64).astype(str)
        return keys.tolist()
    if pd.api.types.is_bool_dtype(categories.dtype) or pd.api.types.is_integer_dtype(categories.dtype):
        return categories.astype(str).tolist()
    if pd.api.types.infer_dtype(categories, skipna=False) == "string":
        return categories.tolist()
    return [_category_key(value) for value in categories]


@dataclass(frozen=True)
class CategoricalReference:
    rows: int
    nulls: int
    frequencies: dict[str, int]  # non-null category -> count

    @classmethod
    def from_values(cls, values: Any) -> CategoricalReference:
        rows, nulls, frequencies = _count_categories(values)
        return cls(rows=rows, nulls=nulls, frequencies=frequencies)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "nulls": self.nulls, "frequencies": dict(self.frequencies)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalReference:
        frequencies = {str(name): int(count) for name, count in data["frequencies"].items()}
        return cls(rows=int(data["rows"]), nulls=int(data["nulls"]), frequencies=frequencies)


@dataclass(frozen=True)
class NumericComparison:
    n_reference: int  # finite values compared: the reference sample size
    n_current: int
    ks_statistic: float
    ks_pvalue: float
    wasserstein: float
    wasserstein_norm: float  # wasserstein in reference standard deviations, so one threshold fits every feature
    psi: float
    current_mean: float
    current_std: float
    current_counts: tuple[int, ...]  # the current finite values on the reference's bins: what a page draws beside the reference


@dataclass(frozen=True)
class CategoricalComparison:
    n_reference: int  # non-null counts
    n_current: int
    chi2_statistic: float
    chi2_pvalue: float
    dof: int
    jensen_shannon: float  # base-2 distance in [0, 1]
    unseen_share: float  # share of current non-null values whose category the reference never saw
    unseen: dict[str, int]  # the most frequent unseen categories, most frequent first
    current_frequencies: dict[str, int]  # the current counts of the reference's categories (unseen ones are in `unseen`)


@dataclass(frozen=True)
class ProportionTest:
    reference_rate: float
    current_rate: float
    z: float  # signed: positive when the current rate is higher
    pvalue: float
    cohens_h: float  # effect size, signed current minus reference; unlike the p-value it does not grow with n


def _is_sorted(values: np.ndarray) -> bool:
    return bool(np.all(values[1:] >= values[:-1]))


def ks_2samp_fast(sorted_reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """scipy.stats.ks_2samp(sorted_reference, current, method=ks_method(...)) as (statistic, p-value), fast.

    Both inputs must be finite. The ECDF gap can only peak at a reference value or just below one
    (at the largest current value under it), so D needs two binary searches per distinct reference value
    into the sorted current instead of ranking all n + m values. Small samples, where scipy computes the
    exact p-value, go to scipy itself; see `ks_method` for where that stops. A current that is already sorted is used as is.
    """
    n_reference, n_current = sorted_reference.size, current.size
    if n_reference == 0 or n_current == 0:
        return math.nan, math.nan
    if ks_method(n_reference, n_current) == "exact":
        result = stats.ks_2samp(sorted_reference, current, method="exact")
        return float(result.statistic), float(result.pvalue)

    sorted_current = current if _is_sorted(current) else np.sort(current)
    last_of_each_value = np.flatnonzero(np.append(sorted_reference[1:] != sorted_reference[:-1], True))
    distinct_reference = sorted_reference[last_of_each_value]
    reference_cdf = (last_of_each_value + 1) / n_reference
    current_at_or_below = np.searchsorted(sorted_current, distinct_reference, side="right")
    current_below = np.searchsorted(sorted_current, distinct_reference, side="left")
    gap_at_value = reference_cdf - current_at_or_below / n_current
    gap_just_below = np.append(0.0, reference_cdf[:-1]) - current_below / n_current
    statistic = float(max(np.abs(gap_at_value).max(), np.abs(gap_just_below).max()))

    larger, smaller = sorted([float(n_reference), float(n_current)], reverse=True)
    effective_n = larger * smaller / (larger + smaller)
    pvalue = stats.kstwo.sf(statistic, np.round(effective_n))
    return statistic, float(np.clip(pvalue, 0.0, 1.0))


def wasserstein_sorted(sorted_a: np.ndarray, sorted_b: np.ndarray) -> float:
    """scipy.stats.wasserstein_distance of two sorted finite samples, without merging or re-sorting them.

    W1 is also the area between the two quantile functions: sum over t in (0, 1] of |Q_a(t) - Q_b(t)|.
    Both are step functions whose steps sit at the known points i/n and j/k, so the merge of the two
    step sequences is index arithmetic: every step of the larger sample is paired with the step of the
    smaller one it starts in, and the few steps crossed by a breakpoint of the smaller sample get their
    tail re-paired. That is a few passes over the large sample, about ten times faster than merging the
    values themselves; ties need no special care.
    """
    larger, smaller = (sorted_a, sorted_b) if sorted_a.size >= sorted_b.size else (sorted_b, sorted_a)
    n, k = larger.size, smaller.size
    if k == 0:
        return math.nan
    # Larger step i covers t in (i/n, (i+1)/n]; smaller step j starts at the first i with i/n >= j/k.
    first_larger_step = -((-np.arange(k + 1) * n) // k)
    paired_at_start = np.repeat(smaller, np.diff(first_larger_step))
    area = np.abs(larger - paired_at_start).sum() / n

    breakpoint_numerators = np.arange(1, k) * n  # breakpoint j/k, scaled by n*k
    crossing = breakpoint_numerators % k != 0
    after = np.arange(1, k)[crossing]
    crossed_step = breakpoint_numerators[crossing] // k
    tail_width = ((crossed_step + 1) * k - after * n) / (n * k)
    crossed_values = larger[crossed_step]
    tail_change = np.abs(crossed_values - smaller[after]) - np.abs(crossed_values - smaller[after - 1])
    return float(area + np.dot(tail_change, tail_width))


# The share an empty bin counts as in PSI, so one empty bin cannot make it infinite.
PSI_FLOOR = 1e-4


def _psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray, floor: float) -> float:
    """The floor keeps an empty bin from making PSI infinite."""
    reference_total, current_total = reference_counts.sum(), current_counts.sum()
    if reference_total == 0 or current_total == 0:
        return math.nan
    reference_share = np.maximum(reference_counts / reference_total, floor)
    current_share = np.maximum(current_counts / current_total, floor)
    return float(np.sum((current_share - reference_share) * np.log(current_share / reference_share)))


def binned(reference: NumericReference, current_finite: np.ndarray) -> np.ndarray:
    """Counts of the current values on the reference's decile bins (open tails included)."""
    return np.bincount(np.searchsorted(reference.edges, current_finite, side="left"), minlength=reference.edges.size + 1)


def psi(reference: NumericReference, current_finite: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of the current values on the reference decile bins."""
    return _psi_from_counts(reference.counts, binned(reference, current_finite), floor)


def compare_numeric(reference: NumericReference, current: Any) -> NumericComparison:
    """KS, Wasserstein and PSI of the finite current values against the reference; NaN/±inf are nulls."""
    floats = _as_floats(current)
    sorted_current = floats[np.isfinite(floats)]
    sorted_current.sort()  # shared by KS and Wasserstein
    n_reference, n_current = reference.sample.size, sorted_current.size
    if n_current:
        current_mean, current_std = float(sorted_current.mean()), float(sorted_current.std())
    else:
        current_mean = current_std = math.nan
    if n_reference == 0 or n_current == 0:
        return NumericComparison(
            n_reference=n_reference,
            n_current=n_current,
            ks_statistic=math.nan,
            ks_pvalue=math.nan,
            wasserstein=math.nan,
            wasserstein_norm=math.nan,
            psi=math.nan,
            current_mean=current_mean,
            current_std=current_std,
            current_counts=tuple(int(count) for count in binned(reference, sorted_current)),
        )

    ks_statistic, ks_pvalue = ks_2samp_fast(reference.sample, sorted_current)
    wasserstein = wasserstein_sorted(sorted_current, reference.sample)
    if reference.std > 0:
        wasserstein_norm = wasserstein / reference.std
    else:
        wasserstein_norm = 0.0 if wasserstein == 0 else math.inf
    current_counts = binned(reference, sorted_current)
    return NumericComparison(
        n_reference=n_reference,
        n_current=n_current,
        ks_statistic=ks_statistic,
        ks_pvalue=ks_pvalue,
        wasserstein=wasserstein,
        wasserstein_norm=wasserstein_norm,
        psi=_psi_from_counts(reference.counts, current_counts, PSI_FLOOR),
        current_mean=current_mean,
        current_std=current_std,
        current_counts=tuple(int(count) for count in current_counts),
    )


def _jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """scipy's jensenshannon(p, q, base=2), except that rounding cannot turn a ~0 divergence into NaN.

    For near-identical large-count distributions the summed divergence can come out as -1e-17, and
    scipy then returns sqrt(negative) = NaN; clamping at 0 gives the true ~0 distance instead.
    """
    reference_total, current_total = reference_counts.sum(), current_counts.sum()
    if reference_total == 0 or current_total == 0:
        return math.nan
    p = reference_counts / reference_total
    q = current_counts / current_total
    middle = (p + q) / 2
    divergence = (special.rel_entr(p, middle).sum() + special.rel_entr(q, middle).sum()) / math.log(2)
    return math.sqrt(max(divergence / 2, 0.0))


def compare_categorical(reference: CategoricalReference, current: Any) -> CategoricalComparison:
    """Chi-square homogeneity test and JS distance over the union of reference and current categories."""
    _, _, current_frequencies = _count_categories(current)
    seen = sorted(reference.frequencies)
    unseen = sorted(set(current_frequencies) - set(reference.frequencies))
    categories = seen + unseen
    table = np.array(
        [
            [reference.frequencies.get(category, 0) for category in categories],
            [current_frequencies.get(category, 0) for category in categories],
        ],
        dtype=np.int64,
    ).reshape(2, len(categories))
    table = table[:, table.sum(axis=0) > 0]
    n_reference, n_current = int(table[0].sum()), int(table[1].sum())

    if table.shape[1] < 2 or n_reference == 0 or n_current == 0:
        chi2_statistic, chi2_pvalue, dof = 0.0, 1.0, 0
    else:
        result = stats.chi2_contingency(table)
        chi2_statistic, chi2_pvalue, dof = float(result.statistic), float(result.pvalue), int(result.dof)

    unseen_counts = {category: current_frequencies[category] for category in unseen}
    most_frequent_unseen = sorted(unseen_counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_UNSEEN_REPORTED]
    return CategoricalComparison(
        n_reference=n_reference,
        n_current=n_current,
        chi2_statistic=chi2_statistic,
        chi2_pvalue=chi2_pvalue,
        dof=dof,
        jensen_shannon=_jensen_shannon(table[0], table[1]),
        unseen_share=sum(unseen_counts.values()) / n_current if n_current else math.nan,
        unseen=dict(most_frequent_unseen),
        current_frequencies={category: current_frequencies[category] for category in seen if category in current_frequencies},
    )


def proportion_test(reference_hits: int, reference_n: int, current_hits: int, current_n: int) -> ProportionTest:
    """Pooled two-proportion z-test (two-sided, normal approximation) with Cohen's h as the effect size.

    An empty side has no rate, so everything but the other rate is NaN rather than an exception.
    """
    for hits, n in ((reference_hits, reference_n), (current_hits, current_n)):
        if n < 0 or not 0 <= hits <= n:
            raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    reference_rate = reference_hits / reference_n if reference_n else math.nan
    current_rate = current_hits / current_n if current_n else math.nan
    if reference_n == 0 or current_n == 0:
        return ProportionTest(reference_rate, current_rate, z=math.nan, pvalue=math.nan, cohens_h=math.nan)

    cohens_h = 2 * math.asin(math.sqrt(current_rate)) - 2 * math.asin(math.sqrt(reference_rate))
    pooled_rate = (reference_hits + current_hits) / (reference_n + current_n)
    if pooled_rate in (0.0, 1.0):
        return ProportionTest(reference_rate, current_rate, z=0.0, pvalue=1.0, cohens_h=cohens_h)
    standard_error = math.sqrt(pooled_rate * (1 - pooled_rate) * (1 / reference_n + 1 / current_n))
    z = (current_rate - reference_rate) / standard_error
    return ProportionTest(reference_rate, current_rate, z=z, pvalue=math.erfc(abs(z) / math.sqrt(2)), cohens_h=cohens_h)


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """BH-adjusted p-values, so many features can be tested each hour at a controlled false discovery rate.

    NaN marks a test that could not be run: it stays NaN and does not count towards m.
    """
    pvalues = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(pvalues.shape, math.nan)
    tested = ~np.isnan(pvalues)
    values = pvalues[tested]
    if np.any((values < 0) | (values > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(values)
    scaled = values[order] * values.size / np.arange(1, values.size + 1)
    # The running minimum from the largest p-value down also caps every result at that p-value, so at 1.
    step_up = np.minimum.accumulate(scaled[::-1])[::-1]
    in_original_order = np.empty(values.size)
    in_original_order[order] = step_up
    adjusted[tested] = in_original_order
    return adjusted
