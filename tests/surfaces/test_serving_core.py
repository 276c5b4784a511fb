"""Served predictions are the rows the nightly job wrote: the champion's, of the latest day."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

from batchwatch.data.validation import MAX_KEY_LENGTH
from batchwatch.serving import MAX_BATCH, InvalidLookup, latest_prediction, latest_predictions
from batchwatch.warehouse import replace_interval

from .conftest import DRIFT_DAY, FIRST_DAY


def written(engine, ds) -> dict[str, dict]:
    query = "SELECT * FROM predictions WHERE model_name = 'fraud' AND ds = :ds AND role = 'champion'"
    with engine.connect() as connection:
        return {row["entity_id"]: dict(row) for row in connection.execute(sa.text(query), {"ds": ds}).mappings()}


def test_a_served_prediction_is_the_row_the_nightly_job_wrote(served_world):
    engine = served_world["engine"]
    rows = written(engine, DRIFT_DAY.date())
    assert len(rows) == served_world["runs"][1]["rows_scored"]
    entity_id = sorted(rows)[7]
    served = latest_prediction(engine, "fraud", entity_id)
    row = rows[entity_id]
    assert served is not None
    assert (served.score, served.predicted_label, served.model_version, served.role, served.ds, served.run_id) == (
        row["score"], row["predicted_label"], served_world["champion"], "champion", DRIFT_DAY.date(), f"scheduled__{DRIFT_DAY.date()}"
    )
    assert served.to_dict()["ds"] == DRIFT_DAY.date().isoformat()
    assert latest_prediction(engine, "fraud", "no-such-entity") is None
    assert latest_prediction(engine, "churn", entity_id) is None, "another model's lookup never sees fraud's rows"


def test_the_latest_day_is_served_and_never_the_shadow(served_world):
    engine = served_world["engine"]
    entity_id = sorted(written(engine, FIRST_DAY.date()))[0]
    later = DRIFT_DAY + timedelta(days=1)
    at = datetime(2026, 10, 18, 1, tzinfo=timezone.utc)
    with replace_interval(engine, "fraud", later.date(), "manual__later", at) as writer:
        writer.write_predictions(served_world["champion"], "champion", [entity_id], np.array([0.875]), np.array([1]))
        writer.write_predictions(99, "shadow", [entity_id], np.array([0.125]), np.array([0]))
    served = latest_prediction(engine, "fraud", entity_id)
    assert (served.ds, served.score, served.predicted_label, served.role, served.run_id) == (later.date(), 0.875, 1, "champion", "manual__later")
    assert served.scored_at == at
    assert latest_predictions(engine, "fraud", [entity_id])[entity_id] == served


def test_a_batch_answers_the_ids_that_have_a_prediction_in_their_order(served_world):
    engine = served_world["engine"]
    rows = {**written(engine, FIRST_DAY.date()), **written(engine, DRIFT_DAY.date())}
    ids = sorted(rows)[:40:4] + ["unknown-1"] + sorted(rows)[-3:]
    found = latest_predictions(engine, "fraud", [*ids, ids[0]])
    assert list(found) == [entity_id for entity_id in ids if entity_id != "unknown-1"]
    for entity_id, served in found.items():
        assert served == latest_prediction(engine, "fraud", entity_id)
        assert served.score == rows[entity_id]["score"]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        pytest.param([], "no entity ids given", id="empty"),
        pytest.param([str(n) for n in range(MAX_BATCH + 1)], f"{MAX_BATCH + 1} entity ids given; a batch lookup takes at most {MAX_BATCH}",
                     id="too-many"),
        pytest.param(["1", " "], "entity id #2: the entity id is empty", id="blank"),
        pytest.param(["k" * (MAX_KEY_LENGTH + 1)], f"at most {MAX_KEY_LENGTH}", id="too-long"),
    ],
)
def test_an_impossible_batch_is_refused_with_the_reason(sqlite_engine_only, ids, message):
    with pytest.raises(InvalidLookup, match=message):
        latest_predictions(sqlite_engine_only, "fraud", ids)


def test_repeated_ids_are_looked_up_once(sqlite_engine_only):
    assert latest_predictions(sqlite_engine_only, "fraud", ["42"] * MAX_BATCH) == {}
    with pytest.raises(InvalidLookup, match=f"{MAX_BATCH + 1} entity ids given"):
        latest_predictions(sqlite_engine_only, "fraud", ["42"] * (MAX_BATCH + 1))
