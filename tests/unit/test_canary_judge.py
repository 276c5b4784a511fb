"""One look at a canary step, judged from its rows: the test each metric gets, the power check, stops and the step clock."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from batchwatch.promotion.canary import judge_step
from batchwatch.promotion.releases import Release
from batchwatch.spec import get_spec

DAY = date(2026, 10, 1)


def spec_with(**canary):
    spec = get_spec("fraud")
    release = spec.release.model_copy(update={"canary": spec.release.canary.model_copy(update=canary)})
    return spec.model_copy(update={"release": release})


def release_of(spec, step: int = 0) -> Release:
    return Release(1, spec.name, "canary", 2, 1, "running", spec.release.model_dump(mode="json"), "canary-arm:fraud:1", step, DAY, None,
                   datetime(2026, 10, 1, tzinfo=timezone.utc), None, "test")


def arms(rows: int, *, treatment_signal: float = 0.5, treatment_flags: float = 0.4, share: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Both models' rows of one step: the champion's signal is 0.5; the challenger's `treatment_signal` (higher ranks better)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.05).astype(float)
    noise = rng.normal(0, 0.15, rows)
    champion = np.clip(0.1 + 0.5 * labels + noise, 0, 1)
    challenger = np.clip(0.1 + treatment_signal * labels + rng.normal(0, 0.15, rows), 0, 1)
    arm = np.where(rng.random(rows) < share, "treatment", "control")
    ids = np.arange(rows).astype(str)
    common = {"ds": DAY, "entity_id": ids, "arm": arm, "label": labels, "matured": True}
    return pd.concat([
        pd.DataFrame({**common, "role": "champion", "score": champion, "predicted_label": (champion >= 0.4).astype(int)}),
        pd.DataFrame({**common, "role": "shadow", "score": challenger, "predicted_label": (challenger >= treatment_flags).astype(int)}),
    ], ignore_index=True)


NO_REJECTS = {"control": 0, "treatment": 0}


def primary(look):
    return next(test for test in look.tests if test.role == "primary")


def test_the_arms_auc_is_delong_on_the_served_rows_and_an_equal_challenger_passes():
    spec = spec_with(margin=0.02)
    frame = arms(60_000)
    look = judge_step(spec, release_of(spec), frame, NO_REJECTS, days_in_step=3, decided_on=DAY)
    test = primary(look).comparison
    served = frame[((frame.role == "champion") & (frame.arm == "control")) | ((frame.role == "shadow") & (frame.arm == "treatment"))]
    for arm, value in (("control", test.control), ("treatment", test.treatment)):
        rows = served[served.arm == arm]
        assert value == pytest.approx(roc_auc_score(rows.label, rows.score))
    assert test.test == "delong_unpaired" and look.verdict == "advance" and look.power >= spec.release.canary.power


def test_paired_design_compares_both_models_on_every_row():
    spec = spec_with(design="paired", margin=0.02)
    frame = arms(20_000, treatment_signal=0.6)
    look = judge_step(spec, release_of(spec), frame, NO_REJECTS, days_in_step=3, decided_on=DAY)
    test = primary(look).comparison
    champion = frame[frame.role == "champion"]
    assert test.test == "delong_paired" and test.n_control == test.n_treatment == 20_000
    assert test.control == pytest.approx(roc_auc_score(champion.label, champion.score))
    assert primary(look).outcome == "superior"


def test_brier_is_welch_on_the_squared_errors():
    spec = spec_with(primary_metric="brier", margin=0.01)
    frame = arms(40_000)
    look = judge_step(spec, release_of(spec), frame, NO_REJECTS, days_in_step=3, decided_on=DAY)
    test = primary(look).comparison
    served = frame[((frame.role == "champion") & (frame.arm == "control")) | ((frame.role == "shadow") & (frame.arm == "treatment"))]
    errors = {arm: ((rows.score - rows.label) ** 2).to_numpy() for arm, rows in served.groupby("arm")}
    expected = scipy_stats.ttest_ind(errors["treatment"], errors["control"], equal_var=False)
    assert test.test == "welch_t" and test.statistic == pytest.approx(expected.statistic) and test.p_value == pytest.approx(expected.pvalue)


def test_a_worse_challenger_stops_and_a_superiority_spec_holds_an_equal_one():
    spec = spec_with(margin=0.02)
    worse = judge_step(spec, release_of(spec), arms(40_000, treatment_signal=0.2), NO_REJECTS, days_in_step=3, decided_on=DAY)
    assert worse.verdict == "stop" and primary(worse).outcome == "worse" and primary(worse).upper < 0
    strict = spec_with(margin=0.02, require_superiority=True)
    equal = judge_step(strict, release_of(strict), arms(60_000), NO_REJECTS, days_in_step=3, decided_on=DAY)
    assert equal.verdict == "hold" and primary(equal).outcome == "undecided"


def test_a_guardrail_breach_stops_even_a_better_challenger():
    spec = spec_with(margin=0.02)
    # The challenger ranks better but flags nearly every row: the served positive rate leaves its margin.
    look = judge_step(spec, release_of(spec), arms(40_000, treatment_signal=0.6, treatment_flags=0.05), NO_REJECTS, days_in_step=3,
                      decided_on=DAY)
    breached = [test.comparison.metric for test in look.tests if test.outcome == "breached"]
    assert look.verdict == "stop" and breached == ["positive_rate"]


def test_too_few_positives_or_too_little_power_give_no_verdict_until_the_step_runs_out_of_days():
    spec = spec_with(margin=0.01, max_days_per_step=5)
    few = judge_step(spec, release_of(spec), arms(600), NO_REJECTS, days_in_step=2, decided_on=DAY)
    assert few.verdict == "insufficient_data" and "labelled positives" in few.reason
    weak = judge_step(spec, release_of(spec), arms(8_000), NO_REJECTS, days_in_step=2, decided_on=DAY)
    assert weak.verdict == "insufficient_data" and weak.power < 0.8 and weak.required_n > weak.n_treatment
    late = judge_step(spec, release_of(spec), arms(8_000), NO_REJECTS, days_in_step=5, decided_on=DAY)
    assert late.verdict == "stop" and "reached no verdict in 5 days" in late.reason


def test_the_last_step_promotes():
    spec = spec_with(margin=0.02)
    look = judge_step(spec, release_of(spec, step=len(spec.release.canary.steps) - 1), arms(60_000), NO_REJECTS, days_in_step=3,
                      decided_on=DAY)
    assert look.verdict == "promote"
