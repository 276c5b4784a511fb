"""Estimate a binary classifier's daily performance with NannyML 0.13's CBPE, from scores alone.

NannyML 0.13.1 pins plotly < 6 and lightgbm < 4.6 and imports statsmodels without declaring it,
so this script runs in its own venv, not in the project's .venv; requirements.txt pins it with the
pandas, scikit-learn and statsmodels of its time (mid-2025). Create that venv from the
repository's root with:

    python3 -m venv .venv-nannyml && .venv-nannyml/bin/pip install -r bench/nannyml/requirements.txt

Then run:

    .venv-nannyml/bin/python bench/nannyml/run_nannyml.py --reference REF.npz --analysis ANA.npz --threshold 0.5

Input: the reference .npz holds `scores` (float64), `labels` (0/1) and `times` (int64 ns since
the epoch, UTC); the analysis .npz holds `scores` and `times` only: CBPE sees no analysis label.
Both are chunked by UTC day (chunk_period="D"); a row is predicted positive when its score >=
--threshold, which precision, recall and f1 need.

Output: ONE JSON line on stdout:

    {"fit_seconds": float,        # CBPE.fit(reference): metric fitting, the calibration check
                                  # and the isotonic fit, and its estimate of the reference
     "estimate_seconds": float,   # CBPE.estimate(analysis)
     "needs_calibration": bool,   # whether CBPE chose to calibrate the scores
     "reference_rows": int, "rows": int,
     "chunks": [{"key": "YYYY-MM-DD", "rows": int,
                 "metrics": {name: {"value": float, "sampling_error": float,
                                    "lower": float, "upper": float}}}]}  # value -/+ 3 sampling errors, clipped

Loading the .npz files and building the DataFrames are not timed. NaN (a metric CBPE could not
estimate) is written as null.
"""

import argparse
import json
import math
import os
import time

# Keep NannyML from sending usage events. Must be set before import.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from nannyml import CBPE  # noqa: E402

METRICS = ["roc_auc", "average_precision", "precision", "recall", "f1"]


def frame(path, threshold):
    """The .npz as CBPE's columns: score, predicted label, timestamp (and label where given)."""
    with np.load(path, allow_pickle=False) as z:
        scores = z["scores"].astype(np.float64)
        data = {
            "score": scores,
            "predicted": (scores >= threshold).astype(np.int64),
            "timestamp": pd.to_datetime(z["times"].astype(np.int64), unit="ns"),
        }
        if "labels" in z.files:
            data["label"] = z["labels"].astype(np.int64)
    return pd.DataFrame(data)


def number(value):
    value = float(value)
    return None if math.isnan(value) else value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True, help="reference .npz (scores, labels, times)")
    p.add_argument("--analysis", required=True, help="analysis .npz (scores, times)")
    p.add_argument("--threshold", required=True, type=float, help="decision threshold: predicted positive when score >= it")
    args = p.parse_args(argv)

    reference = frame(args.reference, args.threshold)
    analysis = frame(args.analysis, args.threshold)

    estimator = CBPE(
        problem_type="classification_binary",
        y_pred_proba="score",
        y_pred="predicted",
        y_true="label",
        timestamp_column_name="timestamp",
        metrics=METRICS,
        chunk_period="D",
    )
    t0 = time.perf_counter()
    estimator.fit(reference)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = estimator.estimate(analysis)
    estimate_seconds = time.perf_counter() - t0

    table = result.filter(period="analysis").to_df()
    chunks = []
    for _, row in table.iterrows():
        metrics = {
            name: {
                "value": number(row[(name, "value")]),
                "sampling_error": number(row[(name, "sampling_error")]),
                "lower": number(row[(name, "lower_confidence_boundary")]),
                "upper": number(row[(name, "upper_confidence_boundary")]),
            }
            for name in METRICS
        }
        rows = int(row[("chunk", "end_index")]) - int(row[("chunk", "start_index")]) + 1
        chunks.append({"key": str(row[("chunk", "key")]), "rows": rows, "metrics": metrics})

    print(
        json.dumps(
            {
                "fit_seconds": fit_seconds,
                "estimate_seconds": estimate_seconds,
                "needs_calibration": bool(estimator.needs_calibration),
                "reference_rows": int(len(reference)),
                "rows": int(len(analysis)),
                "chunks": chunks,
            }
        )
    )


if __name__ == "__main__":
    main()
