"""Outcome rows as the daily performance and volume check would write them, for the page tests to insert.

The figures are computed with scikit-learn from simulated days of calibrated scores and labels, so
the page shows numbers a real check could have produced: realized ones from the labels, estimated
ones from the scores alone (each row weighted as positive by its score and negative by the rest,
as a confidence-based estimate does), percentile-bootstrap intervals on both, and the estimation
error once a day matures. From DRIFT_FROM on, part of the labels stop following the scores: the
realized AUC falls while the estimate cannot see it. The volume days follow a weekly rhythm with a
low day, a missing day and a late one, judged against the same weekday of the trailing weeks.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from batchwatch.warehouse import schema

DAYS = [date(2026, 10, 1) + timedelta(days=i) for i in range(21)]
DELAY_DAYS = 4
MATURED = DAYS[:-DELAY_DAYS]
COVERAGE_WHILE_MATURING = (0.92, 0.7, 0.41, 0.12)  # the last four days, oldest first
DRIFT_FROM = DAYS[12]
SHADOW_DAYS = DAYS[-7:]
ROWS = 3_000
BOOTSTRAP = 10  # few replicates: the intervals only need to be plausible, and each costs ~25 scikit-learn calls
CHAMPION, SHADOW, OLD = 2, 3, 1
THRESHOLDS = {CHAMPION: 0.187, SHADOW: 0.21}
POLICIES = {
    CHAMPION: {"policy": "alert_rate", "target": 0.01, "threshold": 0.187,
               "validation": {"precision": 0.41, "recall": 0.38, "positive_rate": 0.01}},
    SHADOW: {"policy": "min_precision", "target": 0.5, "threshold": 0.21, "validation": {"precision": 0.5, "recall": 0.22}},
}
COMPUTED_AT = datetime(2026, 10, 22, 6, 5, tzinfo=timezone.utc)

VOLUME_DAYS = [date(2026, 9, 17) + timedelta(days=i) for i in range(35)]
LOW_DAY, MISSING_DAY, LATE_DAY = VOLUME_DAYS[24], VOLUME_DAYS[29], VOLUME_DAYS[32]
MAX_ROBUST_Z, MIN_RELATIVE_CHANGE, MAX_LATE_SHARE, TRAILING_WEEKS, MIN_HISTORY = 4.0, 0.2, 0.01, 4, 2  # the spec's defaults


def simulated_day(version: int, ds: date, drift_from: date = DRIFT_FROM) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a calibrated model and the labels they end up with; from `drift_from` a growing share ignores the score."""
    rng = np.random.default_rng([version, ds.toordinal()])
    scores = rng.beta(0.7, 11.0, ROWS)
    ignored = min(max((ds - drift_from).days + 1, 0) * 0.12, 0.7)
    chance = np.where(rng.random(ROWS) < ignored, scores.mean(), scores)
    return scores, (rng.random(ROWS) < chance).astype(int)


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray) -> float:
    """10 equal-width bins on the raw score, weighted by bin size."""
    bins = np.minimum((scores * 10).astype(int), 9)
    return sum(np.mean(bins == b) * abs(labels[bins == b].mean() - scores[bins == b].mean()) for b in np.unique(bins))


def realized_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """What the day's labels show; precision, recall and f1 from the counts (the tests compare them with scikit-learn's)."""
    flagged = scores >= threshold
    true_positives = labels[flagged].sum()
    precision = true_positives / flagged.sum() if flagged.any() else 0.0
    recall = true_positives / labels.sum()
    return {
        "roc_auc": roc_auc_score(labels, scores),
        "average_precision": average_precision_score(labels, scores),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "brier": brier_score_loss(labels, scores),
        "ece": expected_calibration_error(scores, labels),
        "positive_rate": flagged.mean(),
        "label_rate": labels.mean(),
    }


def estimated_metrics(scores: np.ndarray, threshold: float) -> dict[str, float]:
    """What calibrated scores imply before any label: each row is a positive with weight p and a negative with 1 - p."""
    both = np.concatenate([np.ones_like(scores), np.zeros_like(scores)])
    weights = np.concatenate([scores, 1 - scores])
    flagged = scores >= threshold
    true_positives = scores[flagged].sum()
    precision = true_positives / flagged.sum() if flagged.any() else 0.0
    recall = true_positives / scores.sum()
    return {
        "roc_auc": roc_auc_score(both, np.concatenate([scores, scores]), sample_weight=weights),
        "average_precision": average_precision_score(both, np.concatenate([scores, scores]), sample_weight=weights),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "brier": float(np.mean(scores * (1 - scores))),
        "label_rate": scores.mean(),
    }


