"""Benchmark: our label-free daily performance estimate against NannyML's CBPE, judged by the labels that came later.

The demo fraud model is trained (batchwatch.modeling.training.train) on 28 simulated days; its
out-of-time validation scores and labels are the reference both estimators calibrate on. Then 30
more days are simulated with covariate shift but no concept drift: from analysis day 5 amounts are
1.65x larger (mean_shift), from day 12 txn_count_30d spreads twice as wide (variance_change), from
day 20 a new country value on 30% of rows (new_category; the benchmark's spec allows unknown
countries, so those rows are scored, not rejected). The labels still follow the same rule, so a
calibrated score stays calibrated and both estimators' assumption holds. Each day's valid rows are
scored, and per day:

  realized   scikit-learn on the day's scores and labels
  nannyml    NannyML 0.13.1's CBPE (bench/nannyml/run_nannyml.py, in its own venv .venv-nannyml, made
             from bench/nannyml/requirements.txt if missing), fitted on the reference, estimating all
             analysis days at once, chunked by UTC day, without their labels; its time is CBPE.fit +
             CBPE.estimate inside that process (not the interpreter start nor the file loading)
  ours       batchwatch.stats.calibration.fit_calibration on the reference, then per day
             ScoreGroups.from_rows + estimated on the calibrated scores, without the labels

It prints the day-by-day ROC AUC and the figures it is judged by: MAE(ours vs realized) /
MAE(nannyml vs realized) <= 1, and |ours - nannyml| within 0.01 (max and mean over days); the
same MAEs for average precision, precision, recall and F1 at the model's threshold; how often the
realized value falls in each estimator's interval (ours: its confidence interval; NannyML's: value
-/+ 3 sampling errors); and the wall time of each estimator.

    make bench-performance
    .venv/bin/python bench/bench_performance_estimate.py --rows-per-day 30000 --reference-days 28 --analysis-days 30
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

NANNYML_VENV = ROOT / ".venv-nannyml"
NANNYML_SCRIPT = ROOT / "bench" / "nannyml" / "run_nannyml.py"
# The command in run_nannyml.py's docstring, run from ROOT.
NANNYML_SETUP = "python3 -m venv .venv-nannyml && .venv-nannyml/bin/pip install -r bench/nannyml/requirements.txt"

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
METRICS = ("roc_auc", "average_precision", "precision", "recall", "f1")
# (kind, feature, magnitude, analysis day it starts on, label in the table)
SHIFTS = (
    ("mean_shift", "amount", 1.0, 5, "amount"),
    ("variance_change", "txn_count_30d", 1.0, 12, "txn"),
    ("new_category", "country", 0.3, 20, "country"),
)
NO_FIGURE = float("nan")


@dataclass(frozen=True)
class Day:
    start: datetime
    scores: np.ndarray
    labels: np.ndarray
    times: np.ndarray  # event times, int64 ns since the epoch (UTC)


@dataclass(frozen=True)
class Prepared:
    threshold: float
    reference: Day  # the model's out-of-time validation rows
    validation_auc: float  # as train() measured it, to check the reference is those rows
    days: list[Day]


# --- data ---------------------------------------------------------------------------------------


def bench_spec():
    """The demo fraud spec, with unknown countries scored (as nulls) instead of rejected, so new_category shifts what is scored."""
    from batchwatch.spec import get_spec, parse_spec

    data = get_spec("fraud").model_dump(by_alias=True)
    for feature in data["features"]:
        if feature["name"] == "country":
            feature["unknown_categories"] = "allow"
    return parse_spec(data)


def scenarios(analysis_start: datetime):
    from batchwatch.demo.simulate import Scenario

    return tuple(Scenario(kind, analysis_start + timedelta(days=day), feature, magnitude) for kind, feature, magnitude, day, _ in SHIFTS)


def labelled_frame(batch):
    """Transactions with their label in LABEL, oldest first: the columns read_labelled returns once every label has matured."""
    from batchwatch.modeling.training import LABEL

    labels = batch.outcomes.set_index("entity_id")["label"]
    frame = batch.transactions.assign(transaction_id=batch.transactions["transaction_id"].astype(str))
    frame[LABEL] = labels.loc[frame["transaction_id"]].to_numpy()
    return frame.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)


def scored_day(pipeline, spec, rows, start: datetime) -> Day:
    """The valid rows of `rows` scored as the nightly job scores them, with their labels and event times."""
    from batchwatch.data.features import build_features
    from batchwatch.modeling.training import LABEL, valid_rows
    from batchwatch.scoring import score

    valid = valid_rows(spec, rows)
    return Day(
        start=start,
        scores=score(pipeline, build_features(valid, spec)),
        labels=valid[LABEL].to_numpy(dtype=np.int8),
        times=valid[spec.source.event_time].to_numpy(dtype="datetime64[ns]").astype(np.int64),
    )


def prepare(rows_per_day: int, reference_days: int, analysis_days: int, seed: int) -> Prepared:
    from batchwatch.demo.simulate import simulate
    from batchwatch.modeling.training import LABEL, holdout_start, train, valid_rows

    spec = bench_spec()
    analysis_start = START + timedelta(days=reference_days)
    started = time.perf_counter()
    batch = simulate(START, analysis_start + timedelta(days=analysis_days), rows_per_day=rows_per_day, seed=seed,
                     scenarios=scenarios(analysis_start))
    labelled = labelled_frame(batch)
    del batch
    event_time = labelled[spec.source.event_time]
    history = labelled[event_time < analysis_start]
    trained = train(spec, history)
    valid = valid_rows(spec, history)
    reference = scored_day(trained.pipeline, spec, valid.iloc[holdout_start(spec, valid):], START)
    days = []
    for index in range(analysis_days):
        day_start = analysis_start + timedelta(days=index)
        rows = labelled[(event_time >= day_start) & (event_time < day_start + timedelta(days=1))]
        days.append(scored_day(trained.pipeline, spec, rows, day_start))
    print(
        f"simulated {len(labelled):,} rows ({rows_per_day:,} a day, {reference_days} reference days, {analysis_days} analysis days, "
        f"{labelled[LABEL].mean():.2%} positive), trained and scored in {time.perf_counter() - started:.0f} s; "
        f"reference = the model's {len(reference.scores):,} validation rows, AUC {trained.metrics['validation']['roc_auc']:.4f}",
        flush=True,
    )
    return Prepared(trained.threshold, reference, trained.metrics["validation"]["roc_auc"], days)


def realized(day: Day, threshold: float) -> dict[str, float]:
    """The day's figures from its labels, by scikit-learn."""
    from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

    predicted = day.scores >= threshold
    return {
        "roc_auc": roc_auc_score(day.labels, day.scores),
        "average_precision": average_precision_score(day.labels, day.scores),
        "precision": precision_score(day.labels, predicted, zero_division=0),
        "recall": recall_score(day.labels, predicted, zero_division=0),
        "f1": f1_score(day.labels, predicted, zero_division=0),
    }


