"""The drift check: a window of source rows and the champion's scores against the version's reference.

The champion is the version that was champion when the window ended (model_events), so a backfilled
window is judged by the reference of its time, not by today's champion.

The reference profile is built once, when a version is registered, from its training rows and its
validation scores, and stored beside the version; a check never re-reads training data.

Feature drift is measured on every row of the window as it arrived (so a new category or a burst
of nulls shows even when validation would reject those rows); score drift on the rows the
champion can score. A column is *drifted* only when its test is significant after
Benjamini-Hochberg across every test of the check *and* its effect size passes the spec's
threshold; with fewer than `drift.min_rows` values the verdict is `insufficient_data`, and so is
every verdict of a window whose rows span less than `drift.min_window_coverage` of it.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy import stats
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.errors import InvalidArgument
from batchwatch.hashing import DRIFT_SAMPLE
from batchwatch.monitoring.incidents import Finding, update_incident
from batchwatch.monitoring.report import render_drift_report, report_relpath
from batchwatch.scoring import load_champion, score, source_query
from batchwatch.scoring.models import check_features
from batchwatch.serialization import finite_or_none, json_safe
from batchwatch.spec import ModelSpec, quote
from batchwatch.spec.model import Drift as DriftSettings
from batchwatch.stats.drift import (
    PSI_FLOOR,
    CategoricalReference,
    NumericReference,
    benjamini_hochberg,
    compare_categorical,
    compare_numeric,
    proportion_test,
)
from batchwatch.stats.effects import (
    REQUIRED_POWER,
    distance_lower_bound,
    divergence_lower_bound,
    good_turing_unseen_rate,
    null_cohens_h_square,
    null_jensen_shannon,
    null_psi,
    null_wasserstein,
    power_auc,
    power_chi2_jensen_shannon,
    power_ks_shift,
    power_proportion,
    power_unseen,
    unseen_test,
)
from batchwatch.warehouse import lock_unit, read_frame, refused_queries, sample_predicate, utc_timestamp

log = logging.getLogger(__name__)

SCORES = "__score__"
JOINT = "__joint__"
DRIFTED, OK, INSUFFICIENT = "drifted", "ok", "insufficient_data"


class NoReference(registry.RegistryError):
    """The version has no stored reference profile, so there is nothing to compare with."""


class DamagedReference(NoReference):
    """The version's stored reference profile lacks a part the check reads, or holds one it cannot read."""


class BeforeFirstChampion(NoReference):
    """The window ended before the model's first champion and holds rows older than that version's training data end."""


# --- what a check compares -------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreSettings:
    threshold: float


@dataclass(frozen=True)
class FrameSpec:
    """What the check reads of a ModelSpec, for comparing two DataFrames without one (monitoring.offline).

    The attribute names are ModelSpec's, so evaluate() and build_reference() take either.
    """

    drift: DriftSettings
    model_features: list[str]
    categorical_features: list[str]
    scoring: ScoreSettings = ScoreSettings(0.5)

    @property
    def drift_columns(self) -> list[str]:
        return [name for name in self.model_features if name not in self.drift.exclude]


# --- the reference profile --------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceProfile:
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    scores: NumericReference | None  # None for an offline comparison without scores
    positives: int  # validation rows scored at or over the threshold
    scored: int  # validation rows scored
    joint: pd.DataFrame  # a sample of whole feature rows, for the multivariate check
    # The version's decision threshold `positives` were counted at, and current positives are; None in a profile
    # stored before thresholds were (0008): the check then takes the version's (registry.load_version).
    threshold: float | None = None

    def to_rows(self) -> list[dict[str, Any]]:
        rows = [{"column_name": name, "kind": "numeric", "profile": ref.to_dict()} for name, ref in self.numeric.items()]
        rows += [{"column_name": name, "kind": "categorical", "profile": ref.to_dict()} for name, ref in self.categorical.items()]
        rows.append(
            {"column_name": SCORES, "kind": "score",
             "profile": {**self.scores.to_dict(), "positives": self.positives, "scored": self.scored, "threshold": self.threshold}}
        )
        joint = {name: self.joint[name].astype(object).where(self.joint[name].notna(), None).tolist() for name in self.joint}
        rows.append({"column_name": JOINT, "kind": "joint", "profile": {"columns": json_safe(joint)}})
        return rows

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> ReferenceProfile:
        by_kind: dict[str, dict[str, dict]] = {}
        for row in rows:
            by_kind.setdefault(row["kind"], {})[row["column_name"]] = row["profile"]
        score_profile = by_kind["score"][SCORES]
        joint = pd.DataFrame(by_kind["joint"][JOINT]["columns"])
        return cls(
            numeric={name: NumericReference.from_dict(p) for name, p in by_kind.get("numeric", {}).items()},
            categorical={name: CategoricalReference.from_dict(p) for name, p in by_kind.get("categorical", {}).items()},
            scores=NumericReference.from_dict(score_profile),
            positives=int(score_profile["positives"]),
            scored=int(score_profile["scored"]),
            joint=joint,
            threshold=score_profile.get("threshold"),
        )


