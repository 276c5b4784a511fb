"""Training: estimator factories, the out-of-time split, and what a fitted pipeline must not depend on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_recall_curve, precision_score, recall_score, roc_auc_score

from batchwatch import training
from batchwatch.data.features import build_features
from batchwatch.data.validation import validate
from batchwatch.demo.simulate import simulate
from batchwatch.modeling.decision import ThresholdUnreachable, alert_rate_threshold
from batchwatch.modeling.estimators import make_pipeline
from batchwatch.modeling.training import LABEL, read_labelled, train
from batchwatch.scoring import score
from batchwatch.spec import SpecError, parse_spec
from batchwatch.stats.calibration import expected_calibration_error, fit_calibration
from batchwatch.warehouse import load_frame

D1 = datetime(2024, 5, 6, tzinfo=timezone.utc)


def labelled_frame(days: int, rows_per_day: int, seed: int) -> pd.DataFrame:
    """Simulated transactions with their label in LABEL, oldest first (as read_labelled returns them)."""
    batch = simulate(D1, D1 + timedelta(days=days), rows_per_day=rows_per_day, seed=seed)
    labels = batch.outcomes.set_index("entity_id")["label"]
    frame = batch.transactions.copy()
    frame[LABEL] = labels.loc[frame["transaction_id"].astype(str)].to_numpy()
    return frame.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    return labelled_frame(days=4, rows_per_day=5000, seed=3)


@pytest.fixture(scope="module")
def trained(fraud_spec, labelled) -> training.TrainedModel:
    return train(fraud_spec, labelled)


def test_validation_auc_and_brier_beat_a_constant(trained, labelled) -> None:
    validation = trained.metrics["validation"]
    assert validation["roc_auc"] > 0.8
    split = int(len(labelled) * 0.8)
    labels = labelled[LABEL].to_numpy()
    constant = labels[:split].mean()  # the best constant a model could learn from the training rows
    constant_brier = float(np.mean((labels[split:] - constant) ** 2))
    assert validation["brier"] < constant_brier
    assert 0 < validation["average_precision"] <= 1
    assert set(trained.metrics) == {"train", "validation", "fit_seconds"}
    assert trained.metrics["fit_seconds"] >= 0


def test_the_split_is_out_of_time(fraud_spec, trained, labelled) -> None:
    n = len(labelled)
    split = int(n * 0.8)
    metrics = trained.metrics
    assert (metrics["train"]["rows"], metrics["validation"]["rows"]) == (split, n - split) == (16_000, 4_000)
    # The validation rows are the most recent ones: their label rate and AUC are those of the last 20%.
    assert metrics["validation"]["label_rate"] == pytest.approx(labelled[LABEL].iloc[split:].mean(), abs=1e-12)
    assert metrics["train"]["label_rate"] == pytest.approx(labelled[LABEL].iloc[:split].mean(), abs=1e-12)
    recent = labelled.iloc[split:]
    scores = score(trained.pipeline, build_features(recent, fraud_spec))
    assert metrics["validation"]["roc_auc"] == pytest.approx(roc_auc_score(recent[LABEL], scores), abs=1e-12)
    assert metrics["validation"]["positive_rate"] == pytest.approx(np.mean(scores >= trained.threshold), abs=1e-12)
    assert labelled["event_time"].iloc[split - 1] <= labelled["event_time"].iloc[split]


def test_the_threshold_and_calibration_are_chosen_on_the_validation_rows(fraud_spec, trained, labelled) -> None:
    """fraud.yaml asks for {alert_rate: 0.01}: the top 1% of the validation scores, and the metrics at that threshold."""
    split = int(len(labelled) * 0.8)
    labels = labelled[LABEL].iloc[split:].to_numpy()
    scores = score(trained.pipeline, build_features(labelled.iloc[split:], fraud_spec))
    policy = trained.threshold_policy
    assert (policy["policy"], policy["target"]) == ("alert_rate", 0.01)
    assert trained.threshold == policy["threshold"] == alert_rate_threshold(scores, 0.01)
    flagged = scores >= trained.threshold
    assert flagged.sum() == 40  # 1% of 4,000 validation rows
    validation = trained.metrics["validation"]
    expected = {"precision": precision_score(labels, flagged), "recall": recall_score(labels, flagged), "f1": f1_score(labels, flagged)}
    assert {name: validation[name] for name in expected} == pytest.approx(expected, abs=1e-12)
    assert {name: policy["validation"][name] for name in expected} == pytest.approx(expected, abs=1e-12)
    assert validation["precision"] > 3 * validation["label_rate"], "the top 1% is far richer in fraud than the base rate"
    assert validation["ece"] == pytest.approx(expected_calibration_error(labels, scores), abs=1e-15)
    assert trained.calibration == fit_calibration(labels, scores)
    assert trained.reference.threshold == trained.threshold
    assert trained.reference.positives == 40


def test_a_min_precision_policy_takes_the_lowest_threshold_reaching_it(fraud_data, labelled) -> None:
    fraud_data["scoring"]["threshold"] = {"min_precision": 0.5}
    spec = parse_spec(fraud_data)
    trained = train(spec, labelled)
    split = int(len(labelled) * 0.8)
    labels = labelled[LABEL].iloc[split:].to_numpy()
    scores = score(trained.pipeline, build_features(labelled.iloc[split:], spec))
    precision, _, thresholds = precision_recall_curve(labels, scores)
    assert trained.threshold == thresholds[precision[:-1] >= 0.5].min()
    assert trained.metrics["validation"]["precision"] >= 0.5


def test_a_min_precision_out_of_reach_fails_training(fraud_data, labelled) -> None:
    fraud_data["scoring"]["threshold"] = {"min_precision": 0.9}
    noise = labelled.assign(**{LABEL: np.random.default_rng(0).permutation(labelled[LABEL].to_numpy())})  # labels that no feature predicts
    with pytest.raises(ThresholdUnreachable, match=r"^fraud: scoring\.threshold\.min_precision: no threshold reaches a precision of 0\.9 "):
        train(parse_spec(fraud_data), noise)


def test_holdout_fraction_is_honoured(fraud_data, labelled) -> None:
    fraud_data["retrain"] = {"holdout_fraction": 0.5}
    frame = labelled.iloc[:2000]
    metrics = train(parse_spec(fraud_data), frame).metrics
    assert (metrics["train"]["rows"], metrics["validation"]["rows"]) == (1000, 1000)


def test_training_is_deterministic(fraud_spec, labelled, trained) -> None:
    again = train(fraud_spec, labelled)
    features = build_features(labelled.iloc[-500:], fraud_spec)
    np.testing.assert_array_equal(score(again.pipeline, features), score(trained.pipeline, features))


def test_pipeline_uses_the_spec_estimator(trained) -> None:
    model = trained.pipeline.named_steps["model"]
    assert type(model).__name__ == "HistGradientBoostingClassifier"
    assert (model.max_iter, model.learning_rate, model.max_leaf_nodes, model.min_samples_leaf) == (40, 0.2, 8, 200)
    assert (model.early_stopping, model.random_state) == (False, 0)
    assert list(model.categorical_features) == [True] * 3 + [False] * 8


def two_class_frame(n: int, positives: list[int]) -> pd.DataFrame:
    frame = labelled_frame(days=1, rows_per_day=max(n, 1), seed=9).iloc[:n].copy()
    frame[LABEL] = 0
    frame.loc[positives, LABEL] = 1
    return frame


@pytest.mark.parametrize(
    ("n", "positives", "message"),
    [
        pytest.param(99, [3, 50, 90], r"^not enough labelled data to train fraud: 99 valid rows, labels \[", id="99-rows"),
        pytest.param(0, [], r"^not enough labelled data to train fraud: 0 valid rows, labels \[\]$", id="no-rows"),
        pytest.param(500, [], r"^not enough labelled data to train fraud: 500 valid rows, labels \[", id="one-class"),
        pytest.param(500, list(range(500)), r"^not enough labelled data to train fraud: 500 valid rows, labels \[", id="all-positive"),
    ],
)
def test_train_refuses_too_little_data(fraud_spec, n: int, positives: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(fraud_spec, two_class_frame(n, positives))


def test_train_accepts_exactly_100_rows(fraud_spec) -> None:
    metrics = train(fraud_spec, two_class_frame(100, [5, 30, 60, 85, 95])).metrics
    assert (metrics["train"]["rows"], metrics["validation"]["rows"]) == (80, 20)
    assert metrics["validation"]["label_rate"] == pytest.approx(0.1)


def test_one_class_validation_gives_nan_ranking_metrics(fraud_data) -> None:
    fraud_data["estimator"]["params"]["min_samples_leaf"] = 5  # 160 training rows: let the trees split
    metrics = train(parse_spec(fraud_data), two_class_frame(200, [10, 20, 30])).metrics
    assert np.isnan(metrics["validation"]["roc_auc"]) and np.isnan(metrics["validation"]["average_precision"])
    assert metrics["validation"]["label_rate"] == 0.0
    assert metrics["train"]["roc_auc"] > 0.5


def test_gradient_boosting_factory_fits_and_predicts(fraud_data, labelled) -> None:
    fraud_data["estimator"] = {"factory": "batchwatch.training.gradient_boosting", "params": {"n_estimators": 10}}
    spec = parse_spec(fraud_data)
    result = train(spec, labelled)
    assert [name for name, _ in result.pipeline.steps] == ["encode", "impute", "model"]
    model = result.pipeline.named_steps["model"]
    assert type(model).__name__ == "GradientBoostingClassifier" and model.n_estimators == 10 and model.random_state == 0
    assert len(model.estimators_) == 10
    scores = score(result.pipeline, build_features(labelled.iloc[-1000:], spec))
    assert scores.shape == (1000,)
    assert ((scores > 0) & (scores < 1)).all()
    assert result.metrics["validation"]["roc_auc"] > 0.75


def test_make_pipeline_passes_spec_params(fraud_data) -> None:
    fraud_data["estimator"]["params"] = {"max_iter": 7, "l2_regularization": 0.5}
    model = make_pipeline(parse_spec(fraud_data)).named_steps["model"]
    assert (model.max_iter, model.l2_regularization, model.learning_rate, model.early_stopping) == (7, 0.5, 0.2, False)


def test_make_pipeline_with_a_factory_that_does_not_exist(fraud_data) -> None:
    fraud_data["estimator"]["factory"] = "batchwatch.training.random_forest"
    spec = parse_spec(fraud_data)  # the module exists, so the spec loads
    with pytest.raises(SpecError, match=r"^estimator\.factory: 'batchwatch\.training\.random_forest' does not name a callable$"):
        make_pipeline(spec)


# --- invariance of a fitted pipeline ------------------------------------------------------------


@pytest.fixture(scope="module")
def recent(labelled) -> pd.DataFrame:
    return labelled.iloc[-2000:].drop(columns=[LABEL])


def test_predictions_ignore_the_column_order_of_the_input(fraud_spec, trained, recent) -> None:
    expected = score(trained.pipeline, build_features(recent, fraud_spec))
    rng = np.random.default_rng(0)
    for _ in range(3):
        shuffled = recent[list(rng.permutation(recent.columns))]
        assert list(shuffled.columns) != list(recent.columns)
        np.testing.assert_array_equal(score(trained.pipeline, build_features(shuffled, fraud_spec)), expected)
    # Also when the feature frame itself reaches the pipeline in another order.
    features = build_features(recent, fraud_spec)
    np.testing.assert_array_equal(score(trained.pipeline, features[features.columns[::-1]]), expected)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(lambda n: np.random.default_rng(1).normal(size=n), id="random-numbers"),
        pytest.param(lambda n: np.array(["note"] * n, dtype=object), id="text"),
        pytest.param(lambda n: np.full(n, np.nan), id="all-null"),
    ],
)
def test_predictions_ignore_an_extra_column(fraud_spec, trained, recent, extra) -> None:
    expected = score(trained.pipeline, build_features(recent, fraud_spec))
    widened = recent.copy()
    widened.insert(3, "irrelevant", extra(len(widened)))
    np.testing.assert_array_equal(score(trained.pipeline, build_features(widened, fraud_spec)), expected)
    features = build_features(recent, fraud_spec)
    features["irrelevant"] = extra(len(features))
    np.testing.assert_array_equal(score(trained.pipeline, features), expected)


def test_predictions_of_a_row_do_not_depend_on_its_batch(fraud_spec, trained, recent) -> None:
    features = build_features(recent, fraud_spec)
    whole = score(trained.pipeline, features)
    parts = np.concatenate([score(trained.pipeline, features.iloc[i : i + 300]) for i in range(0, len(features), 300)])
    np.testing.assert_array_equal(parts, whole)
    reversed_scores = score(trained.pipeline, features.iloc[::-1])
    np.testing.assert_array_equal(reversed_scores[::-1], whole)


def test_unknown_and_missing_categories_score_alike(fraud_spec, trained, recent) -> None:
    """A category the encoder never saw (possible when a spec allows unknown categories) scores as missing."""
    rows = recent.iloc[:50]
    as_scored = {}
    for name, value in (("unknown", "ZZ"), ("none", None), ("nan", np.nan)):
        raw = rows.copy()
        raw["country"] = value
        as_scored[name] = score(trained.pipeline, build_features(raw, fraud_spec))
    np.testing.assert_array_equal(as_scored["unknown"], as_scored["none"])
    np.testing.assert_array_equal(as_scored["nan"], as_scored["none"])
    assert not np.array_equal(as_scored["none"], score(trained.pipeline, build_features(rows, fraud_spec)))


@pytest.mark.parametrize("dtype", [object, "category", "str"])
def test_category_codes_match_ordinal_encoder(dtype) -> None:
    """The fast encoder gives exactly OrdinalEncoder's codes, with unknown and missing values as NaN."""
    from sklearn.preprocessing import OrdinalEncoder

    categories = [["grocery", "travel", "online"], ["DE", "FR"]]
    frame = pd.DataFrame(
        {
            "merchant_category": ["travel", "grocery", None, "casino", "online", "travel"],
            "country": ["FR", np.nan, "DE", "DE", "XX", "FR"],
        }
    ).astype(dtype)
    reference = OrdinalEncoder(
        categories=categories, handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    ).fit(frame.astype(object))
    encoder = training.CategoryCodes(categories).fit(frame)
    codes = encoder.transform(frame)
    np.testing.assert_array_equal(codes, reference.transform(frame.astype(object)))
    np.testing.assert_array_equal(codes[:, 0], [1, 0, np.nan, np.nan, 2, 1])
    assert list(encoder.get_feature_names_out()) == ["merchant_category", "country"]