# --- the estimators -----------------------------------------------------------------------------


def ensure_nannyml() -> Path:
    python = NANNYML_VENV / "bin" / "python"
    if not python.exists():
        print(f"{NANNYML_VENV} is missing; creating it: {NANNYML_SETUP}", flush=True)
        subprocess.run(NANNYML_SETUP, shell=True, check=True, cwd=ROOT)
    return python


def estimate_nannyml(python: Path, prepared: Prepared, workdir: Path) -> dict:
    """CBPE in its own venv: scores, labels and times of the reference, scores and times of the analysis days, as .npz."""
    reference, analysis = workdir / "reference.npz", workdir / "analysis.npz"
    np.savez(reference, scores=prepared.reference.scores, labels=prepared.reference.labels, times=prepared.reference.times)
    np.savez(analysis, scores=np.concatenate([d.scores for d in prepared.days]), times=np.concatenate([d.times for d in prepared.days]))
    command = [str(python), str(NANNYML_SCRIPT), "--reference", str(reference), "--analysis", str(analysis), "--threshold", str(prepared.threshold)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"NannyML failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def estimate_ours(prepared: Prepared) -> tuple[list[dict[str, tuple[float, float, float]]], float]:
    """Our estimate per day as {metric: (value, lower, upper)}, and the seconds it took, calibration fit included.

    Each day's scores go in without their labels, as on a day whose labels have not matured.
    """
    from batchwatch.stats.calibration import fit_calibration
    from batchwatch.stats.performance import ScoreGroups, estimated

    started = time.perf_counter()
    calibration = fit_calibration(prepared.reference.labels, prepared.reference.scores, folds=5, seed=0)
    figures = []
    for day in prepared.days:
        groups = ScoreGroups.from_rows(day.scores, np.full(len(day.scores), np.nan))
        figures.append(estimated(groups, calibration.apply(groups.scores), prepared.threshold))
    seconds = time.perf_counter() - started
    return [{name: (f.value, f.lower, f.upper) for name, f in day.items() if name in METRICS} for day in figures], seconds


# --- figures ------------------------------------------------------------------------------------


def nannyml_by_day(result: dict, prepared: Prepared) -> list[dict[str, tuple[float, float, float]]]:
    """NannyML's chunks in the order of the days, as {metric: (value, lower, upper)}; NaN where it has none."""
    chunks = {chunk["key"]: chunk for chunk in result["chunks"]}
    out = []
    for day in prepared.days:
        chunk = chunks.get(day.start.date().isoformat())
        if chunk is None or chunk["rows"] != len(day.scores):
            raise SystemExit(f"NannyML's chunk for {day.start.date()} is not that day's {len(day.scores):,} rows: {chunk and chunk['rows']}")
        out.append({
            name: tuple(NO_FIGURE if figure[key] is None else figure[key] for key in ("value", "lower", "upper"))
            for name, figure in chunk["metrics"].items()
        })
    return out


def column(by_day: list[dict[str, tuple[float, float, float]]], metric: str, position: int = 0) -> np.ndarray:
    return np.array([day.get(metric, (NO_FIGURE,) * 3)[position] for day in by_day], dtype=float)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a - b))) if len(a) and len(b) else NO_FIGURE