def _with_intervals(compute: Any, threshold: float, version: int, ds: date, *arrays: np.ndarray) -> dict[str, tuple[float, float, float]]:
    point = compute(*arrays, threshold)
    rng = np.random.default_rng([version, ds.toordinal(), 1])
    replicates = [compute(*(array[sample] for array in arrays), threshold) for sample in (rng.integers(0, ROWS, ROWS) for _ in range(BOOTSTRAP))]
    return {
        metric: (float(value), *(float(q) for q in np.quantile([replicate[metric] for replicate in replicates], [0.025, 0.975])))
        for metric, value in point.items()
    }


@cache
def performance_rows(
    model_name: str = "fraud", champion: int = CHAMPION, shadow: int | None = SHADOW, shift: int = 0, champion_threshold: float | None = None
) -> tuple[dict[str, Any], ...]:
    """Every performance_daily row of the champion (all DAYS) and the shadow (SHADOW_DAYS), `shift` days later; a version
    with no policy here scores at `champion_threshold` (a real champion's stored threshold) or the spec's fixed 0.5."""
    rows = []
    computed_at = COMPUTED_AT + timedelta(days=shift)
    for version, role, days in ((champion, "champion", DAYS), (shadow, "shadow", SHADOW_DAYS if shadow else [])):
        threshold = THRESHOLDS.get(version, champion_threshold if role == "champion" and champion_threshold is not None else 0.5)
        for position, day in enumerate(days, start=len(DAYS) - len(days)):
            ds = day + timedelta(days=shift)
            scores, labels = simulated_day(version, ds, DRIFT_FROM + timedelta(days=shift))
            matured = position < len(MATURED)
            labelled = ROWS if matured else round(ROWS * COVERAGE_WHILE_MATURING[position - len(MATURED)])
            common = {"model_name": model_name, "ds": ds, "model_version": version, "role": role, "threshold": threshold,
                      "rows_scored": ROWS, "rows_labelled": labelled, "positives": int(labels[:labelled].sum()),
                      "labels_as_of": computed_at, "computed_at": computed_at, "run_id": f"scheduled__{ds + timedelta(days=1):%F}"}
            estimated = _with_intervals(estimated_metrics, threshold, version, ds, scores)
            realized = _with_intervals(realized_metrics, threshold, version, ds, scores, labels) if matured else {}
            for metric, (value, lower, upper) in estimated.items():
                error = value - realized[metric][0] if metric in realized else None
                rows.append({**common, "source": "estimated", "metric": metric, "value": value, "lower": lower, "upper": upper,
                             "estimation_error": error})
            for metric, (value, lower, upper) in realized.items():
                rows.append({**common, "source": "realized", "metric": metric, "value": value, "lower": lower, "upper": upper,
                             "estimation_error": None})
            if matured:
                rows.append({**common, "source": "realized", "metric": "label_coverage", "value": 1.0, "lower": None, "upper": None,
                             "estimation_error": None})
    return tuple(rows)


def volume_rows(model_name: str = "fraud", shift: int = 0) -> list[dict[str, Any]]:
    """volume_daily as the check judges it, `shift` days later: the same weekday of the trailing weeks, robust z and
    relative change, late rows."""
    rng = np.random.default_rng(12)
    rhythm = {4: 1.25, 5: 1.3, 6: 0.8}  # Friday, Saturday busier, Sunday quieter
    days = [day + timedelta(days=shift) for day in VOLUME_DAYS]
    counts = {ds: int(3_000 * rhythm.get(ds.weekday(), 1.0) + rng.normal(0, 60)) for ds in days}
    low, missing, late_day = (day + timedelta(days=shift) for day in (LOW_DAY, MISSING_DAY, LATE_DAY))
    counts[low], counts[missing] = int(counts[low] * 0.4), 0
    rows = []
    for ds in days:
        history = [{"ds": str(ds - timedelta(weeks=w)), "rows": counts[ds - timedelta(weeks=w)]}
                   for w in range(1, TRAILING_WEEKS + 1) if ds - timedelta(weeks=w) in counts and counts[ds - timedelta(weeks=w)] > 0]
        n = counts[ds]
        late = 0 if n == 0 else int(n * (0.03 if ds == late_day else 0.002))
        judged = len(history) >= MIN_HISTORY
        median = float(np.median([h["rows"] for h in history])) if judged else None
        mad = float(np.median([abs(h["rows"] - median) for h in history])) if judged else None
        z = (n - median) / (1.4826 * mad) if judged and mad else None
        change = (n - median) / median if judged else None
        if not judged:
            verdict, reason = "insufficient_history", f"{len(history)} of the {MIN_HISTORY} same weekdays needed have rows"
        elif n == 0:
            verdict, reason = "missing", f"no rows by the deadline; {median:,.0f} expected"
        elif z is not None and abs(z) > MAX_ROBUST_Z and abs(change) >= MIN_RELATIVE_CHANGE:
            verdict = "low" if n < median else "high"
            reason = f"{n:,} rows against {median:,.0f} expected (robust z {z:+.1f}, {change:+.0%})"
        elif late / n > MAX_LATE_SHARE:
            verdict, reason = "late", f"{late:,} rows ({late / n:.1%}) arrived after the nightly run scored the day"
        else:
            verdict, reason = "ok", f"{n:,} rows against {median:,.0f} expected"
        rows.append({"model_name": model_name, "ds": ds, "rows": n, "expected_rows": median, "mad": mad, "robust_z": z,
                     "relative_change": change, "history": history, "rows_at_scoring": n - late if n else None,
                     "late_rows": late if n else None, "late_share": late / n if n else None, "verdict": verdict, "reason": reason,
                     "checked_at": datetime.combine(ds + timedelta(days=1), datetime.min.time(), timezone.utc) + timedelta(hours=6),
                     "run_id": f"scheduled__{ds + timedelta(days=1):%F}"})
    return rows


