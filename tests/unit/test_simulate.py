"""Tests for the deterministic transaction simulator."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from batchwatch.demo.simulate import (
    CHANNELS,
    COUNTRIES,
    MALFORMED_KINDS,
    MERCHANT_CATEGORIES,
    SCENARIO_KINDS,
    TRANSACTION_COLUMNS,
    Scenario,
    SimulatedBatch,
    fraud_probability,
    simulate,
)

UTC = timezone.utc
D1 = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday
D2 = D1 + timedelta(days=1)
D3 = D1 + timedelta(days=2)
NUMERIC = ["amount", "hour", "day_of_week", "txn_count_30d", "avg_amount_7d"]
CATEGORICAL = {"merchant_category": MERCHANT_CATEGORIES, "country": COUNTRIES, "channel": CHANNELS}
NOON = D1 + timedelta(hours=12)


def assert_batches_equal(a: SimulatedBatch, b: SimulatedBatch) -> None:
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    pd.testing.assert_frame_equal(a.outcomes, b.outcomes)
    pd.testing.assert_series_equal(a.malformed, b.malformed)


@lru_cache(maxsize=None)
def clean(rows_per_day: int = 20_000) -> SimulatedBatch:
    """Two clean days, shared by the property tests (never mutated)."""
    return simulate(D1, D3, rows_per_day=rows_per_day, seed=11)


@lru_cache(maxsize=None)
def with_scenario(scenario: Scenario) -> SimulatedBatch:
    return simulate(D1, D3, rows_per_day=20_000, seed=11, scenarios=[scenario])


def after_noon(batch: SimulatedBatch) -> np.ndarray:
    return (batch.transactions["event_time"] >= pd.Timestamp(NOON)).to_numpy()


# --- determinism -----------------------------------------------------------
def test_same_inputs_give_identical_batches() -> None:
    kwargs = dict(rows_per_day=3000, seed=3, malformed_rate=0.01,
                  scenarios=[Scenario("null_burst", D2, "country", 0.2)])
    assert_batches_equal(simulate(D1, D3, **kwargs), simulate(D1, D3, **kwargs))


def test_different_seeds_differ() -> None:
    a = simulate(D1, D2, rows_per_day=1000, seed=1).transactions
    b = simulate(D1, D2, rows_per_day=1000, seed=2).transactions
    assert not np.allclose(a["amount"].to_numpy(), b["amount"].to_numpy())


def test_split_range_equals_whole_range() -> None:
    kwargs = dict(
        rows_per_day=4000,
        seed=5,
        malformed_rate=0.02,
        scenarios=[
            Scenario("mean_shift", D2 + timedelta(hours=6), "txn_count_30d", 1.0),
            Scenario("new_category", D1 + timedelta(hours=20), "channel", 0.2),
            Scenario("concept_drift", D2),
        ],
    )
    end = D1 + timedelta(days=3)
    whole = simulate(D1, end, **kwargs)
    first, second = simulate(D1, D2, **kwargs), simulate(D2, end, **kwargs)
    joined = SimulatedBatch(
        transactions=pd.concat([first.transactions, second.transactions], ignore_index=True),
        outcomes=pd.concat([first.outcomes, second.outcomes], ignore_index=True),
        malformed=pd.concat([first.malformed, second.malformed], ignore_index=True),
    )
    assert_batches_equal(whole, joined)


# --- shape, ids, types -----------------------------------------------------
def test_exact_rows_per_day_unique_ids_and_sorted_times() -> None:
    batch = simulate(D1, D1 + timedelta(days=3), rows_per_day=1234)
    tx = batch.transactions
    assert list(tx.columns) == TRANSACTION_COLUMNS
    assert len(tx) == len(batch.outcomes) == len(batch.malformed) == 3 * 1234
    per_day = tx["event_time"].dt.floor("D").value_counts().sort_index()
    assert per_day.tolist() == [1234] * 3
    assert tx["transaction_id"].is_unique
    assert tx["transaction_id"].dtype == np.int64 and tx["card_id"].dtype == np.int64
    expected_first = [(D1 + timedelta(days=i)).date().toordinal() * 10_000_000 for i in range(3)]
    assert tx["transaction_id"].iloc[::1234].tolist() == expected_first
    assert tx["event_time"].is_monotonic_increasing
    assert isinstance(tx["event_time"].dtype, pd.DatetimeTZDtype) and str(tx["event_time"].dt.tz) == "UTC"


def test_empty_range_returns_empty_frames() -> None:
    batch = simulate(D1, D1, rows_per_day=100)
    assert list(batch.transactions.columns) == TRANSACTION_COLUMNS
    assert len(batch.transactions) == len(batch.outcomes) == len(batch.malformed) == 0


def test_value_ranges_dtypes_and_null_shares_of_normal_rows() -> None:
    batch = clean()
    tx = batch.transactions
    assert batch.malformed.isna().all()
    for col in NUMERIC:
        assert tx[col].dtype == np.float64, col
    times = tx["event_time"]
    assert np.array_equal(tx["hour"].to_numpy(), times.dt.hour.to_numpy(dtype=np.float64))
    assert np.array_equal(tx["day_of_week"].to_numpy(), times.dt.day_of_week.to_numpy(dtype=np.float64))
    assert set(tx["day_of_week"].unique()) == {0.0, 1.0}  # Monday, Tuesday

    amount = tx["amount"]
    assert amount.notna().all() and (amount > 0).all()
    assert 30 < amount.median() < 60
    assert amount.quantile(0.99) > 5 * amount.median()  # heavy tail
    by_cat = tx.groupby("merchant_category")["amount"].median()
    assert by_cat["travel"] > 2 * by_cat["grocery"] and by_cat["electronics"] > 2 * by_cat["grocery"]

    count = tx["txn_count_30d"]
    assert count.notna().all() and (count >= 0).all() and (count == np.round(count)).all()
    assert 9 < count.mean() < 14

    avg = tx["avg_amount_7d"]
    assert 0.03 < avg.isna().mean() < 0.05
    assert (avg.dropna() > 0).all()
    ok = avg.notna()
    assert np.corrcoef(np.log(avg[ok]), np.log(amount[ok]))[0, 1] > 0.25

    for col, values in CATEGORICAL.items():
        assert set(tx[col].dropna().unique()) <= set(values), col
        assert all(isinstance(v, str) for v in tx[col].dropna().unique()[:5])
    assert tx["merchant_category"].notna().all() and tx["channel"].notna().all()
    assert 0.005 < tx["country"].isna().mean() < 0.015
    shares = tx["country"].value_counts(normalize=True)
    assert shares.index[0] == "US" and shares["US"] > 0.5  # skewed, not uniform
    hours = tx["hour"].value_counts(normalize=True)
    assert hours.loc[[2.0, 3.0, 4.0]].sum() < hours.loc[[17.0, 18.0, 19.0]].sum() / 5  # quiet nights


# --- labels ----------------------------------------------------------------
def test_outcomes_align_and_arrive_after_the_delay() -> None:
    delay = timedelta(days=2, hours=5)
    batch = simulate(D1, D2, rows_per_day=5000, label_delay=delay, malformed_rate=0.01)
    tx, out = batch.transactions, batch.outcomes
    assert list(out.columns) == ["entity_id", "label", "observed_at"]
    assert out["entity_id"].tolist() == [str(i) for i in tx["transaction_id"]]
    assert set(out["label"].unique()) <= {0, 1}
    assert isinstance(out["observed_at"].dtype, pd.DatetimeTZDtype)
    lag = out["observed_at"] - tx["event_time"]
    assert (lag >= pd.Timedelta(delay)).all() and (lag <= pd.Timedelta(delay + timedelta(hours=24))).all()
    assert (lag - pd.Timedelta(delay)).std() > pd.Timedelta(hours=5)  # jitter is spread over the day


def test_base_rate_and_labels_follow_the_known_rule() -> None:
    batch = clean()
    prob = fraud_probability(batch.transactions)
    label = batch.outcomes["label"].to_numpy()
    assert 0.02 < label.mean() < 0.04
    assert abs(label.mean() - prob.mean()) < 0.005
    assert roc_auc_score(label, prob) > 0.8
    drifted = fraud_probability(batch.transactions, concept="drifted")
    assert 0.02 < drifted.mean() < 0.045
    assert np.corrcoef(prob, drifted)[0, 1] < 0.2  # a clearly different rule
    with pytest.raises(ValueError, match="weird"):
        fraud_probability(batch.transactions, concept="weird")


def test_fraud_probability_tolerates_nulls_and_bad_values() -> None:
    frame = pd.DataFrame({
        "amount": [np.nan, -5.0, 40.0, 4000.0],
        "avg_amount_7d": [np.inf, np.nan, -np.inf, 40.0],
        "hour": [np.nan, 99.0, 3.0, 3.0],
        "txn_count_30d": [np.nan, 3.7, 12.0, 40.0],
        "merchant_category": [None, "zz_unknown", "grocery", "electronics"],
        "country": [None, "new_country", "US", "GB"],
        "channel": [None, "atm", "pos", "online"],
    })
    for concept in ("baseline", "drifted"):
        prob = fraud_probability(frame, concept=concept)
        assert prob.shape == (4,) and np.isfinite(prob).all() and ((prob > 0) & (prob < 1)).all()
    assert fraud_probability(frame)[3] > 0.5  # huge online night-time amount abroad


def _features(tx: pd.DataFrame) -> pd.DataFrame:
    out = tx[NUMERIC].copy()
    for col, values in CATEGORICAL.items():
        codes = pd.Categorical(tx[col], categories=list(values)).codes.astype(np.float64)
        out[col] = np.where(codes < 0, np.nan, codes)
    return out


def test_label_is_learnable_and_concept_drift_breaks_the_model() -> None:
    days = [D1 + timedelta(days=i) for i in range(5)]
    batch = simulate(days[0], days[0] + timedelta(days=5), rows_per_day=25_000, seed=21,
                     scenarios=[Scenario("concept_drift", days[4])])
    tx, y = batch.transactions, batch.outcomes["label"].to_numpy()
    baseline_rows = np.flatnonzero((tx["event_time"] < pd.Timestamp(days[4])).to_numpy())
    assert len(baseline_rows) == 100_000
    cut = int(0.7 * len(baseline_rows))
    train, test = baseline_rows[:cut], baseline_rows[cut:]
    model = HistGradientBoostingClassifier(max_iter=150, categorical_features=[5, 6, 7], random_state=0)
    model.fit(_features(tx.iloc[train]), y[train])
    auc = roc_auc_score(y[test], model.predict_proba(_features(tx.iloc[test]))[:, 1])
    assert auc > 0.75

    drifted_rows = np.flatnonzero((tx["event_time"] >= pd.Timestamp(days[4])).to_numpy())
    assert 0.02 < y[drifted_rows].mean() < 0.045
    drift_auc = roc_auc_score(y[drifted_rows], model.predict_proba(_features(tx.iloc[drifted_rows]))[:, 1])
    assert drift_auc < auc - 0.2


# --- malformed rows --------------------------------------------------------
def test_every_malformed_kind_is_injected_as_described() -> None:
    bad = simulate(D1, D2, rows_per_day=5000, malformed_rate=0.02)
    good = simulate(D1, D2, rows_per_day=5000)
    tx, ref, kinds = bad.transactions, good.transactions, bad.malformed
    assert kinds.index.equals(tx.index) and "malformed" not in tx.columns
    assert kinds.notna().sum() == 100
    assert set(kinds.dropna().unique()) == set(MALFORMED_KINDS)
    assert kinds.value_counts().min() >= 14  # cycled evenly

    def rows(kind: str) -> pd.DataFrame:
        return tx[(kinds == kind).to_numpy()]

    assert rows("nan")["amount"].isna().all()
    assert np.isposinf(rows("pos_inf")["avg_amount_7d"]).all()
    assert np.isneginf(rows("neg_inf")["avg_amount_7d"]).all()
    assert (rows("negative_amount")["amount"] < 0).all()
    hour = rows("hour_out_of_range")["hour"]
    assert ((hour >= 24) & (hour <= 99)).all()
    cats = rows("unknown_category")["merchant_category"]
    assert cats.notna().all() and not cats.isin(MERCHANT_CATEGORIES).any()
    wrong = rows("wrong_type")["txn_count_30d"]
    assert (wrong != np.round(wrong)).all() and (wrong > 0).all()

    # Corruption touches nothing else: other rows, ids, times and labels are unchanged.
    normal = kinds.isna().to_numpy()
    pd.testing.assert_frame_equal(tx[normal], ref[normal])
    pd.testing.assert_frame_equal(bad.outcomes, good.outcomes)


def test_small_malformed_rate_rounds_per_day() -> None:
    batch = simulate(D1, D3, rows_per_day=1000, malformed_rate=0.0026)
    per_day = batch.malformed.notna().groupby(batch.transactions["event_time"].dt.day).sum()
    assert per_day.tolist() == [3, 3]


# --- scenarios -------------------------------------------------------------
def _check_only_after_start(batch: SimulatedBatch, feature: str) -> tuple[pd.Series, pd.Series]:
    """Rows before the scenario start and all other columns match the clean run."""
    base = clean()
    after = after_noon(batch)
    assert 0.3 < after.mean() < 0.9
    pd.testing.assert_frame_equal(batch.transactions[~after], base.transactions[~after])
    others = [c for c in TRANSACTION_COLUMNS if c != feature]
    pd.testing.assert_frame_equal(batch.transactions[others], base.transactions[others])
    return base.transactions.loc[after, feature], batch.transactions.loc[after, feature]


def test_mean_shift_on_counts_adds_magnitude_times_std() -> None:
    before, after = _check_only_after_start(with_scenario(Scenario("mean_shift", NOON, "txn_count_30d", 1.0)),
                                            "txn_count_30d")
    baseline_std = clean().transactions["txn_count_30d"].std()
    assert after.mean() - before.mean() == pytest.approx(baseline_std, rel=0.15)
    assert (after == np.round(after)).all() and (after >= 0).all()


def test_mean_shift_on_amount_scales_by_exp_half_magnitude() -> None:
    before, after = _check_only_after_start(with_scenario(Scenario("mean_shift", NOON, "amount", 1.0)), "amount")
    assert (after > 0).all()
    assert np.log(after).mean() - np.log(before).mean() == pytest.approx(0.5, abs=1e-6)


def test_variance_change_widens_and_keeps_values_valid() -> None:
    before, after = _check_only_after_start(with_scenario(Scenario("variance_change", NOON, "amount", 1.0)), "amount")
    assert (after > 0).all()
    assert np.log(after).std() / np.log(before).std() == pytest.approx(2.0, rel=0.05)

    before, after = _check_only_after_start(
        with_scenario(Scenario("variance_change", NOON, "txn_count_30d", 1.0)), "txn_count_30d")
    assert (after >= 0).all() and (after == np.round(after)).all()
    assert after.std() > 1.5 * before.std()


def test_new_category_takes_the_given_share() -> None:
    batch = with_scenario(Scenario("new_category", NOON, "merchant_category", 0.3))
    before, after = _check_only_after_start(batch, "merchant_category")
    assert (after == "new_merchant_category").mean() == pytest.approx(0.3, abs=0.02)
    assert not (batch.transactions["merchant_category"][~after_noon(batch)] == "new_merchant_category").any()
    assert batch.malformed.isna().all()  # drift is not a malformation


def test_null_burst_nulls_the_given_share() -> None:
    batch = with_scenario(Scenario("null_burst", NOON, "country", 0.5))
    before, after = _check_only_after_start(batch, "country")
    assert before.isna().mean() < 0.015
    assert after.isna().mean() == pytest.approx(0.5 + 0.5 * before.isna().mean(), abs=0.02)

    batch = with_scenario(Scenario("null_burst", NOON, "amount", 0.2))
    _, after = _check_only_after_start(batch, "amount")
    assert after.isna().mean() == pytest.approx(0.2, abs=0.02)


def test_concept_drift_switches_the_rule_only_after_start() -> None:
    batch = with_scenario(Scenario("concept_drift", NOON))
    base = clean()
    after = after_noon(batch)
    pd.testing.assert_frame_equal(batch.transactions, base.transactions)
    y, y0 = batch.outcomes["label"].to_numpy(), base.outcomes["label"].to_numpy()
    assert np.array_equal(y[~after], y0[~after])
    tx = batch.transactions[after]
    assert roc_auc_score(y[after], fraud_probability(tx, concept="drifted")) > 0.75
    assert roc_auc_score(y[after], fraud_probability(tx)) < 0.55


def test_scenario_on_later_day_leaves_earlier_day_untouched() -> None:
    batch = simulate(D1, D3, rows_per_day=20_000, seed=11,
                     scenarios=[Scenario("mean_shift", D2, "amount", 2.0), Scenario("concept_drift", D2)])
    first_day = (batch.transactions["event_time"] < pd.Timestamp(D2)).to_numpy()
    pd.testing.assert_frame_equal(batch.transactions[first_day], clean().transactions[first_day])
    pd.testing.assert_frame_equal(batch.outcomes[first_day], clean().outcomes[first_day])


def test_bad_scenarios_are_rejected() -> None:
    with pytest.raises(ValueError, match="tsunami"):
        Scenario("tsunami", D1, "amount")
    with pytest.raises(ValueError, match="merchant_category"):
        Scenario("mean_shift", D1, "merchant_category")
    with pytest.raises(ValueError, match="amount"):
        Scenario("new_category", D1, "amount", 0.2)
    with pytest.raises(ValueError):
        Scenario("null_burst", D1, "country", 1.5)
    with pytest.raises(ValueError):
        Scenario("mean_shift", datetime(2024, 5, 6), "amount")  # naive start
    assert set(SCENARIO_KINDS) == {"mean_shift", "variance_change", "new_category", "null_burst", "concept_drift"}


def test_bad_simulate_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        simulate(datetime(2024, 5, 6), datetime(2024, 5, 7), rows_per_day=10)
    with pytest.raises(ValueError, match="midnight"):
        simulate(D1 + timedelta(hours=1), D2, rows_per_day=10)
    with pytest.raises(ValueError, match="before start"):
        simulate(D2, D1, rows_per_day=10)
    with pytest.raises(ValueError, match="rows_per_day"):
        simulate(D1, D2, rows_per_day=0)
    with pytest.raises(ValueError, match="malformed_rate"):
        simulate(D1, D2, rows_per_day=10, malformed_rate=1.5)