def coverage(by_day, metric: str, truth: np.ndarray) -> float:
    """Share of the days with an interval whose realized value lies in it."""
    lower, upper = column(by_day, metric, 1), column(by_day, metric, 2)
    defined = ~np.isnan(lower) & ~np.isnan(upper)
    return float(np.mean((lower <= truth) & (truth <= upper), where=defined)) if defined.any() else NO_FIGURE


def shifts_on(day: int) -> str:
    return "+".join(label for _, _, _, first, label in SHIFTS if day >= first) or "-"


def cell(value: float, width: int = 9, digits: int = 4) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def print_days(prepared: Prepared, truth: dict[str, np.ndarray], theirs, ours) -> None:
    realized_auc, nannyml_auc, ours_auc = truth["roc_auc"], column(theirs, "roc_auc"), column(ours, "roc_auc")
    print("\nROC AUC per day (estimates from scores only; realized from the labels):")
    print(f"{'day':<12}{'rows':>8}{'positives':>10}  {'shifted':<19}{'realized':>9}{'nannyml':>9}{'ours':>9}"
          f"{'nml-real':>10}{'ours-real':>10}{'ours-nml':>10}")
    for index, day in enumerate(prepared.days):
        print(
            f"{day.start.date().isoformat():<12}{len(day.scores):>8,}{int(day.labels.sum()):>10,}  {shifts_on(index):<19}"
            f"{cell(realized_auc[index])}{cell(nannyml_auc[index])}{cell(ours_auc[index])}"
            f"{cell(nannyml_auc[index] - realized_auc[index], 10, 4)}{cell(ours_auc[index] - realized_auc[index], 10, 4)}"
            f"{cell(ours_auc[index] - nannyml_auc[index], 10, 4)}"
        )


