"""Dotted paths that stored artifacts and specs name keep working after the core's move into sub-packages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchwatch.data.features import build_features
from batchwatch.registry import read_artifact
from batchwatch.scoring import score
from batchwatch.spec import resolve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_an_artifact_dumped_before_the_move_loads_and_scores_as_it_did(fraud_spec) -> None:
    """The fixture was dumped by commit cb4ae1c, whose pipeline pickled `batchwatch.training.CategoryCodes`."""
    expected = json.loads((FIXTURES / "fraud_pipeline_2026_11.json").read_text())
    artifact = FIXTURES / "fraud_pipeline_2026_11.joblib"
    assert b"batchwatch.training" in artifact.read_bytes(), "the fixture must pickle the old path"
    pipeline = read_artifact(artifact, expected["sha256"], "the stored fixture")
    rows = pd.read_csv(FIXTURES / "fraud_probe_rows.csv")
    np.testing.assert_allclose(score(pipeline, build_features(rows, fraud_spec)), expected["scores"], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "dotted_path",
    ["batchwatch.training.hist_gradient_boosting", "batchwatch.training.gradient_boosting", "batchwatch.fraud_demo.derive_features"],
)
def test_paths_named_by_specs_resolve(dotted_path: str) -> None:
    assert callable(resolve(dotted_path, "estimator.factory"))
