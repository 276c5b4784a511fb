"""Benchmark: one drift check of a wide model on PostgreSQL against Evidently's DataDriftPreset.

The model is bench/specs/wide.yaml: 20 numeric features (normal, lognormal, counts; a few with
nulls) and 5 categorical ones. A champion is trained on ~100k generated labelled rows and its
reference profile stored at registration. Then for each size (default 100k and 1M) one UTC day of
current rows goes into `wide_events`, drawn from the same generator with a mean shift on x02 and
x09 and a frequency change on c2, and, each in a fresh process so that peak RSS is its own:

  ours       batchwatch.monitoring.drift.check_window over that day: load the champion and its reference,
             read the rows from PostgreSQL, features, validation, scoring, every statistic, the
             multivariate check, results and incident written and committed
  evidently  Evidently 0.7.23's DataDriftPreset (bench/evidently/run_evidently.py, in its own venv
             .venv-evidently) on the same current rows and the training rows the reference was
             built from, held in memory; its time is Report.run + the two Dataset.from_pandas calls

It prints both, the ratios it is judged by (evidently / ours >= 20 at 1M; peak RSS of ours grows no
faster than the window: RSS at 1M / RSS at 100k <= 10) and the agreement of our stored KS and
Wasserstein values with scipy's on the same inputs (< 1e-9). Where our time goes comes from two more,
untimed runs of the same check: one with wall-clock timers wrapped around the stages check_window
calls, one under cProfile (top cumulative batchwatch functions).

    make bench-drift
    .venv/bin/python bench/bench_drift_check.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "bench" / "specs"
EVIDENTLY_SCRIPT = ROOT / "bench" / "evidently" / "run_evidently.py"
# The command in run_evidently.py's docstring, run from ROOT.

# Spec loading checks that the factory's module can be found, so the paths go in before any import.
os.environ["BATCHWATCH_SPEC_DIRS"] = os.pathsep.join(
    [str(SPECS), *filter(None, os.environ.get("BATCHWATCH_SPEC_DIRS", "").split(os.pathsep))]
)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "include"), str(ROOT / "plugins"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

from _peer_venv import peer_python  # noqa: E402  (bench/ is on the path: the script's own folder)

SERVER = os.environ.get("BATCHWATCH_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "batchwatch_bench_drift"
URL = f"{SERVER}/{DATABASE}"
MODEL = "wide"
RUN_ID = "bench"

TRAIN_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TRAIN_END = datetime(2026, 1, 11, tzinfo=timezone.utc)
TRAIN_ROWS = 100_000
FIRST_WINDOW_DAY = datetime(2026, 2, 1, tzinfo=timezone.utc)

NORMAL = [f"x{i:02d}" for i in range(0, 8)]
LOGNORMAL = [f"x{i:02d}" for i in range(8, 14)]
COUNTS = [f"x{i:02d}" for i in range(14, 20)]
NUMERIC = NORMAL + LOGNORMAL + COUNTS
CATEGORICAL = [f"c{i}" for i in range(5)]
NULL_RATES = {"x03": 0.02, "x07": 0.01, "x10": 0.03, "x16": 0.02, "c1": 0.02, "c3": 0.05}
SHIFTED_NUMERIC = ("x02", "x09")  # x02 mean + 0.5 sd; x09 log-mean + 0.25
SHIFTED_CATEGORICAL = "c2"  # a fifth of the rows moved to its last category
SIDE_BY_SIDE = ("x02", "x09", "x01", "x10")  # two shifted, two not


def window_day(index: int) -> datetime:
    return FIRST_WINDOW_DAY + timedelta(days=index)


def status_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS of this process; ru_maxrss would carry the parent's over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


# --- data ---------------------------------------------------------------------------------------


def _weights(k: int):
    import numpy as np

    w = 1.0 / np.arange(1, k + 1) ** 0.8  # Zipf-like, so categories have visibly different frequencies
    return w / w.sum()


def generate(n: int, start: datetime, *, seed: int, id_offset: int, shifted: bool, span: timedelta = timedelta(days=1)):
    """n source rows of `wide` with event times in [start, start + span), in event-time order."""
    import numpy as np
    import pandas as pd

    from batchwatch.spec import get_spec

    spec = get_spec(MODEL)
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.integers(0, int(span.total_seconds() * 1e6), n))
    frame = {
        "event_id": np.arange(id_offset, id_offset + n, dtype=np.int64),
        "event_time": pd.Timestamp(start) + pd.to_timedelta(offsets, unit="us"),
    }
    for i, name in enumerate(NORMAL):
        loc, scale = (i - 4) * 0.5, 1.0 + 0.1 * i
        if shifted and name in SHIFTED_NUMERIC:
            loc += 0.5 * scale
        frame[name] = rng.normal(loc, scale, n)
    for i, name in enumerate(LOGNORMAL):
        mu, sigma = 0.2 * i - 0.5, 0.5 + 0.1 * i
        if shifted and name in SHIFTED_NUMERIC:
            mu += 0.25
        frame[name] = rng.lognormal(mu, sigma, n)
    for i, name in enumerate(COUNTS):
        frame[name] = rng.poisson(1.0 + i, n).astype(np.int64)
    for name in CATEGORICAL:
        categories = np.array(spec.categories_of(name), dtype=object)
        weights = _weights(len(categories))
        if shifted and name == SHIFTED_CATEGORICAL:
            weights = 0.8 * weights + 0.2 * np.eye(len(categories))[-1]
        frame[name] = categories[rng.choice(len(categories), size=n, p=weights)]
    for name, rate in NULL_RATES.items():
        missing = rng.random(n) < rate
        if name in CATEGORICAL:
            frame[name][missing] = None
        elif name in COUNTS:
            frame[name] = pd.array(frame[name], dtype="Int64")
            frame[name][missing] = pd.NA
        else:
            frame[name][missing] = np.nan
    return pd.DataFrame(frame)


def labels_of(frame, seed: int):
    """A label drawn from a logistic function of a few features."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = {name: frame[name].to_numpy(dtype=float, na_value=np.nan) for name in ("x00", "x01", "x03", "x08", "x11", "x14", "x17")}
    z = (
        -1.5
        + 0.9 * x["x00"]
        - 0.6 * x["x01"]
        + 0.4 * np.nan_to_num(x["x03"])
        + 0.8 * np.log1p(x["x08"])
        - 0.3 * x["x11"]
        + 0.25 * (x["x14"] - 1.0)
        - 0.1 * (x["x17"] - 4.0)
        + 0.8 * (frame["c0"].to_numpy() == "a")
        - 0.5 * (frame["c3"].to_numpy() == "web")
    )
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-z))).astype(np.int16)


