"""Time Evidently 0.7's DataDriftPreset on a reference/current pair of .npz files.

Evidently 0.7.23 does not import with pandas 3, so this script runs in its own
venv, not in the project's .venv. Create that venv from /work/main with:

    python3 -m venv .venv-evidently && .venv-evidently/bin/pip install -r bench/evidently/requirements.txt

(``python3`` there is /usr/bin/python3, Python 3.11.) Then run:

    .venv-evidently/bin/python bench/evidently/run_evidently.py --reference REF.npz --current CUR.npz

Input: each .npz holds one array per column. Numeric columns are float64 with
NaN for nulls. Categorical columns are numpy unicode ('U') arrays in which ""
means null; they become object columns with None for null.

Output: ONE JSON line on stdout:

    {"seconds": float,            # wall time of Report.run(...) only
     "dataset_seconds": float,    # wall time of the two Dataset.from_pandas calls
     "peak_rss_mb": float,        # VmHWM from /proc/self/status after the run
     "rss_before_run_mb": float,  # VmRSS just before the run (data already loaded)
     "rows": int,                 # rows in the current data
     "reference_rows": int,
     "columns": {name: {"method": str,      # Evidently's name for the test it used
                        "value": float,     # its drift score (p-value or distance)
                        "threshold": float, # the threshold it compared against
                        "drifted": bool}}}  # Evidently's own verdict (test FAIL)

Loading the .npz files and building the DataFrames are not timed. Column
types are given to Evidently explicitly through a DataDefinition: float
arrays are numerical, unicode arrays are categorical.
"""

import argparse
import json
import os
import sys
import time

# Keep Evidently from trying to send usage telemetry. Must be set before import.
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # value is in kB
    return float("nan")


def load_npz(path):
    """Return (DataFrame, numerical column names, categorical column names)."""
    data, numerical, categorical = {}, [], []
    with np.load(path, allow_pickle=False) as z:
        for name in z.files:
            arr = z[name]
            if arr.dtype.kind == "U":
                col = arr.astype(object)
                col[arr == ""] = None
                data[name] = col
                categorical.append(name)
            else:
                data[name] = arr.astype(np.float64, copy=False)
                numerical.append(name)
    return pd.DataFrame(data), numerical, categorical


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True, help="reference .npz")
    p.add_argument("--current", required=True, help="current .npz")
    args = p.parse_args(argv)

    ref_df, numerical, categorical = load_npz(args.reference)
    cur_df, cur_num, cur_cat = load_npz(args.current)
    if set(cur_num) != set(numerical) or set(cur_cat) != set(categorical):
        sys.exit("reference and current .npz have different columns or column kinds")

    # All column lists given, so Evidently does not infer any column types.
    definition = DataDefinition(
        numerical_columns=numerical,
        categorical_columns=categorical,
        text_columns=[],
        datetime_columns=[],
        unknown_columns=[],
        list_columns=[],
    )

    t0 = time.perf_counter()
    reference = Dataset.from_pandas(ref_df, data_definition=definition)
    current = Dataset.from_pandas(cur_df, data_definition=definition)
    dataset_seconds = time.perf_counter() - t0

    # include_tests=True makes Evidently attach its per-column pass/fail verdict.
    report = Report([DataDriftPreset()], include_tests=True)
    rss_before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    snapshot = report.run(current_data=current, reference_data=reference)
    seconds = time.perf_counter() - t0
    peak_rss_mb = _status_mb("VmHWM")

    result = snapshot.dict()
    # Each ValueDrift metric carries its config (column, method, threshold) and
    # its value (the drift score); its test ("drift") says FAIL when drift is found.
    verdict = {}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params.get("type") == "evidently:metric_v2:ValueDrift":
            verdict[params["column"]] = test["status"] == "FAIL"

    columns = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        name = config["column"]
        columns[name] = {
            "method": config["method"],
            "value": float(metric["value"]),
            "threshold": float(config["threshold"]),
            "drifted": verdict[name],
        }

    print(
        json.dumps(
            {
                "seconds": seconds,
                "dataset_seconds": dataset_seconds,
                "peak_rss_mb": peak_rss_mb,
                "rss_before_run_mb": rss_before,
                "rows": int(len(cur_df)),
                "reference_rows": int(len(ref_df)),
                "columns": columns,
            }
        )
    )


if __name__ == "__main__":
    main()