def build_reference(
    spec: ModelSpec | FrameSpec, features: pd.DataFrame, validation_scores: np.ndarray | None, threshold: float | None = None
) -> ReferenceProfile:
    """Profile every model feature of the training rows and the validation scores (fixed seed: reproducible).

    Positives are counted at `threshold`, the version's decision threshold; without one, at the spec's fixed threshold.
    """
    seed = 0
    if threshold is None:
        threshold = spec.scoring.threshold
        if not isinstance(threshold, float | int):
            raise InvalidArgument("scoring.threshold names a policy, not a number: pass the version's threshold to build_reference")
    size = spec.drift.reference_sample_size
    categorical = set(spec.categorical_features)
    joint_rows = min(len(features), spec.drift.multivariate.sample_rows)
    return ReferenceProfile(
        numeric={
            name: NumericReference.from_values(features[name].to_numpy(dtype=float), size, seed)
            for name in spec.model_features
            if name not in categorical
        },
        categorical={name: CategoricalReference.from_values(features[name]) for name in spec.model_features if name in categorical},
        scores=None if validation_scores is None else NumericReference.from_values(np.asarray(validation_scores, dtype=float), size, seed),
        positives=0 if validation_scores is None else int(np.sum(np.asarray(validation_scores) >= threshold)),
        scored=0 if validation_scores is None else len(validation_scores),
        joint=features.sample(n=joint_rows, random_state=seed).reset_index(drop=True) if joint_rows else features.iloc[:0],
        threshold=float(threshold),
    )


# The fields each kind of stored profile must have: what ReferenceProfile.from_rows reads.
_PROFILE_FIELDS = {
    "numeric": tuple(item.name for item in fields(NumericReference)),
    "categorical": tuple(item.name for item in fields(CategoricalReference)),
    "score": (*(item.name for item in fields(NumericReference)), "positives", "scored"),
    "joint": ("columns",),
}


def load_reference(engine: Engine, model_name: str, version: int) -> ReferenceProfile:
    """The version's stored reference profile: NoReference if it has none, DamagedReference naming what is
    missing or unreadable if it cannot be used (a retry reads the same rows)."""
    query = sa.text("SELECT column_name, kind, profile FROM reference_profiles WHERE model_name = :m AND model_version = :v").columns(
        profile=sa.JSON
    )
    registered = sa.text("SELECT features FROM model_versions WHERE model_name = :m AND version = :v").columns(features=sa.JSON)
    with engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query, {"m": model_name, "v": version}).mappings()]
        features = connection.execute(registered, {"m": model_name, "v": version}).scalar() or []
    if not rows:
        raise NoReference(
            f"{model_name} v{version} has no reference profile; versions registered through batchwatch.training "
            "get one at registration. Register a new version to monitor this model."
        )
    damaged = f"{model_name} v{version}'s reference profile (table reference_profiles) is damaged"
    remedy = f"Register a new version (the weekly retrain, or bin/batchwatch bootstrap {model_name}) to monitor this model."
    missing = _missing_parts(rows, features)
    if missing:
        raise DamagedReference(f"{damaged}: {'; '.join(missing)}. {remedy}")
    try:
        return ReferenceProfile.from_rows(rows)
    except (TypeError, ValueError) as error:
        raise DamagedReference(f"{damaged}: a value cannot be read ({error}). {remedy}") from error