def create_tables(engine) -> None:
    import sqlalchemy as sa

    from batchwatch.spec import get_spec

    spec = get_spec(MODEL)
    types = {"numeric": sa.Double, "integer": sa.BigInteger, "categorical": sa.Text}
    metadata = sa.MetaData()
    sa.Table(
        "wide_events",
        metadata,
        sa.Column("event_id", sa.BigInteger, primary_key=True),
        sa.Column("event_time", sa.TIMESTAMP(timezone=True), nullable=False, index=True),
        *(sa.Column(f.name, types[f.type]) for f in spec.features),
    )
    sa.Table(
        "wide_labels",
        metadata,
        sa.Column("entity_key", sa.Text, primary_key=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", sa.TIMESTAMP(timezone=True), nullable=False, index=True),
    )
    metadata.create_all(engine)


def npz_frame(frame, path: Path) -> None:
    """Numeric columns as float64 with NaN, categoricals as unicode with "" for null (run_evidently.py's format)."""
    import numpy as np

    arrays = {name: frame[name].to_numpy(dtype=np.float64, na_value=np.nan) for name in NUMERIC}
    for name in CATEGORICAL:
        values = frame[name].astype(object)
        arrays[name] = values.where(values.notna(), "").to_numpy().astype(str)
    np.savez(path, **arrays)


def read_window(engine, index: int, *, sampled: bool):
    """The window's rows: all of them (what Evidently gets), or exactly those check_window checks."""
    from batchwatch.monitoring.drift import read_window as read_checked
    from batchwatch.spec import get_spec, parse_spec

    spec = get_spec(MODEL)
    if not sampled:
        data = spec.model_dump(by_alias=True)
        data["drift"]["max_rows"] = None
        spec = parse_spec(data)
    day = window_day(index)
    return read_checked(engine, spec, day, day + timedelta(days=1))[0]


def same_values(read_back, generated) -> bool:
    import numpy as np

    ordered = read_back.assign(event_id=read_back["event_id"].astype(np.int64)).sort_values("event_id").reset_index(drop=True)
    if len(ordered) != len(generated) or not np.array_equal(ordered["event_id"].to_numpy(), generated["event_id"].to_numpy()):
        return False
    for name in NUMERIC:
        a = ordered[name].to_numpy(dtype=float, na_value=np.nan)
        b = generated[name].to_numpy(dtype=float, na_value=np.nan)
        if not np.array_equal(a, b, equal_nan=True):
            return False
    for name in CATEGORICAL:
        a = ordered[name].astype(object).where(ordered[name].notna(), None).tolist()
        b = generated[name].astype(object).where(generated[name].notna(), None).tolist()
        if a != b:
            return False
    return True


def prepare(sizes: list[int], workdir: Path) -> dict:
    """Database, tables, training rows, champion, the current windows; the reference rows as .npz."""
    import pandas as pd
    from bench_database import fresh_warehouse

    from batchwatch import registry
    from batchwatch.modeling.training import LABEL, bootstrap_champion, holdout_start, read_labelled
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import load_frame

    started = time.perf_counter()
    engine = fresh_warehouse(SERVER, DATABASE)
    create_tables(engine)
    spec = get_spec(MODEL)

    history = generate(TRAIN_ROWS, TRAIN_START, seed=1, id_offset=1, shifted=False, span=TRAIN_END - TRAIN_START)
    labels = pd.DataFrame(
        {"entity_key": history["event_id"].astype(str), "label": labels_of(history, seed=2), "observed_at": history["event_time"]}
    )
    load_frame(engine, "wide_events", history)
    load_frame(engine, "wide_labels", labels)
    generated = {}
    for index, size in enumerate(sizes):
        generated[size] = generate(size, window_day(index), seed=100 + index, id_offset=(index + 1) * 100_000_000, shifted=True)
        load_frame(engine, "wide_events", generated[size])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    loaded = time.perf_counter() - started

    version = bootstrap_champion(engine, spec, start=TRAIN_START, end=TRAIN_END)
    # Evidently's reference: the rows train() fitted on, the labelled window up to its holdout.
    labelled = read_labelled(engine, spec, TRAIN_START, TRAIN_END, TRAIN_END)
    split = holdout_start(spec, labelled)
    reference_rows = labelled.iloc[:split]
    npz_frame(reference_rows, workdir / "reference.npz")
    validation = registry.get_version(engine, MODEL, version)["metrics"]["validation"]
    print(
        f"prepared {DATABASE}: {len(labelled):,} labelled rows (label rate {labelled[LABEL].mean():.3f}), "
        f"{sum(sizes):,} window rows loaded in {loaded:.0f} s; champion v{version}, "
        f"validation ROC AUC {validation['roc_auc']:.3f}; "
        f"reference = {split:,} training rows ({spec.drift.reference_sample_size:,}-value sample per numeric column)",
        flush=True,
    )
    engine.dispose()
    return {"version": version, "generated": generated, "reference_rows": split}


# --- the measured paths, each in its own process ---------------------------------------------


def worker_check(index: int) -> None:
    from batchwatch.monitoring.drift import check_window
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    engine = make_engine(URL)
    spec = get_spec(MODEL)
    rss_before = status_mb("VmRSS")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    summary = check_window(engine, spec, window_end=window_day(index) + timedelta(days=1), run_id=RUN_ID)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": status_mb("VmHWM"),
                "rss_before_mb": rss_before,
                "load_before": load,
                "summary": summary,
            }
        )
    )


