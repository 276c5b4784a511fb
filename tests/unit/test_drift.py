"""The drift check's verdicts on simulated data: scenarios are caught, quiet weeks stay quiet."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.demo.simulate import Scenario, simulate
from batchwatch.modeling.training import LABEL, train
from batchwatch.monitoring import drift
from batchwatch.scoring import score
from batchwatch.spec import ModelSpec, parse_spec

HISTORY_START = datetime(2026, 3, 1, tzinfo=timezone.utc)
WATCH_START = datetime(2026, 3, 15, tzinfo=timezone.utc)  # first window end
ROWS_PER_DAY = 12_000  # windows over 10k rows: scipy's KS takes its asymptotic branch, and so do we
DRIFT_START = WATCH_START + timedelta(days=1)


MALFORMED = 0.02  # every malformed kind at ~0.3% of rows, in training and after: normal noise, never an alarm


def _labelled(start: datetime, end: datetime) -> pd.DataFrame:
    batch = simulate(start, end, rows_per_day=ROWS_PER_DAY, seed=11, malformed_rate=MALFORMED)
    labels = batch.outcomes.assign(entity_id=batch.outcomes["entity_id"].astype(str)).set_index("entity_id")["label"]
    frame = batch.transactions.assign(transaction_id=batch.transactions["transaction_id"].astype(str))
    frame[LABEL] = frame["transaction_id"].map(labels)
    return frame.dropna(subset=[LABEL])


@pytest.fixture(scope="module")
def spec(fraud_spec) -> ModelSpec:
    """The demo spec without the multivariate check, which has its own tests below (it is the slow part)."""
    data = fraud_spec.model_dump(by_alias=True)
    data["drift"]["multivariate"]["enabled"] = False
    return parse_spec(data)


@pytest.fixture(scope="module")
def champion(spec):
    """A champion trained on two weeks of simulated history, with its reference profile."""
    return train(spec, _labelled(HISTORY_START, WATCH_START - timedelta(days=1)))


class Watch:
    """Hourly windows over a simulated stretch: features and champion scores computed once, sliced per window."""

    def __init__(self, spec: ModelSpec, champion, days: int, scenarios: tuple[Scenario, ...] = ()) -> None:
        start = WATCH_START - timedelta(hours=spec.drift.window_hours)
        batch = simulate(start, WATCH_START + timedelta(days=days), rows_per_day=ROWS_PER_DAY, seed=29, scenarios=scenarios, malformed_rate=MALFORMED)
        raw = batch.transactions
        self.spec, self.champion = spec, champion
        self.times = pd.DatetimeIndex(raw["event_time"])
        self.features = build_features(raw, spec)
        valid = validate(raw, spec).valid.index
        self.valid = np.isin(np.arange(len(raw)), valid)
        self.scores = np.full(len(raw), np.nan)
        self.scores[self.valid] = score(champion.pipeline, self.features[self.valid])

    def inside(self, window_end: datetime) -> np.ndarray:
        start, end = drift.window_of(self.spec, window_end)
        return np.asarray((self.times >= start) & (self.times < end))

    def share_after(self, window_end: datetime, moment: datetime) -> float:
        """Share of the window's rows with event time at or after `moment`."""
        inside = self.inside(window_end)
        return float(np.asarray(self.times >= moment)[inside].mean())

    def check(self, window_end: datetime) -> dict[str, str]:
        """Verdict per check for the window ending at `window_end`."""
        inside = self.inside(window_end)
        results = drift.evaluate(self.spec, self.champion.reference, self.features[inside], self.scores[inside & self.valid])
        return {r.check: r.verdict for r in results}

    def hours(self, days: int):
        return [WATCH_START + timedelta(hours=h) for h in range(days * 24)]


def test_a_quiet_week_flags_under_one_percent_of_checks(spec, champion):
    watch = Watch(spec, champion, days=7)
    verdicts = [watch.check(end) for end in watch.hours(7)]
    checks = [v for window in verdicts for v in window.values()]
    flagged = [(i, c) for i, window in enumerate(verdicts) for c, v in window.items() if v == drift.DRIFTED]
    assert len(verdicts) == 168 and len(checks) > 168 * 20
    assert checks.count(drift.INSUFFICIENT) == 0
    assert len(flagged) / len(checks) < 0.01, flagged