def _missing_parts(rows: list[dict[str, Any]], features: list[str]) -> list[str]:
    """What the drift check reads that the stored rows lack: a feature's profile, the scores, the joint sample, a field."""
    columns = {(row["kind"], row["column_name"]) for row in rows}
    profiled = {column for kind, column in columns if kind in ("numeric", "categorical")}
    missing = [f"no profile of feature {name!r}" for name in features if name not in profiled]
    missing += [f"no {kind} row ({column})" for kind, column in (("score", SCORES), ("joint", JOINT)) if (kind, column) not in columns]
    for row in rows:
        profile, wanted = row["profile"], _PROFILE_FIELDS.get(row["kind"], ())
        absent = [name for name in wanted if name not in profile] if isinstance(profile, dict) else list(wanted)
        if absent:
            missing.append(f"the {row['kind']} profile of {row['column_name']!r} has no {', '.join(map(repr, absent))}")
    return missing


# --- evaluating one window --------------------------------------------------------------------


@dataclass
class TestResult:
    column: str
    test: str
    check: str  # the tests of one check share a verdict: e.g. ks, psi and wasserstein of one column
    statistic: float | None
    p_value: float | None = None
    effect_size: float | None = None  # its 95% lower bound: the raw effect with the no-drift noise bound taken out
    threshold: float | None = None
    n_reference: int | None = None
    n_current: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    p_adjusted: float | None = None
    verdict: str = OK
    # Power against an effect exactly at the check's threshold: below REQUIRED_POWER an "ok" means nothing.
    power: float | None = None
    # A test that cannot reject whatever the data (no nulls on either side, one category) stays out of the
    # BH family (Tarone's rule for discrete tests): it would only make the others' adjusted p larger.
    can_reject: bool = True
    # Tests with one family key count once in BH (e.g. null rates of columns nulled by the same rows).
    family: str | None = None

    def row(self) -> dict[str, Any]:
        details = {**self.details, "power": self.power} if self.power is not None else self.details
        return {
            "column_name": self.column,
            "test": self.test,
            "statistic": finite_or_none(self.statistic),
            "p_value": finite_or_none(self.p_value),
            "p_adjusted": finite_or_none(self.p_adjusted),
            "effect_size": finite_or_none(self.effect_size, keep_inf=True),
            "threshold": self.threshold,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "verdict": self.verdict,
            "details": json_safe(details),
        }


def _bounded(raw: float, noise: float, *, distance: bool, **details: Any) -> tuple[float, dict[str, Any]]:
    """The effect's 95% lower bound (stats.effects) and what to show for it: the raw value and the noise bound."""
    effect = distance_lower_bound(raw, noise) if distance else divergence_lower_bound(raw, noise)
    return effect, {"raw_effect": finite_or_none(raw, keep_inf=True), "noise_bound": noise, **details}


def _numeric_tests(
    name: str, reference: NumericReference, values: np.ndarray, spec: ModelSpec, rng: np.random.Generator, test_prefix: str = ""
) -> list[TestResult]:
    compared = compare_numeric(reference, values)
    check = f"{test_prefix}distribution:{name}"
    sizes = {"n_reference": compared.n_reference, "n_current": compared.n_current}
    power = power_ks_shift(spec.drift.wasserstein_threshold, compared.n_reference, compared.n_current, spec.drift.fdr)
    constant = reference.std == 0 and compared.current_std == 0 and compared.current_mean == reference.mean
    details = {
        "reference_mean": reference.mean,
        "reference_std": reference.std,
        "current_mean": compared.current_mean,
        "current_std": compared.current_std,
    }
    psi_effect, psi_details = _bounded(
        compared.psi, null_psi(reference.counts, compared.n_current, PSI_FLOOR, rng), distance=False,
        current_counts=list(compared.current_counts),
    )
    scale = reference.std if reference.std > 0 else 1.0
    w_effect, w_details = _bounded(
        compared.wasserstein_norm, null_wasserstein(reference.sample, compared.n_current, rng) / scale**2, distance=True,
        normalised_by="reference std",
    )
    common = {"check": check, "power": power, **sizes}
    return [
        TestResult(name, f"{test_prefix}ks", statistic=compared.ks_statistic, p_value=compared.ks_pvalue, details=details,
                   can_reject=not constant, **common),
        TestResult(name, f"{test_prefix}psi", statistic=compared.psi, effect_size=psi_effect, threshold=spec.drift.psi_threshold,
                   details=psi_details, **common),
        TestResult(name, f"{test_prefix}wasserstein", statistic=compared.wasserstein, effect_size=w_effect,
                   threshold=spec.drift.wasserstein_threshold, details=w_details, **common),
    ]


