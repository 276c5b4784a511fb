"""The decision threshold of a version (predicted_label = score >= threshold), chosen on its validation set.

A fixed 0.5 means nothing for a model whose positives are 3% of rows: almost nothing is ever flagged.
The spec's `scoring.threshold` names a policy instead, fitted at training on the out-of-time
validation rows and stored with the version, so every place that labels or judges that version's
scores uses the same number:

- a number: that threshold;
- {alert_rate: r}: flag at most the share r of the validation scores, as many as that allows. The
  threshold is the lowest validation score t with share(score >= t) <= r, i.e. floor(r * n) rows
  flagged when no scores tie there. Tied scores are never split: when a tie at the boundary would
  take the share over r, the whole tie is left unflagged (fewer rows flagged, never more). When not
  even the highest score can be flagged (r * n < 1, or the top score tied over the budget), the
  threshold lies just above the highest validation score, so the validation set flags none;
- {min_precision: p}: the lowest threshold of sklearn's precision_recall_curve whose precision on the
  validation set is at least p. Recall only falls as the threshold rises, so it is the most recall
  at that precision. When no threshold reaches p, training fails: a model that cannot meet the
  precision asked for should not be registered as if it did.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import precision_recall_curve

from batchwatch.errors import PermanentError
from batchwatch.serialization import json_safe
from batchwatch.spec.model import AlertRate, MinPrecision

# Absorbs the rounding of rate * rows (0.29 * 100 = 28.999999999999996), so the budget is the share's whole rows.
_BUDGET_TOLERANCE = 1e-9


class ThresholdUnreachable(PermanentError, ValueError):
    """No threshold reaches scoring.threshold.min_precision on the validation set; retraining on the same rows fails the same way."""


def threshold_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and the share flagged at `threshold`; nan where undefined (nothing flagged, no positives)."""
    label_array = np.asarray(labels, dtype=int)
    flagged = np.asarray(scores, dtype=float) >= threshold
    true_positives = int(np.sum(flagged & (label_array == 1)))
    flagged_count, positives = int(flagged.sum()), int(label_array.sum())
    return {
        "precision": true_positives / flagged_count if flagged_count else math.nan,
        "recall": true_positives / positives if positives else math.nan,
        # 2TP / (2TP + FP + FN), and 2TP + FP + FN = flagged + positives.
        "f1": 2 * true_positives / (flagged_count + positives) if flagged_count + positives else math.nan,
        "positive_rate": float(flagged.mean()) if flagged.size else math.nan,
    }


def alert_rate_threshold(scores: ArrayLike, rate: float) -> float:
    """The lowest score t with share(score >= t) <= rate (see the module's docstring for ties and tiny sets)."""
    ordered = np.sort(np.asarray(scores, dtype=float))
    if ordered.size == 0:
        raise ValueError("no validation scores to choose an alert-rate threshold on")
    budget = min(math.floor(rate * ordered.size + _BUDGET_TOLERANCE), ordered.size)
    if budget == 0:
        return float(np.nextafter(ordered[-1], math.inf))
    candidate = ordered[ordered.size - budget]  # the budget-th highest score
    if ordered.size - np.searchsorted(ordered, candidate, side="left") <= budget:
        return float(candidate)
    # Scores tied with the candidate below it would take the share over the rate: the next higher score, if any.
    above = ordered[np.searchsorted(ordered, candidate, side="right") :]
    return float(above[0]) if above.size else float(np.nextafter(candidate, math.inf))


def min_precision_threshold(labels: ArrayLike, scores: ArrayLike, min_precision: float) -> float:
    """The lowest precision_recall_curve threshold with validation precision >= min_precision; ThresholdUnreachable if none."""
    label_array = np.asarray(labels, dtype=int)
    rows, positives = label_array.size, int(label_array.sum())
    if positives == 0:
        raise ThresholdUnreachable(
            f"scoring.threshold.min_precision: the {rows:,} validation rows hold no positive label, so no threshold has a precision; "
            "train on a window with labelled positives in its most recent rows (retrain.holdout_fraction), or use {alert_rate: ...}"
        )
    precision, recall, thresholds = precision_recall_curve(label_array, np.asarray(scores, dtype=float))
    # The curve's last point (precision 1, recall 0) has no threshold: it is the empty selection.
    precision, recall = precision[:-1], recall[:-1]
    reaching = np.flatnonzero(precision >= min_precision)
    if reaching.size == 0:
        best = int(np.argmax(precision))
        ceiling = math.floor(precision[best] * 1000) / 1000
        raise ThresholdUnreachable(
            f"scoring.threshold.min_precision: no threshold reaches a precision of {min_precision:g} on the {rows:,} validation rows "
            f"({positives:,} positives); the best reached is {precision[best]:.4g} (score >= {thresholds[best]:.4g}, recall {recall[best]:.3g}). "
            f"Lower scoring.threshold.min_precision to {ceiling:g} or below, flag a fixed share with {{alert_rate: ...}} instead, "
            "or improve the model (more labelled data, better features)"
        )
    return float(thresholds[reaching[0]])


def fit_threshold(policy: float | AlertRate | MinPrecision, labels: ArrayLike, scores: ArrayLike) -> dict[str, Any]:
    """The version's threshold by the spec's policy, as stored in model_versions.threshold_policy.

    {policy: fixed | alert_rate | min_precision, target, threshold, validation: {precision, recall, f1,
    positive_rate, rows, positives}}: what the threshold reached on the validation rows (None where undefined).
    """
    label_array = np.asarray(labels, dtype=int)
    score_array = np.asarray(scores, dtype=float)
    if label_array.shape != score_array.shape:
        raise ValueError(f"{label_array.size} labels but {score_array.size} scores")
    if isinstance(policy, AlertRate):
        name, target = "alert_rate", policy.alert_rate
        threshold = alert_rate_threshold(score_array, target)
    elif isinstance(policy, MinPrecision):
        name, target = "min_precision", policy.min_precision
        threshold = min_precision_threshold(label_array, score_array, target)
    else:
        name, target = "fixed", float(policy)
        threshold = target
    validation = {**threshold_metrics(label_array, score_array, threshold), "rows": int(label_array.size), "positives": int(label_array.sum())}
    return {"policy": name, "target": target, "threshold": threshold, "validation": json_safe(validation)}
