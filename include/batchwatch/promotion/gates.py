"""Validation gates a retrained challenger must pass before it may replace the champion.

Every gate returns a GateResult holding the measured number, the number it was compared with and
a sentence for the run log, so a refused promotion can be explained without rerunning anything.
`passed` is None when a gate does not apply (a slice too small to judge, no shadow rows); None
never blocks a promotion. Gates on the whole holdout fail instead when they cannot be evaluated
(one class only, no rows, NaN scores): promotion needs evidence, and a broken holdout gives none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from batchwatch.serialization import finite_or_none
from batchwatch.stats.auc import as_scores, binary_labels, paired_bootstrap_auc_difference, roc_auc, why_auc_undefined

NULL_SLICE = "<null>"

# Two-sided, so the non-inferiority test is one-sided at 97.5%, the usual choice for such trials.
NON_INFERIORITY_CONFIDENCE = 0.95


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool | None  # None: not applicable, which never counts as a failure
    value: float | None  # the measured number
    threshold: float | None  # the number it was compared with
    detail: str  # one sentence for the run log

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types for the registry; nan and inf become None because JSON has neither."""
        return {
            "name": self.name,
            "passed": None if self.passed is None else bool(self.passed),
            "value": finite_or_none(self.value),
            "threshold": finite_or_none(self.threshold),
            "detail": self.detail,
        }


def failed_gates(results: list[GateResult]) -> list[str]:
    """Names of the gates that failed; not-applicable gates (passed is None) never fail."""
    return [result.name for result in results if result.passed is not None and not result.passed]


def all_passed(results: list[GateResult]) -> bool:
    """Promotion is blocked by any failed gate; not-applicable gates never block it."""
    return not failed_gates(results)


# --- gates on the whole holdout ---------------------------------------------------------------


def roc_auc_floor(labels: ArrayLike, scores: ArrayLike, minimum: float) -> GateResult:
    """An absolute floor, so a challenger is refused even if the champion has decayed as much."""
    name = "roc_auc_floor"
    label_array = binary_labels(labels)
    score_array = as_scores(scores, len(label_array), "scores")
    problem = why_auc_undefined(label_array, {"challenger": score_array})
    if problem:
        return GateResult(name, False, None, minimum, f"challenger AUC cannot be computed: {problem}")
    auc = roc_auc(label_array, score_array)
    passed = auc >= minimum
    return GateResult(name, passed, auc, minimum, f"challenger AUC {auc:.3f} {'>=' if passed else '<'} floor {minimum:.3f}")


def brier_ceiling(labels: ArrayLike, scores: ArrayLike, maximum: float) -> GateResult:
    """Scores are used as probabilities downstream, so calibration is gated, not just ranking."""
    name = "brier_ceiling"
    label_array = binary_labels(labels)
    score_array = as_scores(scores, len(label_array), "scores")
    if score_array.size == 0:
        return GateResult(name, False, None, maximum, "challenger Brier score cannot be computed: no rows")
    nan_count = int(np.isnan(score_array).sum())
    if nan_count:
        return GateResult(name, False, None, maximum, f"challenger Brier score cannot be computed: {nan_count} NaN scores")
    brier = float(np.mean((score_array - label_array) ** 2))
    passed = brier <= maximum
    comparison = "<=" if passed else ">"
    return GateResult(name, passed, brier, maximum, f"challenger Brier {brier:.4f} {comparison} ceiling {maximum:.4f}")


def auc_non_inferiority(
    labels: ArrayLike,
    challenger_scores: ArrayLike,
    champion_scores: ArrayLike,
    *,
    margin: float,
    n_boot: int = 500,
    seed: int = 0,
) -> GateResult:
    """Promote only if the data rule out the challenger being worse than the champion by `margin`.

    Comparing point estimates would let holdout noise decide; the lower CI bound of the paired
    difference must clear -margin instead.
    """
    name = "auc_non_inferiority"
    label_array = binary_labels(labels)
    challenger = as_scores(challenger_scores, len(label_array), "challenger_scores")
    champion = as_scores(champion_scores, len(label_array), "champion_scores")
    problem = why_auc_undefined(label_array, {"challenger": challenger, "champion": champion})
    if problem:
        return GateResult(name, False, None, -margin, f"AUC difference cannot be computed: {problem}")
    observed, lower, upper = paired_bootstrap_auc_difference(
        label_array, challenger, champion, n_boot=n_boot, confidence=NON_INFERIORITY_CONFIDENCE, seed=seed
    )
    ci = f"{NON_INFERIORITY_CONFIDENCE:.0%} CI {lower:+.4f} to {upper:+.4f}"
    interval = f"AUC difference {observed:+.4f} ({ci}, {n_boot} paired resamples)"
    if math.isnan(lower):
        return GateResult(name, False, observed, -margin, f"{interval}: every resample drew a single class")
    passed = lower > -margin
    verdict = "lower bound above" if passed else "lower bound not above"
    return GateResult(name, passed, observed, -margin, f"{interval}, {verdict} -margin {-margin:+.4f}")