def _categorical_tests(name: str, reference: CategoricalReference, values: pd.Series, spec: ModelSpec, rng: np.random.Generator) -> list[TestResult]:
    settings = spec.drift
    compared = compare_categorical(reference, values)
    sizes = {"n_reference": compared.n_reference, "n_current": compared.n_current}
    counts = np.fromiter(reference.frequencies.values(), dtype=np.float64, count=len(reference.frequencies))
    js_effect, js_details = _bounded(compared.jensen_shannon, null_jensen_shannon(counts, compared.n_current, rng), distance=True)
    power = power_chi2_jensen_shannon(
        settings.jensen_shannon_threshold, len(reference.frequencies), compared.n_reference, compared.n_current, settings.fdr
    )
    expected_unseen = good_turing_unseen_rate(reference.frequencies)
    unseen = round(compared.unseen_share * compared.n_current) if compared.n_current else 0
    check = f"distribution:{name}"
    return [
        TestResult(
            name, "chi2", check, compared.chi2_statistic, p_value=compared.chi2_pvalue, power=power, can_reject=compared.dof > 0, **sizes,
            details={"dof": compared.dof, "current_frequencies": compared.current_frequencies},
        ),
        TestResult(name, "jensen_shannon", check, compared.jensen_shannon, effect_size=js_effect, threshold=settings.jensen_shannon_threshold,
                   power=power, details=js_details, **sizes),
        TestResult(
            name, "unseen_share", f"unseen:{name}", compared.unseen_share, p_value=unseen_test(unseen, compared.n_current, expected_unseen),
            effect_size=divergence_lower_bound(compared.unseen_share, expected_unseen), threshold=settings.unseen_share_threshold,
            power=power_unseen(settings.unseen_share_threshold, expected_unseen, compared.n_current, settings.fdr), **sizes,
            details={"unseen": compared.unseen, "expected_unseen_share": expected_unseen, "raw_effect": finite_or_none(compared.unseen_share)},
        ),
    ]


def _rate_test(name: str, test: str, reference_hits: int, reference_n: int, current_hits: int, current_n: int, threshold: float,
               alpha: float) -> TestResult:
    compared = proportion_test(reference_hits, reference_n, current_hits, current_n)
    effect, details = _bounded(abs(compared.cohens_h), null_cohens_h_square(reference_n, current_n), distance=True)
    pooled = reference_hits + current_hits
    return TestResult(
        name, test, f"{test}:{name}", compared.z, p_value=compared.pvalue, effect_size=effect, threshold=threshold,
        n_reference=reference_n, n_current=current_n, power=power_proportion(threshold, reference_n, current_n, alpha),
        can_reject=0 < pooled < reference_n + current_n,
        details={"reference_rate": compared.reference_rate, "current_rate": compared.current_rate, "cohens_h": compared.cohens_h, **details},
    )


def _codes(values: pd.Series) -> np.ndarray:
    """Category codes as floats, missing values (code -1) as NaN, which the classifier treats as missing."""
    codes = pd.Categorical(values.astype(object)).codes
    return np.where(codes >= 0, codes, np.nan)


def domain_classifier_auc(reference: pd.DataFrame, current: pd.DataFrame, spec: ModelSpec, *, seed: int = 0) -> tuple[float, float, int]:
    """Out-of-fold AUC of a classifier telling reference rows from current rows, its one-sided Mann-Whitney
    p-value (the AUC is U / (n1 n2), so the test of U is the test of AUC > 0.5), and rows per side."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    settings = spec.drift.multivariate
    n = min(len(reference), len(current), settings.sample_rows)
    columns = [name for name in spec.drift_columns if name in reference]
    both = pd.concat([reference[columns].sample(n=n, random_state=seed), current[columns].sample(n=n, random_state=seed)], ignore_index=True)
    categorical = [name in spec.categorical_features for name in columns]
    encoded = pd.DataFrame(
        {name: _codes(both[name]) if is_cat else both[name].to_numpy(dtype=float) for name, is_cat in zip(columns, categorical, strict=True)}
    )
    # Over 255 categories HistGradientBoosting cannot split natively; such codes are used as numbers.
    mask = [is_cat and encoded[name].nunique() < 255 for name, is_cat in zip(columns, categorical, strict=True)]
    labels = np.repeat([0, 1], n)
    classifier = HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, early_stopping=False, categorical_features=mask, random_state=seed)
    folds = StratifiedKFold(settings.folds, shuffle=True, random_state=seed)
    # Ten thousand rows gain nothing from OpenMP threads, and on a busy worker they lose 3-30x.
    with threadpool_limits(1):
        scores = cross_val_predict(classifier, encoded.replace([np.inf, -np.inf], np.nan), labels, cv=folds, method="predict_proba")[:, 1]
    auc = roc_auc_score(labels, scores)
    p_value = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0], alternative="greater").pvalue
    return float(auc), float(p_value), n


def _null_patterns(features: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Columns whose nulls sit on exactly the same rows (one missing join), as column -> a key shared by the group."""
    keys = {}
    for name in columns:
        nulls = features[name].isna().to_numpy()
        if nulls.any():
            keys[name] = "nulls:" + hashlib.blake2b(np.packbits(nulls).tobytes(), digest_size=12).hexdigest()
    return keys


