"""Benchmark: false drift incidents on stationary streams, and detection of drifts of known size.

The evaluation of issue 11 found that up to 4% of 1,000-row windows with no drift opened an incident.
This replays its complications on a simulated stream (bench/specs/stationary.yaml): a ~100-category
feature, six columns nulled by the same missing join, heavy ties, a constant column, skew. For each
seed a 200k-row training set gives the reference (build_reference, as registration does), then
windows of 500 ... 100k rows are drawn from the same distribution and judged by the check's own
evaluation (monitoring.drift.evaluate: BH family, debiased effects, per-test power). A window with
any drifted check would open an incident.

It prints, per window size, the false-incident rate with its exact (Clopper-Pearson) 95% upper bound
and the per-check false-positive rate, then the same for windows with one injected drift each (a
0.3 SD shift, a null burst, a 3% new category, a mix change of the 100 categories): the share of
windows that flag the injected check. Targets: false incidents < 1% (upper bound reported), per check
< 0.5%; each drift over its threshold flagged once a window holds enough rows.

    .venv/bin/python bench/bench_drift_incidents.py                 # 4 seeds x 5 sizes x 100 windows (~20 min)
    .venv/bin/python bench/bench_drift_incidents.py --windows 20    # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BATCHWATCH_SPEC_DIRS", str(ROOT / "bench" / "specs"))
sys.path[:0] = [str(ROOT / "include")]

from batchwatch.monitoring import drift  # noqa: E402
from batchwatch.spec import get_spec  # noqa: E402

SIZES = (500, 1_000, 3_000, 10_000, 100_000)
CATEGORIES = np.array([f"k{i:02d}" for i in range(100)])
ZIPF = 1 / np.arange(1, 101) ** 0.8
ZIPF /= ZIPF.sum()


def draw(n: int, rng: np.random.Generator, *, drift_kind: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One window (or the training set) of the stationary stream, optionally with one injected drift; and its scores."""
    x0 = rng.normal(0, 1, n)
    frame = pd.DataFrame(
        {
            "x0": x0 + (0.3 if drift_kind == "shift" else 0.0),
            "x1": rng.normal(5, 2, n),
            "skewed": rng.lognormal(3, 1, n),
            "ties": rng.poisson(1.5, n).astype(float),
            "constant": np.ones(n),
        }
    )
    joined = rng.random(n) >= (0.2 if drift_kind == "nulls" else 0.08)  # one missing join nulls six columns
    for i in range(5):
        frame[f"j{i}"] = np.where(joined, rng.normal(i, 1, n), np.nan)
    frame["j5"] = pd.Series(rng.choice(["p", "q", "r", "s"], n), dtype=object).where(joined, None)
    shares = ZIPF if drift_kind != "mix" else np.roll(ZIPF, 7)
    many = rng.choice(CATEGORIES, n, p=shares).astype(object)
    if drift_kind == "new_category":
        many[rng.random(n) < 0.03] = "brand_new"
    frame["many"] = many
    frame["channel"] = rng.choice(["web", "ios", "android", "store"], n, p=[0.5, 0.2, 0.2, 0.1])
    scores = 1 / (1 + np.exp(-(-3.5 + 0.8 * x0 + rng.normal(0, 0.5, n))))
    return frame, scores


INJECTED = {"shift": "distribution:x0", "nulls": "null_rate:j0", "new_category": "unseen:many", "mix": "distribution:many"}


def upper_bound(hits: int, n: int) -> float:
    """The exact (Clopper-Pearson) two-sided 95% interval's upper end of a rate."""
    return 1.0 if hits == n else float(stats.beta.ppf(0.975, hits + 1, n - hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--windows", type=int, default=100, help="windows per seed and size")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()

    spec = get_spec("stationary")
    started = time.perf_counter()
    false_incidents = {size: [0, 0] for size in args.sizes}
    false_checks = {size: [0, 0] for size in args.sizes}
    insufficient = {size: [0, 0] for size in args.sizes}
    detected = {(kind, size): [0, 0] for kind in INJECTED for size in args.sizes}
    families = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        training, training_scores = draw(200_000, rng)
        reference = drift.build_reference(spec, training, training_scores)
        for size in args.sizes:
            for window in range(args.windows):
                current, scores = draw(size, rng)
                results = drift.evaluate(spec, reference, current, scores, seed=window)
                checks = {r.check: r.verdict for r in results}
                families.setdefault(size, len({r.family or r.check for r in results if r.p_adjusted is not None}))
                false_incidents[size][0] += drift.DRIFTED in checks.values()
                false_incidents[size][1] += 1
                false_checks[size][0] += sum(v == drift.DRIFTED for v in checks.values())
                false_checks[size][1] += len(checks)
                insufficient[size][0] += sum(v == drift.INSUFFICIENT for v in checks.values())
                insufficient[size][1] += len(checks)
            for kind, check in INJECTED.items():
                for window in range(max(args.windows // 10, 5)):
                    current, scores = draw(size, rng, drift_kind=kind)
                    verdicts = {r.check: r.verdict for r in drift.evaluate(spec, reference, current, scores, seed=window)}
                    detected[(kind, size)][0] += verdicts[check] == drift.DRIFTED
                    detected[(kind, size)][1] += 1
        print(f"seed {seed} done in {time.perf_counter() - started:.0f} s", flush=True)

    print("\nNo drift: false incidents per window (any check drifted) and false drifted checks")
    print(f"{'rows':>8} {'windows':>8} {'incidents':>10} {'rate':>7} {'95% UB':>7} {'checks':>8} {'rate':>8} {'95% UB':>7} {'insuff.':>8}")
    worst_incident_ub = worst_check_rate = 0.0
    for size in args.sizes:
        hits, n = false_incidents[size]
        check_hits, check_n = false_checks[size]
        ub, check_ub = upper_bound(hits, n), upper_bound(check_hits, check_n)
        worst_incident_ub, worst_check_rate = max(worst_incident_ub, ub), max(worst_check_rate, check_hits / check_n)
        print(f"{size:>8,} {n:>8} {hits:>10} {hits / n:>7.2%} {ub:>7.2%} {check_n:>8} {check_hits / check_n:>8.3%} {check_ub:>7.2%}"
              f" {insufficient[size][0] / insufficient[size][1]:>8.1%}")
    print("\nInjected drift: share of windows that flag the injected check")
    print(f"{'drift':<28}" + "".join(f"{size:>10,}" for size in args.sizes))
    for kind, check in INJECTED.items():
        print(f"{kind + ' (' + check + ')':<28}" + "".join(f"{detected[(kind, s)][0] / detected[(kind, s)][1]:>10.0%}" for s in args.sizes))
    print(f"\nworst false-incident 95% upper bound / 1% = {worst_incident_ub / 0.01:.2f}; "
          f"worst per-check false rate / 0.5% = {worst_check_rate / 0.005:.2f}  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