def worker_profile(index: int, path: str) -> None:
    """The same call under cProfile, untimed: where the time goes, not how much there is."""
    import cProfile

    from batchwatch.monitoring.drift import check_window
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    engine = make_engine(URL)
    spec = get_spec(MODEL)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    check_window(engine, spec, window_end=window_day(index) + timedelta(days=1), run_id=RUN_ID + "-profile")
    profiler.disable()
    seconds = time.perf_counter() - started
    profiler.dump_stats(path)
    print(json.dumps({"seconds": seconds}))


STAGES = (  # (label, module attribute wrapped, nested inside evaluate)
    ("load the champion (registry.load_alias)", "batchwatch.registry:load_alias", False),
    ("load the reference (drift.load_reference)", "batchwatch.monitoring.drift:load_reference", False),
    ("read the rows (drift.read_window: count, then COPY of the sample)", "batchwatch.monitoring.drift:read_window", False),
    ("build_features", "batchwatch.monitoring.drift:build_features", False),
    ("validate", "batchwatch.monitoring.drift:validate", False),
    ("score: the pipeline's encoder (its transform)", None, False),  # wrapped on the loaded champion's pipeline
    ("score: the pipeline's estimator (its predict_proba)", None, False),
    ("evaluate: KS/PSI/Wasserstein (20 features + score)", "batchwatch.monitoring.drift:_numeric_tests", True),
    ("evaluate: chi2/JS/unseen (5 categoricals)", "batchwatch.monitoring.drift:_categorical_tests", True),
    ("evaluate: null-rate and positive-rate tests", "batchwatch.monitoring.drift:_rate_test", True),
    ("evaluate: domain classifier (multivariate)", "batchwatch.monitoring.drift:domain_classifier_auc", True),
    ("evaluate: the rest (null counts, BH, verdicts)", "batchwatch.monitoring.drift:evaluate", False),
)