def evaluate(
    spec: ModelSpec | FrameSpec, reference: ReferenceProfile, features: pd.DataFrame, scores: np.ndarray | None, *, seed: int = 0
) -> list[TestResult]:
    """Every test of one check with its verdict: pure, no database. Without scores (on either side) the score tests are left out."""
    settings = spec.drift
    rng = np.random.default_rng(seed)
    results: list[TestResult] = []
    rows = len(features)
    null_patterns = _null_patterns(features, spec.drift_columns)
    for name in spec.drift_columns:
        if name in reference.categorical:
            ref = reference.categorical[name]
            values = features[name]
            results += _categorical_tests(name, ref, values, spec, rng)
            current_nulls = int(values.isna().sum())
        else:
            ref = reference.numeric[name]
            values = features[name].to_numpy(dtype=float)
            results += _numeric_tests(name, ref, values, spec, rng)
            current_nulls = int((~np.isfinite(values)).sum())
        nulls = _rate_test(name, "null_rate", ref.nulls, ref.rows, current_nulls, rows, settings.null_rate_h_threshold, settings.fdr)
        nulls.family = null_patterns.get(name)
        results.append(nulls)

    if reference.scores is not None and scores is not None:
        scores = np.asarray(scores, dtype=float)
        results += _numeric_tests(SCORES, reference.scores, scores, spec, rng, test_prefix="score_")
        positives = int(np.sum(scores >= reference.threshold))
        results.append(
            _rate_test(SCORES, "positive_rate", reference.positives, reference.scored, positives, len(scores),
                       settings.positive_rate_h_threshold, settings.fdr)
        )

    if settings.multivariate.enabled and len(reference.joint):
        if min(len(reference.joint), rows) >= settings.min_rows:
            auc, p_value, n = domain_classifier_auc(reference.joint, features, spec, seed=seed)
        else:
            auc, p_value, n = float("nan"), float("nan"), min(len(reference.joint), rows)
        threshold = settings.multivariate.auc_threshold
        results.append(
            TestResult(
                "__all__", "domain_classifier", "multivariate", auc, p_value=p_value, effect_size=auc, threshold=threshold,
                n_reference=n, n_current=n, power=power_auc(threshold, n, settings.fdr),
                details={"columns": spec.drift_columns, "folds": settings.multivariate.folds},
            )
        )
    _decide(results, settings.min_rows, settings.fdr)
    return results


def simes(pvalues: list[float]) -> float:
    """Simes' combination: one p-value for tests that may say the same thing (valid under positive dependence)."""
    ordered = sorted(pvalues)
    return min(1.0, min(len(ordered) * p / rank for rank, p in enumerate(ordered, start=1)))


def _decide(results: list[TestResult], min_rows: int, fdr: float) -> None:
    """Adjust p-values across the check (BH), then give each check one verdict for all its tests.

    The BH family holds one member per family key, and only tests that were run on enough rows and
    can reject: a test that cannot fire, or a copy of another, would only weaken the rest.
    """
    families: dict[str, list[TestResult]] = {}
    for r in results:
        if r.p_value is None or np.isnan(r.p_value) or (r.n_current or 0) < min_rows or (r.n_reference or 0) < min_rows:
            continue
        if not r.can_reject:
            r.details["bh_family"] = "left out: this test cannot reject on these data"
            continue
        families.setdefault(r.family or f"{r.check}/{r.test}", []).append(r)
    combined = [simes([r.p_value for r in members]) for members in families.values()]
    for members, adjusted in zip(families.values(), benjamini_hochberg(combined), strict=True):
        for result in members:
            result.p_adjusted = float(adjusted)
            if len(members) > 1:
                result.details["bh_family"] = f"counted once with {', '.join(m.column for m in members if m is not result)} (same null rows)"
    for members in _by_check(results).values():
        verdict, reason = _verdict(members, min_rows, fdr)
        for result in members:
            result.verdict = verdict
            if reason:
                result.details["insufficient_data"] = reason


