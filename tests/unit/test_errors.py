"""One error hierarchy: what a retry cannot fix is a PermanentError, whatever module raises it."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchwatch import errors, registry, scoring, spec
from batchwatch.errors import BatchwatchError, InvalidArgument, PermanentError
from batchwatch.modeling import training
from batchwatch.monitoring import drift
from batchwatch.promotion import retrain

DAY = datetime(2026, 10, 11, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("error", "kept_base"),
    [
        pytest.param(spec.SpecError, ValueError, id="SpecError"),
        pytest.param(registry.RegistryError, RuntimeError, id="RegistryError"),
        pytest.param(registry.ArtifactIntegrityError, registry.RegistryError, id="ArtifactIntegrityError"),
        pytest.param(drift.NoReference, registry.RegistryError, id="NoReference"),
        pytest.param(retrain.PromotionRefused, registry.RegistryError, id="PromotionRefused"),
        pytest.param(scoring.NoChampion, RuntimeError, id="NoChampion"),
        pytest.param(scoring.RejectRateExceeded, RuntimeError, id="RejectRateExceeded"),
        pytest.param(scoring.DuplicateEntity, RuntimeError, id="DuplicateEntity"),
        pytest.param(training.NotEnoughLabelledData, ValueError, id="NotEnoughLabelledData"),
        pytest.param(InvalidArgument, ValueError, id="InvalidArgument"),
    ],
)
def test_every_error_a_retry_cannot_fix_is_permanent_and_keeps_its_old_base(error: type[Exception], kept_base: type[Exception]) -> None:
    """The operators catch PermanentError alone; `except ValueError` / `except RuntimeError` elsewhere still work."""
    assert issubclass(error, PermanentError) and issubclass(error, BatchwatchError)
    assert issubclass(error, kept_base)


def test_too_little_labelled_data_is_permanent(fraud_spec) -> None:
    rows = 50
    labelled = pd.DataFrame(
        {
            "transaction_id": [str(i) for i in range(rows)],
            "event_time": pd.date_range(DAY, periods=rows, freq="min", tz="UTC"),
            "amount": 10.0, "hour": 3, "day_of_week": 2, "txn_count_30d": 4, "avg_amount_7d": 12.0,
            "merchant_category": "grocery", "country": "US", "channel": "pos",
            training.LABEL: np.arange(rows) % 2,
        }
    )  # fmt: skip
    with pytest.raises(training.NotEnoughLabelledData, match="not enough labelled data to train fraud: 50 valid rows") as raised:
        training.train(fraud_spec, labelled)
    assert isinstance(raised.value, PermanentError)


def test_an_interval_that_is_not_one_day_is_permanent(fraud_spec, sqlite_engine) -> None:
    with pytest.raises(InvalidArgument, match=r"fraud: the nightly job scores one day per run, got the interval"):
        scoring.predict_interval(sqlite_engine, fraud_spec, start=DAY, end=DAY + timedelta(days=2), run_id="two-days")


def test_a_naive_window_end_is_permanent(fraud_spec) -> None:
    with pytest.raises(InvalidArgument, match="window end must be timezone-aware"):
        drift.window_of(fraud_spec, datetime(2026, 10, 11, 12))


@pytest.mark.parametrize("days", [0, -3])
def test_a_training_window_under_one_day_is_permanent(fraud_spec, days: int) -> None:
    with pytest.raises(InvalidArgument, match=f"training_window_days must be at least 1, got {days}"):
        retrain.training_window(fraud_spec, DAY, days)


def test_the_errors_module_imports_nothing_from_the_project() -> None:
    """Every layer imports it, so it must import none of them."""
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert imported == ["__future__"]