def _version(model_name: str, version: int, threshold: float | None, policy: dict | None, created: datetime) -> dict[str, Any]:
    return {"model_name": model_name, "version": version, "artifact_uri": f"file:///artifacts/{model_name}/{version}.joblib",
            "sha256": f"{version:064d}", "metrics": {"validation": {"roc_auc": 0.86, "brier": 0.04}}, "params": {}, "features": [],
            "pipeline_steps": [], "trained_on": {"rows": 42_000}, "parent_version": version - 1 if version > 1 else None,
            "created_at": created, "threshold": threshold, "threshold_policy": policy, "calibration": None}


def _alert(model_name: str, kind: str, status: str, opened: datetime, drifted: list[str], run_id: str) -> dict[str, Any]:
    return {"model_name": model_name, "kind": kind, "status": status, "opened_window_end": opened, "last_drifted_window_end": opened,
            "resolved_window_end": opened + timedelta(days=2) if status == "resolved" else None, "model_version": CHAMPION,
            "drifted": drifted, "summary": "; ".join(drifted), "opened_at": opened + timedelta(hours=6),
            "resolved_at": opened + timedelta(days=2, hours=6) if status == "resolved" else None, "open_notified_at": None,
            "resolved_notified_at": None, "run_id": run_id, "checks": None}


def insert_outcomes(
    engine: sa.Engine, model_name: str, champion: int = CHAMPION, shadow: int | None = SHADOW, shift: int = 0, champion_threshold: float | None = None
) -> None:
    """The model's performance and volume rows, as the daily check would have written them."""
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.performance_daily), list(performance_rows(model_name, champion, shadow, shift, champion_threshold)))
        connection.execute(sa.insert(schema.volume_daily), volume_rows(model_name, shift))


def fill(engine: sa.Engine) -> dict[str, Any]:
    """fraud: versions v1 (stored before thresholds), v2 champion, v3 in shadow, their outcomes, volume and one incident
    of each kind; churn: a champion stored before thresholds and nothing else."""
    created = datetime(2026, 9, 1, tzinfo=timezone.utc)
    drift_opened = datetime(2026, 10, 9, tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.model_versions), [
            _version("fraud", OLD, None, None, created),
            _version("fraud", CHAMPION, THRESHOLDS[CHAMPION], POLICIES[CHAMPION], created + timedelta(days=7)),
            _version("fraud", SHADOW, THRESHOLDS[SHADOW], POLICIES[SHADOW], created + timedelta(days=35)),
            _version("churn", 1, None, None, created),
        ])
        connection.execute(sa.insert(schema.model_aliases), [
            {"model_name": "fraud", "alias": "champion", "version": CHAMPION, "updated_at": created + timedelta(days=7)},
            {"model_name": "fraud", "alias": "challenger", "version": SHADOW, "updated_at": created + timedelta(days=35)},
            {"model_name": "churn", "alias": "champion", "version": 1, "updated_at": created},
        ])
    insert_outcomes(engine, "fraud")
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.alerts), [
            _alert("fraud", "drift", "resolved", drift_opened, ["null_rate:country 0.48 (threshold 0.1)"], "scheduled__2026-10-09T00"),
            _alert("fraud", "volume", "resolved", datetime(2026, 10, 12, tzinfo=timezone.utc), [volume_rows()[24]["reason"]],
                   "scheduled__2026-10-12"),
            _alert("fraud", "performance", "open", datetime(2026, 10, 18, tzinfo=timezone.utc),
                   ["roc_auc realized 0.70 [0.66, 0.74] on 2026-10-17: more than 0.05 below validation 0.86"], "scheduled__2026-10-18"),
        ])
    return {}