def _verdict(members: list[TestResult], min_rows: int, fdr: float) -> tuple[str, str | None]:
    """Drifted when every test with a p is significant after BH and an effect passes its threshold, whatever
    the rows; otherwise ok only if the check had the power to see a threshold-sized effect."""
    n = min(min(r.n_current or 0, r.n_reference or 0) for r in members)
    if n < min_rows:
        return INSUFFICIENT, f"{n} values, fewer than drift.min_rows ({min_rows})"
    if any(r.statistic is None or np.isnan(r.statistic) for r in members):
        return INSUFFICIENT, "a statistic could not be computed"
    tested = [r for r in members if r.p_value is not None]
    significant = all(r.p_adjusted is not None and r.p_adjusted < fdr for r in tested)
    effects = [r for r in members if r.threshold is not None]
    large = any(r.effect_size >= r.threshold for r in effects) if effects else True
    if significant and large:
        return DRIFTED, None
    power = min((r.power for r in members if r.power is not None), default=None)
    if power is not None and power < REQUIRED_POWER:
        return INSUFFICIENT, f"power {power:.2f} against a threshold-sized effect with {members[0].n_current:,} rows (needs {REQUIRED_POWER:.0%})"
    return OK, None


def describe(results: list[TestResult]) -> list[str]:
    """One line per drifted check, for summaries, logs and alerts."""
    lines = []
    for check, members in _by_check(results).items():
        if members[0].verdict != DRIFTED:
            continue
        parts = []
        for r in members:
            number = r.effect_size if r.effect_size is not None else r.statistic
            text = f"{r.test} {number:.3g}" if number is not None else r.test
            if r.p_adjusted is not None:
                text += f" (p_adj {r.p_adjusted:.2g})"
            parts.append(text)
        lines.append(f"{check}: {', '.join(parts)}")
    return lines


def check_verdicts(results: list[TestResult]) -> dict[str, str]:
    """Each check's one verdict."""
    return {check: members[0].verdict for check, members in _by_check(results).items()}


def window_status(results: list[TestResult]) -> str:
    """The window's status: drifted if any check is, insufficient_data if none could be judged, else ok."""
    verdicts = set(check_verdicts(results).values())
    return DRIFTED if DRIFTED in verdicts else (INSUFFICIENT if verdicts <= {INSUFFICIENT} else OK)


def findings(results: list[TestResult], severity_bands: Sequence[float]) -> dict[str, Finding]:
    """Each drifted check with its severity band, for the incident: its largest effect/threshold ratio placed among
    `drift.severity_bands` (band 0 over the threshold, band i from the i-th multiple on)."""
    found = {}
    for check, members in _by_check(results).items():
        if members[0].verdict != DRIFTED:
            continue
        ratios = [r.effect_size / r.threshold for r in members if r.threshold and r.effect_size is not None and not math.isnan(r.effect_size)]
        ratio = max(ratios, default=None)
        band = 0 if ratio is None else bisect.bisect_right(severity_bands, ratio)
        found[check] = Finding(band, ratio, tuple((r.column, r.test) for r in members))
    return found


def _by_check(results: list[TestResult]) -> dict[str, list[TestResult]]:
    checks: dict[str, list[TestResult]] = {}
    for result in results:
        checks.setdefault(result.check, []).append(result)
    return checks


# --- one window, end to end -------------------------------------------------------------------


def window_of(spec: ModelSpec, window_end: datetime) -> tuple[datetime, datetime]:
    if window_end.utcoffset() is None:
        raise InvalidArgument(f"window end must be timezone-aware, got {window_end!r}")
    window_end = window_end.astimezone(timezone.utc)
    return window_end - timedelta(hours=spec.drift.window_hours), window_end