def test_category_codes_refuse_a_frame_of_another_width() -> None:
    with pytest.raises(ValueError, match="2 category lists for 1 columns"):
        training.CategoryCodes([["a"], ["b"]]).fit(pd.DataFrame({"x": ["a"]}))
    fitted = training.CategoryCodes([["a"]]).fit(pd.DataFrame({"x": ["a"]}))
    with pytest.raises(ValueError, match="1 category lists for 2 columns"):
        fitted.transform(pd.DataFrame({"x": ["a"], "y": ["b"]}))
    with pytest.raises(TypeError, match="takes a DataFrame"):
        fitted.transform(np.array([["a"]], dtype=object))


def test_category_codes_survive_clone_and_an_artifact_round_trip(tmp_path) -> None:
    """Artifacts pickle batchwatch.training.CategoryCodes by that path: it must stay importable there."""
    import joblib
    from sklearn.base import clone

    frame = pd.DataFrame({"country": ["DE", "FR", "XX", None]})
    fitted = training.CategoryCodes([["DE", "FR"]]).fit(frame)
    joblib.dump(fitted, tmp_path / "codes.joblib")
    loaded = joblib.load(tmp_path / "codes.joblib")
    np.testing.assert_array_equal(loaded.transform(frame), [[0], [1], [np.nan], [np.nan]])
    assert clone(fitted).get_params() == {"categories": [["DE", "FR"]]}