def print_summary(truth: dict[str, np.ndarray], theirs, ours, nannyml_result: dict, ours_seconds: float) -> None:
    print("\nSummary over the analysis days")
    print(f"{'metric':<19}{'MAE nannyml':>12}{'MAE ours':>10}{'ours/nannyml':>14}{'max |ours-nml|':>16}{'mean |ours-nml|':>17}"
          f"{'in interval: nml':>18}{'ours':>6}")
    for metric in METRICS:
        nml, mine = column(theirs, metric), column(ours, metric)
        error_nml, error_ours = mean_abs(nml, truth[metric]), mean_abs(mine, truth[metric])
        gap = np.abs(mine - nml) if len(mine) else np.full(0, NO_FIGURE)
        print(
            f"{metric:<19}{cell(error_nml, 12)}{cell(error_ours, 10)}{cell(error_ours / error_nml, 14, 2)}"
            f"{cell(float(gap.max()) if len(gap) else NO_FIGURE, 16)}{cell(float(gap.mean()) if len(gap) else NO_FIGURE, 17)}"
            f"{cell(coverage(theirs, metric, truth[metric]), 18, 2)}{cell(coverage(ours, metric, truth[metric]), 6, 2)}"
        )
    nml_seconds = nannyml_result["fit_seconds"] + nannyml_result["estimate_seconds"]
    print(
        f"\nwall time  nannyml {nml_seconds:.2f} s (CBPE.fit {nannyml_result['fit_seconds']:.2f} s on {nannyml_result['reference_rows']:,} "
        f"reference rows + CBPE.estimate {nannyml_result['estimate_seconds']:.2f} s on {nannyml_result['rows']:,} rows; "
        f"it {'did' if nannyml_result['needs_calibration'] else 'did NOT'} calibrate the scores)"
    )
    print(f"wall time  ours {ours_seconds:.2f} s (fit_calibration + every day's ScoreGroups.from_rows, apply and estimated); "
          f"nannyml / ours = {nml_seconds / ours_seconds:.1f}")
    nml, mine, real = column(theirs, "roc_auc"), column(ours, "roc_auc"), truth["roc_auc"]
    ratio = mean_abs(mine, real) / mean_abs(nml, real)
    worst = float(np.max(np.abs(mine - nml)))
    print(f"ROC AUC: MAE ours / MAE nannyml = {ratio:.3f}   (target <= 1: {'met' if ratio <= 1 else 'MISSED'})")
    print(f"ROC AUC: max |ours - nannyml| = {worst:.4f}, mean {float(np.mean(np.abs(mine - nml))):.4f}   "
          f"(target within 0.01: {'met' if worst <= 0.01 else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-day", type=int, default=30_000)
    parser.add_argument("--reference-days", type=int, default=28)
    parser.add_argument("--analysis-days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, help="keep the .npz files NannyML reads here (default: a temporary folder, removed)")
    args = parser.parse_args()

    nannyml_python = ensure_nannyml()
    prepared = prepare(args.rows_per_day, args.reference_days, args.analysis_days, args.seed)
    from sklearn.metrics import roc_auc_score

    reference_auc = roc_auc_score(prepared.reference.labels, prepared.reference.scores)
    if abs(reference_auc - prepared.validation_auc) > 1e-12:
        raise SystemExit(f"the reference is not the model's validation rows: AUC {reference_auc} != {prepared.validation_auc}")
    print(f"decision threshold {prepared.threshold:g}: the reference has {np.mean(prepared.reference.scores >= prepared.threshold):.2%} "
          f"of rows at or above it", flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-performance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        nannyml_result = estimate_nannyml(nannyml_python, prepared, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    theirs = nannyml_by_day(nannyml_result, prepared)
    ours, ours_seconds = estimate_ours(prepared)

    figures = [realized(day, prepared.threshold) for day in prepared.days]
    truth = {metric: np.array([day[metric] for day in figures]) for metric in METRICS}
    print_days(prepared, truth, theirs, ours)
    print_summary(truth, theirs, ours, nannyml_result, ours_seconds)


if __name__ == "__main__":
    main()