def check_window(
    engine: Engine, spec: ModelSpec, *, window_end: datetime, run_id: str, report_root: Path | None = None
) -> dict[str, Any]:
    """Run the check for the window ending at `window_end`, store its results and update incidents.

    Rerunning a window replaces its results; an incident opens once and is resolved by the first
    clean window after it. Returns a JSON-able summary, including any incident change. The window's
    HTML report goes under `report_root`, by default the artifact root the page serves reports from.
    """
    started = time.perf_counter()
    start, end = window_of(spec, window_end)
    champion = champion_of_window(engine, spec, start, end)
    reference = load_reference(engine, spec.name, champion.version)
    if reference.threshold is None:
        reference = replace(reference, threshold=champion.threshold)
    raw, in_window, fraction = read_window(engine, spec, start, end)
    first, last = window_span(engine, spec, start, end)
    coverage = span_coverage(first, last, start, end)
    features = build_features(raw, spec)
    valid = validate(raw, spec).valid
    scored = features if len(valid) == len(raw) else features.loc[valid.index]
    scores = score(champion.pipeline, scored)
    seed = int(end.timestamp()) // 3600
    results = evaluate(spec, reference, features, scores, seed=seed)
    partial = partial_window_reason(spec, coverage, first, last)
    if partial is not None:
        for result in results:
            result.verdict = INSUFFICIENT
            result.details["insufficient_data"] = partial

    verdicts = check_verdicts(results)
    status = window_status(results)
    if status == INSUFFICIENT and partial is None:
        partial = f"no check could be judged on the window's {len(raw)} rows, e.g. {results[0].check}: {results[0].details.get('insufficient_data')}"
    drifted = describe(results)
    with engine.begin() as connection:
        lock_unit(connection, "drift", spec.name)  # two windows of one model cannot both open an incident
        connection.execute(sa.text("DELETE FROM drift_results WHERE model_name = :m AND window_end = :e"), {"m": spec.name, "e": end})
        checked_at = datetime.now(timezone.utc)
        connection.execute(
            sa.text(
                "INSERT INTO drift_results (model_name, window_start, window_end, model_version, column_name, test, statistic, p_value,"
                " p_adjusted, effect_size, threshold, n_reference, n_current, verdict, details, run_id, checked_at)"
                " VALUES (:m, :s, :e, :v, :column_name, :test, :statistic, :p_value, :p_adjusted, :effect_size, :threshold,"
                " :n_reference, :n_current, :verdict, :details, :run_id, :checked_at)"
            ).bindparams(sa.bindparam("details", type_=sa.JSON)),
            [{"m": spec.name, "s": start, "e": end, "v": champion.version, "run_id": run_id, "checked_at": checked_at, **r.row()} for r in results],
        )
        incident = update_incident(
            connection, spec.name, champion.version, found={DRIFTED: True, OK: False}.get(status), window_end=end, drifted=drifted,
            findings=findings(results, spec.drift.severity_bands), run_id=run_id,
            unjudged=[check for check, verdict in verdicts.items() if verdict == INSUFFICIENT],
        )

    summary: dict[str, Any] = {
        "model_name": spec.name,
        "model_version": champion.version,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows_in_window": in_window,
        "rows": len(raw),
        "sample_fraction": round(fraction, 6),
        "rows_scored": len(scores),
        "coverage": round(coverage, 4),
        "status": status,
        "reason": partial if status == INSUFFICIENT else None,
        "drifted": drifted,
        "checks": {verdict: list(verdicts.values()).count(verdict) for verdict in (DRIFTED, OK, INSUFFICIENT)},
        "tests": len(results),
        "incident": incident,
        "seconds": round(time.perf_counter() - started, 3),
    }
    page = render_drift_report(summary, [r.row() for r in results], _reference_parts(reference))
    summary["report"] = str(store_report(spec.name, end, page, report_root))
    return summary


def champion_of_window(engine: Engine, spec: ModelSpec, start: datetime, end: datetime) -> registry.LoadedModel:
    """The version that was champion when the window ended (model_events), so a backfill is judged by the reference of
    its time, not by today's champion.

    No version was champion before the first one took office, so that first one judges the windows that
    begin once its training data end (a replay of history after a bootstrap). An earlier window holds rows
    it learned from, and no version's reference can judge it: BeforeFirstChampion. With no champion move
    recorded at all (an alias written by hand, or no champion yet), the alias is all there is.
    """
    version = registry.champion_at(engine, spec.name, end)
    if version is None:
        terms = registry.champion_terms(engine, spec.name)
        if not terms:
            return load_champion(engine, spec, ", so there is no reference to check drift against")
        version = _first_champion_for(engine, spec, terms[0], start, end)
    champion = registry.load_version(engine, spec.name, version, spec=spec)
    check_features(spec, champion)
    return champion


