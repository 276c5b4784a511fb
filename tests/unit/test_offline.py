"""The offline check: two DataFrames, no database, model, spec or entity key; the hourly check's verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batchwatch.errors import InvalidArgument
from batchwatch.monitoring import drift
from batchwatch.monitoring.offline import compare_frames


def frames(n_reference: int, n_current: int, *, shift: float = 0.0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def draw(n: int, move: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "Amount": rng.lognormal(3 + move, 1, n),  # upper case: no renaming needed
                "Visits": rng.poisson(2, n),  # ints
                "Country": rng.choice(["DE", "FR", "NL", "PL"], n, p=[0.4, 0.3, 0.2, 0.1]),  # no category list anywhere
                "Segment": pd.Categorical(rng.choice(["a", "b"], n)),
            }
        )

    return draw(n_reference, 0.0), draw(n_current, shift)


def test_the_same_distribution_is_not_drifted_and_without_scores_no_score_test_runs() -> None:
    reference, current = frames(50_000, 5_000)
    comparison = compare_frames(reference, current)
    assert comparison.status == drift.OK and comparison.drifted == []
    assert set(comparison.checks) == {
        "distribution:Amount", "null_rate:Amount", "distribution:Visits", "null_rate:Visits", "distribution:Country", "unseen:Country",
        "null_rate:Country", "distribution:Segment", "unseen:Segment", "null_rate:Segment", "multivariate",
    }
    table = comparison.table()
    assert not table["column_name"].eq(drift.SCORES).any() and len(table) == len(comparison.results)


def test_a_shift_is_drifted_and_scores_are_compared_when_both_sides_have_them() -> None:
    reference, current = frames(50_000, 5_000, shift=0.5)
    rng = np.random.default_rng(1)
    comparison = compare_frames(reference, current, reference_scores=rng.beta(1, 20, 50_000), current_scores=rng.beta(1, 20, 5_000),
                                settings={"multivariate": {"enabled": False}})
    assert comparison.status == drift.DRIFTED
    assert comparison.checks["distribution:Amount"] == drift.DRIFTED and comparison.checks["distribution:Country"] == drift.OK
    assert comparison.checks["score_distribution:__score__"] == drift.OK and "multivariate" not in comparison.checks
    assert comparison.drifted[0].startswith("distribution:Amount: ks")


def test_bad_input_is_named() -> None:
    reference, current = frames(1_000, 1_000)
    with pytest.raises(InvalidArgument, match=r"columns \['Missing'\] are not in both frames"):
        compare_frames(reference, current, columns=["Amount", "Missing"])
    with pytest.raises(InvalidArgument, match="column 'Country' is compared as numeric"):
        compare_frames(reference, current, columns=["Country"], categorical=[])
    with pytest.raises(ValueError, match="fdr"):
        compare_frames(reference, current, settings={"fdr": 2})