def output_sanity(scores: ArrayLike, *, threshold: float, positive_rate_min: float, positive_rate_max: float) -> list[GateResult]:
    """Cheap checks that catch a broken pipeline (wrong column, unclipped output) before any metric.

    The positive-rate gate's threshold is the bound the rate was compared against decisively:
    the bound it broke, or the nearer one when it is within both.
    """
    score_array = as_scores(scores, None, "scores")
    rows = score_array.size
    if rows == 0:
        return [
            GateResult(gate, False, None, limit, "no scores to check")
            for gate, limit in [("scores_in_unit_interval", 0.0), ("scores_not_nan", 0.0), ("positive_rate_bounds", None)]
        ]
    is_nan = np.isnan(score_array)
    nan_count = int(is_nan.sum())
    present = score_array[~is_nan]
    outside = int(np.count_nonzero((present < 0) | (present > 1)))
    range_text = f" (min {present.min():.4g}, max {present.max():.4g})" if present.size else ""
    outside_text = f"{outside:,} of {present.size:,} non-NaN scores outside [0, 1]{range_text}"
    results = [
        GateResult("scores_in_unit_interval", outside == 0, float(outside), 0.0, outside_text),
        GateResult("scores_not_nan", nan_count == 0, float(nan_count), 0.0, f"{nan_count:,} of {rows:,} scores are NaN"),
    ]
    bounds = f"[{positive_rate_min:.4g}, {positive_rate_max:.4g}]"
    if present.size == 0:
        undefined = f"positive rate undefined: every score is NaN, bounds {bounds}"
        results.append(GateResult("positive_rate_bounds", False, None, None, undefined))
        return results
    rate = float(np.mean(present >= threshold))
    if rate < positive_rate_min:
        passed, bound = False, positive_rate_min
    elif rate > positive_rate_max:
        passed, bound = False, positive_rate_max
    else:
        passed = True
        bound = positive_rate_min if rate - positive_rate_min <= positive_rate_max - rate else positive_rate_max
    where = "within" if passed else "outside"
    rate_text = f"positive rate {rate:.4g} (score >= {threshold:g}) {where} {bounds}"
    results.append(GateResult("positive_rate_bounds", passed, rate, bound, rate_text))
    return results


def not_rolled_back(rolled_back: list[dict[str, Any]], *, version: int | None, sha256: str) -> GateResult:
    """A version someone rolled back from is not promoted again by a retrain, nor a byte-identical copy of it.

    A retrain on the same data with the same seed reproduces the same bytes under a new version
    number, so the artifact's sha256 is matched as well as the version. `rolled_back` holds the
    registry's matching versions (registry.rolled_back_from); force_promote overrides this gate too.
    """
    name = "not_rolled_back"
    candidate = "the dry-run candidate" if version is None else f"v{version}"
    if not rolled_back:
        return GateResult(name, True, 0.0, 0.0, f"{candidate} (sha256 {sha256[:12]}) was never rolled back from")
    found = []
    for row in rolled_back:
        same = "" if row["version"] == version else f" (the same artifact as {candidate}, sha256 {sha256[:12]})"
        found.append(f"v{row['version']}{same} was rolled back from at {row['rolled_back_at']}: {row['rolled_back_reason']!r}")
    return GateResult(
        name, False, float(len(rolled_back)), 0.0,
        "; ".join(found) + ". A retrain does not undo a rollback: promote it with force_promote and a force_reason if it is wanted back",
    )


# --- slices and shadow scores -----------------------------------------------------------------