def _first_champion_for(engine: Engine, spec: ModelSpec, first: registry.ChampionTerm, start: datetime, end: datetime) -> int:
    """The first champion's version if its training data end by the window's start; BeforeFirstChampion otherwise."""
    recorded = registry.get_version(engine, spec.name, first.version)["trained_on"].get("end")
    trained_until = None if recorded is None else utc_timestamp(recorded)
    if trained_until is not None and trained_until <= start:
        return first.version
    if trained_until is None:
        why, judged = "its training window is not recorded", f"end at or after {first.since:%Y-%m-%d %H:%M} UTC"
    else:
        why = f"the window begins before its training data end ({trained_until:%Y-%m-%d %H:%M} UTC)"
        judged = f"begin at or after {trained_until:%Y-%m-%d %H:%M} UTC"
    raise BeforeFirstChampion(
        f"{spec.name}: the window [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC ended before the model's first champion, "
        f"v{first.version}, took office on {first.since:%Y-%m-%d %H:%M} UTC, and {why}: no version's reference can judge it. "
        f"Check windows that {judged}."
    )


def store_report(model_name: str, window_end: datetime, page: str, root: Path | None = None) -> Path:
    """Write the window's report under `root` (default: the artifact root), atomically: a rerun of the window replaces it."""
    path = (root or registry.artifact_root()) / report_relpath(model_name, window_end)
    registry.write_artifact(path, page.encode("utf-8"))
    return path


def _reference_parts(reference: ReferenceProfile) -> dict[str, dict[str, Any]]:
    """What the report draws of each column's reference: decile edges and counts with the mean, or category counts."""
    parts: dict[str, dict[str, Any]] = {name: {"frequencies": dict(ref.frequencies)} for name, ref in reference.categorical.items()}
    for name, ref in [*reference.numeric.items(), (SCORES, reference.scores)]:
        parts[name] = {"edges": ref.edges.tolist(), "counts": ref.counts.tolist(), "mean": finite_or_none(ref.mean)}
    return parts


def read_window(engine: Engine, spec: ModelSpec, start: datetime, end: datetime) -> tuple[pd.DataFrame, int, float]:
    """The source rows the check looks at, the number of rows in the window, and the share read.

    Over `drift.max_rows` a hash of the entity key picks about that many rows, the same ones on
    every run, so reruns give the same results and the check's cost stops growing with the window.
    """
    query, columns, text = source_query(spec)
    params = {"start": start, "end": end}
    origin = f"model spec {spec.name}: {spec.source.field}"
    with engine.connect() as connection, refused_queries(origin):
        rows = connection.execute(sa.text(f"SELECT COUNT(*) FROM ({query}) w"), params).scalar_one()
    limit = spec.drift.max_rows
    fraction = 1.0 if limit is None or rows <= limit else limit / rows
    if fraction < 1:
        query += " AND " + sample_predicate(engine, f"s.{quote(spec.source.entity_key)}", fraction, DRIFT_SAMPLE)
    return read_frame(engine, query, params, columns, text, spec.categorical_features, origin), rows, fraction


def window_span(engine: Engine, spec: ModelSpec, start: datetime, end: datetime) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """Event times of the window's first and last row (None, None when it holds none)."""
    event = quote(spec.source.event_time)
    query = sa.text(f"SELECT MIN(s.{event}), MAX(s.{event}) FROM {spec.source.relation} s WHERE s.{event} >= :start AND s.{event} < :end")
    with engine.connect() as connection:
        first, last = connection.execute(query, {"start": start, "end": end}).one()
    if first is None or last is None:
        return None, None
    return utc_timestamp(first), utc_timestamp(last)


def span_coverage(first: datetime | None, last: datetime | None, start: datetime, end: datetime) -> float:
    """Share of [start, end) between the first and the last row: under 1 when data began late or stopped early."""
    if first is None or last is None:
        return 0.0
    return min(1.0, (last - first) / (end - start))


def partial_window_reason(spec: ModelSpec, coverage: float, first: datetime | None, last: datetime | None) -> str | None:
    """Why the window cannot be judged, or None when its rows span enough of it.

    A window holding only some of its hours compares a skewed time-of-day mix with a reference
    built on whole days, and would flag that skew as drift. That the data stopped arriving is the
    volume check's finding, not a drift verdict.
    """
    minimum = spec.drift.min_window_coverage
    if first is None or last is None or coverage >= minimum:
        return None  # an empty window is judged by drift.min_rows
    return (
        f"the window's rows, from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC, span {coverage:.1%} of its "
        f"{spec.drift.window_hours} h, under drift.min_window_coverage "
        f"({minimum:.0%}): the data began late or stopped arriving, so no verdict"
    )