# --- labelled data from the warehouse -----------------------------------------------------------


def test_read_labelled_respects_the_window_and_label_maturity(fraud_spec, sqlite_engine) -> None:
    batch = simulate(D1, D1 + timedelta(days=2), rows_per_day=1500, seed=4, malformed_rate=0.01)
    load_frame(sqlite_engine, "transactions", batch.transactions)
    load_frame(sqlite_engine, "outcomes", batch.outcomes)
    tx, outcomes = batch.transactions, batch.outcomes
    start, end = D1 + timedelta(hours=12), D1 + timedelta(days=1, hours=12)
    as_of = D1 + timedelta(days=5, hours=6)  # label.delay_days is 4: events before D1 + 1 d 6 h have matured

    frame = read_labelled(sqlite_engine, fraud_spec, start, end, as_of)

    matured = pd.Timestamp(as_of - timedelta(days=fraud_spec.label.delay_days))
    in_window = (tx["event_time"] >= pd.Timestamp(start)) & (tx["event_time"] < pd.Timestamp(end))
    observed = outcomes["observed_at"] <= pd.Timestamp(as_of)
    clean = batch.malformed.isna()
    expected = tx[(in_window & (tx["event_time"] < matured)).to_numpy()]
    assert 0 < len(expected) < in_window.sum()
    assert (~clean[expected.index]).any(), "rows arrive unvalidated: train validates, and profiles them as they came"
    assert observed[expected.index].all(), "every matured event has its label"
    assert (in_window & observed & (tx["event_time"] >= matured)).any(), "some later labels are in, and are left out on purpose"
    assert frame["transaction_id"].tolist() == expected["transaction_id"].astype(str).tolist()  # oldest first
    assert frame[LABEL].tolist() == outcomes.loc[expected.index, "label"].tolist()
    assert list(frame.columns) == ["transaction_id", "event_time", *fraud_spec.source_columns, LABEL]
    assert frame.index.tolist() == list(range(len(frame)))
    assert len(validate(frame, fraud_spec).rejected) == (~clean[expected.index]).sum()


def test_read_labelled_then_train_end_to_end(fraud_spec, sqlite_engine) -> None:
    batch = simulate(D1, D1 + timedelta(days=3), rows_per_day=4000, seed=8, malformed_rate=0.01)
    load_frame(sqlite_engine, "transactions", batch.transactions)
    load_frame(sqlite_engine, "outcomes", batch.outcomes)
    end = D1 + timedelta(days=3)
    frame = read_labelled(sqlite_engine, fraud_spec, D1, end, end + timedelta(days=10))
    assert len(frame) == 12_000
    result = train(fraud_spec, frame)
    valid = 12_000 - 120  # train learns from the valid rows only
    assert result.metrics["validation"]["rows"] == valid - int(valid * 0.8)
    assert result.reference.numeric["amount"].rows + result.metrics["validation"]["rows"] < 12_000, (
        "profiled: rows before the holdout, as they arrived"
    )
    assert result.reference.numeric["amount"].nulls > 0, "the malformed NaN amounts are part of the reference"
    assert result.metrics["validation"]["roc_auc"] > 0.8