@pytest.mark.parametrize(
    ("scenario", "check", "share"),
    [
        (Scenario("mean_shift", DRIFT_START, "amount", 1.0), "distribution:amount", 0.3),
        (Scenario("variance_change", DRIFT_START, "txn_count_30d", 1.0), "distribution:txn_count_30d", 0.3),
        (Scenario("new_category", DRIFT_START, "merchant_category", 0.2), "unseen:merchant_category", 0.1),
        (Scenario("null_burst", DRIFT_START, "country", 0.5), "null_rate:country", 0.1),
    ],
    ids=["mean_shift", "variance_change", "new_category", "null_burst"],
)
def test_each_scenario_is_flagged_once_enough_rows_drifted(spec, champion, scenario, check, share):
    """Clean before the start; flagged in every window whose drifted rows make up at least `share` of it.

    `share` is what "enough drifted rows" means for each scenario at its magnitude: with the default
    effect-size floors a one-unit shift of a third of the window, or a tenth of the rows in a new
    category or newly null, is a finding.
    """
    watch = Watch(spec, champion, days=3, scenarios=(scenario,))
    for end in watch.hours(3):
        drifted_share = watch.share_after(end, DRIFT_START)
        verdict = watch.check(end)[check]
        if drifted_share == 0:
            assert verdict == drift.OK, f"{check} flagged at {end} before the scenario started"
        elif drifted_share >= share:
            assert verdict == drift.DRIFTED, f"{check} not flagged at {end} with {drifted_share:.0%} of the window drifted"


def test_prediction_drift_follows_scores_not_labels(spec, champion):
    """Concept drift alone moves labels, not scores: no score alarm. With the fraud pattern's shift in amounts, scores move and are flagged."""
    concept = Scenario("concept_drift", DRIFT_START)
    labels_only = Watch(spec, champion, days=2, scenarios=(concept,))
    assert {labels_only.check(end)["score_distribution:__score__"] for end in labels_only.hours(2)} == {drift.OK}

    moving = Watch(spec, champion, days=3, scenarios=(concept, Scenario("mean_shift", DRIFT_START, "amount", 2.0)))
    after = [moving.check(DRIFT_START + timedelta(hours=h)) for h in range(12, 48)]
    assert all(v["score_distribution:__score__"] == drift.DRIFTED for v in after)
    assert moving.check(DRIFT_START)["score_distribution:__score__"] == drift.OK


def test_positives_are_counted_at_the_versions_threshold(spec, champion):
    """The positive-rate test compares the shares flagged at the version's own threshold, the one its labels are written at."""
    from dataclasses import replace

    from batchwatch.stats.drift import proportion_test

    reference = champion.reference
    assert reference.threshold == champion.threshold
    assert 0 < reference.positives <= 0.01 * reference.scored, "fraud.yaml flags at most 1% of the validation scores"
    stored = reference.to_rows()
    assert drift.ReferenceProfile.from_rows(stored).threshold == champion.threshold
    for row in stored:  # a profile stored before thresholds were: the check takes the version's threshold
        row["profile"].pop("threshold", None)
    assert drift.ReferenceProfile.from_rows(stored).threshold is None

    watch = Watch(spec, champion, days=1)
    inside = watch.inside(WATCH_START + timedelta(hours=12))
    scores = watch.scores[inside & watch.valid]
    for judged in (reference, replace(reference, threshold=0.5)):
        results = drift.evaluate(spec, judged, watch.features[inside], scores)
        rate = next(r for r in results if r.test == "positive_rate")
        expected = proportion_test(judged.positives, judged.scored, int(np.sum(scores >= judged.threshold)), len(scores))
        assert rate.statistic == pytest.approx(expected.z, abs=1e-12)


def test_a_huge_window_with_a_negligible_shift_is_not_flagged(spec):
    """On 1M rows KS calls a 0.02-sd shift significant; the effect-size floors keep it from being a verdict.

    The reference keeps all 200k training values here (reference_sample_size is configurable), so the
    KS test has the power that makes big windows dangerous.
    """
    rng = np.random.default_rng(5)
    reference = drift.NumericReference.from_values(rng.normal(100, 10, 200_000), sample_size=200_000)
    current = rng.normal(100.2, 10, 1_000_000)
    results = drift._numeric_tests("amount", reference, current, spec, np.random.default_rng(0))
    drift._decide(results, spec.drift.min_rows, spec.drift.fdr)
    ks = next(r for r in results if r.test == "ks")
    assert ks.p_value < 0.05 and ks.p_adjusted < 0.05, "the test itself must see the shift for this to mean anything"
    assert {r.verdict for r in results} == {drift.OK}

    shifted = rng.normal(103, 10, 1_000_000)  # 0.3 sd: practically significant
    results = drift._numeric_tests("amount", reference, shifted, spec, np.random.default_rng(0))
    drift._decide(results, spec.drift.min_rows, spec.drift.fdr)
    assert {r.verdict for r in results} == {drift.DRIFTED}