def worker_stages(index: int) -> None:
    """check_window with wall-clock timers around what it calls (no profiler, so no profiler overhead).

    Module attributes are wrapped in this process only; nothing in batchwatch changes. The results
    write is timed from the advisory lock at the start of its transaction to the return.
    """
    import importlib

    from batchwatch import registry
    from batchwatch.monitoring import drift
    from batchwatch.spec import get_spec
    from batchwatch.warehouse import make_engine

    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    peak_after: dict[str, float] = {}
    marks: dict[str, float] = {}

    def wrap(label: str, target: str) -> None:
        module_name, name = target.split(":")
        wrap_bound(label, importlib.import_module(module_name), name)

    def wrap_bound(label: str, owner, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started
                calls[label] = calls.get(label, 0) + 1
                peak_after[label] = status_mb("VmHWM")

        setattr(owner, name, timed)

    for label, target, _ in STAGES:
        if target:
            wrap(label, target)
    load_alias = registry.load_alias  # already timed

    def load_and_wrap(*args, **kwargs):
        # On the champion's own step objects: the domain classifier's estimators are not counted here.
        loaded = load_alias(*args, **kwargs)
        steps = loaded.pipeline.steps
        for (label, _, _), (step, method) in zip(STAGES[5:7], ((steps[0][1], "transform"), (steps[-1][1], "predict_proba")), strict=True):
            wrap_bound(label, step, method)
        return loaded

    registry.load_alias = load_and_wrap
    original_lock = drift.lock_unit

    def lock(*args, **kwargs):
        marks["write"] = time.perf_counter()
        return original_lock(*args, **kwargs)

    drift.lock_unit = lock
    engine = make_engine(URL)
    spec = get_spec(MODEL)
    started = time.perf_counter()
    drift.check_window(engine, spec, window_end=window_day(index) + timedelta(days=1), run_id=RUN_ID + "-stages")
    total = time.perf_counter() - started
    write = time.perf_counter() - marks["write"]
    nested = sum(spent.get(label, 0.0) for label, _, inner in STAGES if inner)
    spent["evaluate: the rest (null counts, BH, verdicts)"] -= nested
    rows = [(label, spent.get(label, 0.0), peak_after.get(label)) for label, _, _ in STAGES]
    rows.append(("write results + incident (one transaction)", write, status_mb("VmHWM")))
    rows.append(("the rest (features.loc[valid.index], summary)", total - sum(s for _, s, _ in rows), None))
    print(json.dumps({"seconds": total, "stages": rows, "calls": calls}))


def run_json(command: list[str], what: str) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_ours(index: int) -> dict:
    return run_json([sys.executable, __file__, "--worker", "check", "--day", str(index)], "our drift check")


def stages_ours(index: int) -> dict:
    return run_json([sys.executable, __file__, "--worker", "stages", "--day", str(index)], "stage-timed drift check")


def profile_ours(index: int, path: Path) -> dict:
    return run_json(
        [sys.executable, __file__, "--worker", "profile", "--day", str(index), "--profile-out", str(path)], "profiled drift check"
    )


def measure_evidently(python: Path, reference: Path, current: Path) -> dict:
    env_python = [str(python), str(EVIDENTLY_SCRIPT), "--reference", str(reference), "--current", str(current)]
    return run_json(env_python, "Evidently")


# --- checking our values against scipy's ------------------------------------------------------


def stored_results(engine, index: int):
    import pandas as pd
    import sqlalchemy as sa

    query = sa.text(
        "SELECT column_name, test, statistic, p_value, effect_size, n_reference, n_current, verdict"
        " FROM drift_results WHERE model_name = :m AND window_end = :e"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": MODEL, "e": window_day(index) + timedelta(days=1)}).mappings().all()
    return pd.DataFrame([dict(r) for r in rows]).set_index(["column_name", "test"])


def scipy_agreement(engine, version: int, index: int, current) -> dict:
    """Max |ours - scipy| of KS statistic, KS p-value and Wasserstein over every numeric column."""
    import numpy as np
    from scipy import stats

    from batchwatch.data.features import build_features
    from batchwatch.monitoring.drift import load_reference
    from batchwatch.spec import get_spec
    from batchwatch.stats.drift import ks_method

    spec = get_spec(MODEL)
    reference = load_reference(engine, MODEL, version)
    stored = stored_results(engine, index)
    features = build_features(current, spec)
    worst = {"ks_statistic": (0.0, ""), "ks_pvalue": (0.0, ""), "wasserstein": (0.0, "")}
    mismatched_n = []
    for name in spec.drift_columns:
        if name in spec.categorical_features:
            continue
        values = features[name].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        sample = reference.numeric[name].sample
        ks = stats.ks_2samp(sample, finite, method=ks_method(len(sample), len(finite)))
        wasserstein = stats.wasserstein_distance(finite, sample)
        ours_ks, ours_w = stored.loc[(name, "ks")], stored.loc[(name, "wasserstein")]
        if ours_ks["n_current"] != len(finite) or ours_ks["n_reference"] != len(sample):
            mismatched_n.append(name)
        for key, ours, theirs in (
            ("ks_statistic", ours_ks["statistic"], ks.statistic),
            ("ks_pvalue", ours_ks["p_value"], ks.pvalue),
            ("wasserstein", ours_w["statistic"], wasserstein),
        ):
            ours = float("nan") if ours is None else float(ours)
            diff = abs(ours - float(theirs)) if not (np.isnan(ours) and np.isnan(theirs)) else 0.0
            if np.isnan(diff) or diff > worst[key][0]:
                worst[key] = (diff, name)
    return {"worst": worst, "mismatched_n": mismatched_n, "stored": stored}


# --- the profile, as a stage breakdown --------------------------------------------------------


def _label(key: tuple) -> str:
    filename, line, function = key
    if "/include/batchwatch/" in filename:
        return f"{Path(filename).stem}.{function}"
    if filename == "~":
        return function
    marker = "site-packages/"
    short = filename.split(marker, 1)[1] if marker in filename else Path(filename).name
    return f"{short}:{line}({function})"


def _is_ours(key: tuple) -> bool:
    return "/include/batchwatch/" in key[0]


def our_functions(profiles: dict, deepest: int, top: int = 25) -> list[tuple[str, int, dict[int, float]]]:
    """(label, calls, {size: cumulative seconds}) of the batchwatch functions, largest first at the largest size."""
    entries = sorted(
        ((key, value) for key, value in profiles[deepest].stats.items() if _is_ours(key)), key=lambda item: -item[1][3]
    )
    return [
        (_label(key), value[1], {size: profiles[size].stats.get(key, (0, 0, 0, 0.0))[3] for size in profiles})
        for key, value in entries[:top]
    ]


# --- orchestration ----------------------------------------------------------------------------


def evidently_seconds(result: dict) -> float:
    """Evidently's comparable time: Report.run plus building its two Datasets."""
    return result["seconds"] + result["dataset_seconds"]


def print_ours(size: int, result: dict) -> None:
    summary, checks = result["summary"], result["summary"]["checks"]
    print(
        f"{size:>9,} rows  ours       {result['seconds']:7.2f} s   peak RSS {result['peak_rss_mb']:6.0f} MB "
        f"(before the call {result['rss_before_mb']:.0f} MB; 1-min load average {result['load_before']:.1f})   "
        f"rows {summary['rows']:,}, scored {summary['rows_scored']:,}; status {summary['status']}; "
        f"checks drifted/ok/insufficient {checks['drifted']}/{checks['ok']}/{checks['insufficient_data']}",
        flush=True,
    )
    for line in summary["drifted"]:
        print(f"{'':>16}drifted  {line}")


def print_evidently(size: int, result: dict, load: float, ours_seconds: float) -> None:
    drifted = sorted(name for name, column in result["columns"].items() if column["drifted"])
    print(
        f"{size:>9,} rows  evidently  {evidently_seconds(result):7.2f} s   peak RSS {result['peak_rss_mb']:6.0f} MB "
        f"(Report.run {result['seconds']:.2f} s + Dataset.from_pandas {result['dataset_seconds']:.2f} s; "
        f"{result['reference_rows']:,} reference rows; 1-min load average {load:.1f})   "
        f"drifted columns: {', '.join(drifted) or 'none'}",
        flush=True,
    )
    print(f"{size:>9,} rows  evidently / ours = {evidently_seconds(result) / ours_seconds:.1f}   (target >= 20 at 1,000,000)")


def print_values(sizes: list[int], agreement: dict, theirs: dict) -> None:
    print("\nOur KS / Wasserstein (as stored in drift_results) against scipy on the same inputs, every numeric column:")
    for size in sizes:
        worst = agreement[size]["worst"]
        text = ", ".join(f"max |d {key}| = {diff:.2e} ({column or '-'})" for key, (diff, column) in worst.items())
        mismatch = agreement[size]["mismatched_n"]
        print(f"{size:>9,} rows  {text}" + (f"; n differs for {mismatch}" if mismatch else ""))
    if not theirs:
        return
    print(
        "\nNormalised Wasserstein side by side. Ours: effect_size of the wasserstein row = W(current, the stored 10k-value"
        "\nreference sample) / std of all training rows. Evidently's 'Wasserstein distance (normed)': W(current, all training"
        "\nrows) / their std. Different reference data, so they agree approximately, not exactly:"
    )
    print(f"{'rows':>9}  {'column':<7}{'shifted':<9}{'ours':>9}{'evidently':>11}{'ours drifted':>14}{'evidently drifted':>19}")
    for size in sizes:
        stored = agreement[size]["stored"]
        for name in SIDE_BY_SIDE:
            row = stored.loc[(name, "wasserstein")]
            column = theirs[size]["columns"][name]
            shifted = "yes" if name in SHIFTED_NUMERIC else "no"
            method = "" if column["method"] == "Wasserstein distance (normed)" else f"  (Evidently used {column['method']})"
            print(
                f"{size:>9,}  {name:<7}{shifted:<9}{row['effect_size']:>9.4f}{column['value']:>11.4f}"
                f"{row['verdict'] == 'drifted'!s:>14}{column['drifted']!s:>19}{method}"
            )


def print_time_breakdown(sizes: list[int], stages: dict, profiles: dict, profiled_seconds: dict) -> None:
    if stages:
        totals = ", ".join(f"{stages[s]['seconds']:.2f} s at {s:,}" for s in sizes)
        print(
            "\nWhere our time goes: the same check in another process (untimed), with wall-clock timers wrapped around what"
            "\ncheck_window calls; seconds per stage, and the process's peak RSS when the stage ended. Totals: " + totals
        )
        print(f"{'':<54}" + "".join(f"{f'{size:,} rows':>16}{'peak MB':>9}" for size in sizes))
        for position, (label, _, _) in enumerate(stages[sizes[-1]]["stages"]):
            cells = ""
            for size in sizes:
                _, seconds, peak = stages[size]["stages"][position]
                cells += f"{seconds:>16.3f}" + (f"{peak:>9.0f}" if peak is not None else f"{'':>9}")
            print(f"{label:<54}{cells}")
    if profiles:
        totals = ", ".join(f"{profiled_seconds[s]:.2f} s at {s:,}" for s in sizes)
        print(
            "\nTop cumulative entries of batchwatch functions under cProfile (another untimed run; the profiler slows"
            f"\nPython-level calls). Profiled wall time: {totals}; seconds, all calls:"
        )
        print(f"{'':<48}{'calls':>7}" + "".join(f"{f'{size:,} rows':>16}" for size in sizes))
        for label, calls, values in our_functions(profiles, max(profiles)):
            print(f"{label[:48]:<48}{calls:>7}" + "".join(f"{values[size]:>16.3f}" for size in sizes))


def print_summary(sizes: list[int], ours: dict, theirs: dict, agreement: dict) -> None:
    import math

    print("\nSummary")
    print(f"{'rows':>10}{'ours s':>9}{'ours RSS MB':>13}{'evidently s':>13}{'evidently RSS MB':>18}{'evidently/ours':>16}")
    for size in sizes:
        line = f"{size:>10,}{ours[size]['seconds']:>9.2f}{ours[size]['peak_rss_mb']:>13.0f}"
        if size in theirs:
            seconds = evidently_seconds(theirs[size])
            line += f"{seconds:>13.2f}{theirs[size]['peak_rss_mb']:>18.0f}{seconds / ours[size]['seconds']:>16.1f}"
        print(line)
    largest, smallest = sizes[-1], sizes[0]
    if largest in theirs:
        ratio = evidently_seconds(theirs[largest]) / ours[largest]["seconds"]
        note = "" if largest == 1_000_000 else " (the target is defined at 1,000,000 rows)"
        print(f"evidently / ours at {largest:,} rows = {ratio:.1f}   (target >= 20: {'met' if ratio >= 20 else 'MISSED'}){note}")
    if largest != smallest:
        big, small = ours[largest], ours[smallest]
        rss_ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
        limit = largest / smallest
        verdict = "met" if rss_ratio <= limit else "MISSED"
        print(
            f"peak RSS of ours at {largest:,} / at {smallest:,} = {rss_ratio:.2f}   "
            f"(target <= {limit:g}, the window's growth: {verdict})"
        )
        grown = (big["peak_rss_mb"] - big["rss_before_mb"]) / max(small["peak_rss_mb"] - small["rss_before_mb"], 1e-9)
        print(
            f"  (context: RSS growth during the call, peak minus RSS before it, at {largest:,} / at {smallest:,} = {grown:.2f})"
        )
    diffs = [diff for size in sizes for diff, _ in agreement[size]["worst"].values()]
    worst = math.nan if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)
    verdict = "met" if worst < 1e-9 else "MISSED"  # False for NaN
    print(
        f"KS / Wasserstein vs scipy: max abs difference over all sizes, columns and values = {worst:.2e}   "
        f"(target < 1e-9: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="current rows per window")
    parser.add_argument("--skip-evidently", action="store_true", help="only our check (no ratio)")
    parser.add_argument("--skip-profile", action="store_true", help="no stage breakdown and no cProfile run")
    parser.add_argument(
        "--workdir", type=Path, help="keep artifacts and .npz files here (default: a temp dir, removed at the end)"
    )
    parser.add_argument("--worker", choices=("check", "stages", "profile"), help=argparse.SUPPRESS)
    parser.add_argument("--day", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "check":
        worker_check(args.day)
        return
    if args.worker == "stages":
        worker_stages(args.day)
        return
    if args.worker == "profile":
        worker_profile(args.day, args.profile_out)
        return

    import pstats

    from batchwatch.warehouse import make_engine

    sizes = sorted(set(args.sizes))
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="bench-drift-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["BATCHWATCH_ARTIFACT_ROOT"] = str(workdir / "artifacts")
    try:
        evidently_python = None if args.skip_evidently else peer_python("evidently")
        prepared = prepare(sizes, workdir)
        engine = make_engine(URL)
        ours: dict[int, dict] = {}
        theirs: dict[int, dict] = {}
        agreement: dict[int, dict] = {}
        stages: dict[int, dict] = {}
        profiles: dict[int, pstats.Stats] = {}
        profiled_seconds: dict[int, float] = {}
        for index, size in enumerate(sizes):
            ours[size] = measure_ours(index)
            print_ours(size, ours[size])
            # Evidently gets the whole window; the value check gets exactly the rows check_window compared.
            current = read_window(engine, index, sampled=False)
            same = same_values(current, prepared["generated"][size])
            print(f"{'':>16}window read back from PostgreSQL == generated rows: {same}")
            agreement[size] = scipy_agreement(engine, prepared["version"], index, read_window(engine, index, sampled=True))
            if evidently_python is not None:
                current_npz = workdir / f"current-{index}.npz"
                npz_frame(current, current_npz)
                del current
                load = os.getloadavg()[0]
                theirs[size] = measure_evidently(evidently_python, workdir / "reference.npz", current_npz)
                current_npz.unlink()
                print_evidently(size, theirs[size], load, ours[size]["seconds"])
            else:
                del current
            if not args.skip_profile:
                stages[size] = stages_ours(index)
                path = workdir / f"profile-{index}.prof"
                profiled_seconds[size] = profile_ours(index, path)["seconds"]
                profiles[size] = pstats.Stats(str(path))
        engine.dispose()

        print_values(sizes, agreement, theirs)
        print_time_breakdown(sizes, stages, profiles, profiled_seconds)
        print_summary(sizes, ours, theirs, agreement)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