def slice_checks(
    slices: pd.DataFrame,
    labels: ArrayLike,
    challenger_scores: ArrayLike,
    champion_scores: ArrayLike,
    *,
    margin: float,
    min_rows: int,
    min_positives: int,
) -> list[GateResult]:
    """Per-segment AUC comparison, because an overall gain can hide a collapse on one segment.

    One gate per value of every object, string or category column (nulls are their own slice);
    rows are matched to labels by position. Slices too small to judge are not applicable.
    """
    label_array = binary_labels(labels)
    rows = len(label_array)
    if len(slices) != rows:
        raise ValueError(f"slices has {len(slices)} rows but labels has {rows}")
    challenger = as_scores(challenger_scores, rows, "challenger_scores")
    champion = as_scores(champion_scores, rows, "champion_scores")
    results = []
    for column in slices.columns:
        values = slices[column]
        if not (values.dtype == object or isinstance(values.dtype, (pd.CategoricalDtype, pd.StringDtype))):
            continue
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        members_by_slice = [(str(value), codes == code) for code, value in enumerate(uniques)]
        if (codes < 0).any():
            members_by_slice.append((NULL_SLICE, codes < 0))
        for value, members in members_by_slice:
            where = f"{column}={value}"
            subset = label_array[members], challenger[members], champion[members]
            results.append(_slice_gate(where, *subset, margin=margin, min_rows=min_rows, min_positives=min_positives))
    return results


def _slice_gate(
    where: str,
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    margin: float,
    min_rows: int,
    min_positives: int,
) -> GateResult:
    name = f"slice_auc[{where}]"
    rows, positives = len(labels), int(labels.sum())
    size = f"{rows:,} rows, {positives:,} positives"
    if rows < min_rows:
        return GateResult(name, None, None, None, f"not judged on {where}: {size}, fewer than {min_rows:,} rows")
    if positives < min_positives:
        return GateResult(name, None, None, None, f"not judged on {where}: {size}, fewer than {min_positives:,} positives")
    if positives in (0, rows):
        return GateResult(name, None, None, None, f"not judged on {where}: {size}, only one class")
    problem = why_auc_undefined(labels, {"challenger": challenger, "champion": champion})
    if problem:
        return GateResult(name, False, None, None, f"AUC on {where} cannot be computed: {problem}")
    challenger_auc, champion_auc = roc_auc(labels, challenger), roc_auc(labels, champion)
    required = champion_auc - margin
    passed = challenger_auc >= required
    comparison = ">=" if passed else "<"
    return GateResult(
        name,
        passed,
        challenger_auc,
        required,
        f"challenger AUC {challenger_auc:.3f} {comparison} champion {champion_auc:.3f} - margin {margin:.3f} on {where} ({size})",
    )


def shadow_agreement(
    champion_scores: ArrayLike,
    challenger_scores: ArrayLike,
    *,
    champion_labels: ArrayLike,
    challenger_labels: ArrayLike,
    min_agreement: float,
    min_rows: int,
) -> GateResult:
    """Do the two models make the same decisions on live rows, where labels have not arrived yet?

    Each model's labels are its own decisions, at its own threshold (the two may differ). A NaN score
    on either side counts as a disagreement. The Spearman correlation of the scores goes in the
    detail: it shows whether disagreements are borderline or the rankings differ.
    """
    name = "shadow_agreement"
    champion = as_scores(champion_scores, None, "champion_scores")
    challenger = as_scores(challenger_scores, len(champion), "challenger_scores")
    rows = len(champion)
    champion_decisions, challenger_decisions = binary_labels(champion_labels), binary_labels(challenger_labels)
    if len(champion_decisions) != rows or len(challenger_decisions) != rows:
        raise ValueError(f"{rows} scores per model but {len(champion_decisions)} champion and {len(challenger_decisions)} challenger labels")
    if rows == 0 or rows < min_rows:
        return GateResult(name, None, None, min_agreement, f"not judged: {rows:,} shadow rows, fewer than {max(min_rows, 1):,}")
    both_present = ~np.isnan(champion) & ~np.isnan(challenger)
    agree = both_present & (champion_decisions == challenger_decisions)
    agreement = float(agree.mean())
    correlation = _spearman(champion[both_present], challenger[both_present])
    passed = agreement >= min_agreement
    missing = rows - int(both_present.sum())
    nan_text = f", {missing:,} rows with a NaN score" if missing else ""
    return GateResult(
        name,
        passed,
        agreement,
        min_agreement,
        f"champion and challenger, each at its own threshold, label {agreement:.2%} of {rows:,} shadow rows alike "
        f"({'>=' if passed else '<'} {min_agreement:.2%}); Spearman correlation {correlation:.3f}{nan_text}",
    )


def _spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Rank correlation, nan when either side is constant (rather than scipy's warning)."""
    if first.size < 2:
        return math.nan
    first_ranks, second_ranks = rankdata(first) - (first.size + 1) / 2, rankdata(second) - (first.size + 1) / 2
    spread = math.sqrt(float(first_ranks @ first_ranks) * float(second_ranks @ second_ranks))
    return float(first_ranks @ second_ranks) / spread if spread > 0 else math.nan