def test_small_windows_and_empty_columns_get_a_defined_verdict(spec, champion):
    watch = Watch(spec, champion, days=1)
    # 100 rows spread over a clean day: nothing drifted, and a check says ok only when it had the power.
    few = watch.features.sample(100, random_state=1)
    results = drift.evaluate(spec, champion.reference, few, watch.scores[few.index])
    assert drift.DRIFTED not in {r.verdict for r in results}
    assert all(r.power >= 0.8 for r in results if r.verdict == drift.OK)
    insufficient = [r for r in results if r.verdict == drift.INSUFFICIENT]
    assert {r.check for r in insufficient} >= {"distribution:amount", "null_rate:amount", "score_distribution:__score__"}
    assert all(r.details["insufficient_data"].startswith("power ") for r in insufficient)
    # Below drift.min_rows no test runs at all.
    tiny = drift.evaluate(spec, champion.reference, watch.features.iloc[:20], watch.scores[:20])
    assert {r.verdict for r in tiny} == {drift.INSUFFICIENT}

    all_null = watch.features.iloc[:5_000].copy()
    all_null["avg_amount_7d"] = np.nan
    verdicts = {r.check: r.verdict for r in drift.evaluate(spec, champion.reference, all_null, watch.scores[:5_000])}
    assert verdicts["distribution:avg_amount_7d"] == drift.INSUFFICIENT
    assert verdicts["null_rate:avg_amount_7d"] == drift.DRIFTED


def test_a_strong_signal_in_a_small_window_is_drifted_and_a_weak_one_is_not_ok(spec):
    """The evaluation's case: 291 rows where a column went from 75% to 27% null (h ~ 1.0). Under the old
    min_rows every check said insufficient_data; the null-rate test alone has power to spare."""
    rng = np.random.default_rng(3)
    tests = [
        drift._rate_test("country", "null_rate", 7_500, 10_000, 79, 291, spec.drift.null_rate_h_threshold, spec.drift.fdr),
        *drift._numeric_tests("amount", drift.NumericReference.from_values(rng.normal(size=10_000)), rng.normal(size=291), spec, rng),
    ]
    drift._decide(tests, spec.drift.min_rows, spec.drift.fdr)
    verdicts = {r.check: r.verdict for r in tests}
    assert verdicts == {"null_rate:country": drift.DRIFTED, "distribution:amount": drift.INSUFFICIENT}
    assert tests[0].p_value < 1e-50 and tests[0].effect_size > 0.9


def test_excluded_columns_are_not_compared(spec, champion):
    watch = Watch(spec, champion, days=1)
    columns = {r.column for r in drift.evaluate(spec, champion.reference, watch.features.iloc[:5_000], watch.scores[:5_000])}
    assert "day_of_week" not in columns and "amount" in columns and drift.SCORES in columns


def test_reference_profile_survives_the_round_trip_through_json(spec, champion):
    import json

    rows = json.loads(json.dumps(champion.reference.to_rows()))
    again = drift.ReferenceProfile.from_rows(rows)
    watch = Watch(spec, champion, days=1)
    window = watch.features.iloc[:5_000]
    first = [r.row() for r in drift.evaluate(spec, champion.reference, window, watch.scores[:5_000])]
    second = [r.row() for r in drift.evaluate(spec, again, window, watch.scores[:5_000])]
    assert first == second
    assert again.joint.shape == champion.reference.joint.shape


def test_domain_classifier_tells_drifted_rows_apart(fraud_spec, champion):
    """The multivariate check: AUC near 0.5 on a clean day, over its threshold once the joint distribution moves."""
    clean = Watch(fraud_spec, champion, days=1)
    auc, p_value, n = drift.domain_classifier_auc(champion.reference.joint, clean.features, fraud_spec)
    assert n == fraud_spec.drift.multivariate.sample_rows
    assert auc < fraud_spec.drift.multivariate.auc_threshold

    # Swap two columns' roles: every marginal a univariate test sees is plausible, the joint is not.
    moved = clean.features.copy()
    moved["amount"] = moved["amount"].sample(frac=1.0, random_state=3).to_numpy()
    moved["log_amount"] = np.log1p(moved["amount"].clip(lower=0))  # as fraud_demo derives it
    auc, p_value, _ = drift.domain_classifier_auc(champion.reference.joint, moved, fraud_spec)
    assert auc > fraud_spec.drift.multivariate.auc_threshold and p_value < 1e-6


def test_the_offline_check_gives_the_scheduled_checks_results(spec, champion):
    """compare_frames on two frames equals evaluate() against the reference registration would build from the first."""
    from batchwatch.monitoring.offline import compare_frames

    watch = Watch(spec, champion, days=2)
    before, window = watch.features.iloc[5_000:25_000], watch.features.iloc[:5_000]
    scores_before, scores_now = watch.scores[5_000:25_000], watch.scores[:5_000]
    reference = drift.build_reference(spec, before.reset_index(drop=True), scores_before, threshold=champion.threshold)
    scheduled = [r.row() for r in drift.evaluate(spec, reference, window, scores_now, seed=3)]
    offline = compare_frames(
        before, window, columns=spec.model_features, categorical=spec.categorical_features, reference_scores=scores_before,
        current_scores=scores_now, score_threshold=champion.threshold, settings=spec.drift, seed=3,
    )
    assert [r.row() for r in offline.results] == scheduled and offline.status == drift.window_status(offline.results)
