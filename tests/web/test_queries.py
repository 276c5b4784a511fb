"""The read layer against what the real jobs wrote, on SQLite and PostgreSQL: values, not shapes."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from batchwatch import queries

from .conftest import DRIFT_DAY, SCORED_DAYS


def test_the_overview_names_the_champion_the_incidents_and_last_night(world):
    overview = queries.model_overview(world["engine"], "fraud")
    assert overview.champion.version == world["first"]  # v3 was rolled back from
    assert overview.challenger is None
    assert 0.5 < overview.champion.holdout_auc <= 1 and 0 < overview.champion.holdout_brier < 0.25
    assert overview.open_incidents == 0  # the clean day after the drift resolved it
    last = world["summaries"][-1]
    assert overview.latest_day.ds == DRIFT_DAY.date()
    assert (overview.latest_day.rows_scored, overview.latest_day.rows_rejected) == (last["rows_scored"], last["rows_rejected"])
    assert overview.latest_day.reject_rate == pytest.approx(last["reject_rate"], abs=1e-6)
    assert overview.latest_day.positive_rate == pytest.approx(last["positive_rate"], abs=1e-6)


def test_the_heatmap_places_every_stored_test_in_its_window(world):
    engine, windows = world["engine"], world["windows"]
    heatmap = queries.drift_heatmap(engine, "fraud", days=30, now=windows[-1])
    assert heatmap.windows == windows
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT COUNT(*) FROM drift_results WHERE model_name = 'fraud'")).scalar_one()
    assert sum(verdict is not None for check in heatmap.checks for verdict in check.verdicts) == stored
    row = {(check.column, check.test): check for check in heatmap.checks}
    assert row[("country", "null_rate")].verdicts == ["ok", "drifted", "ok"]
    assert row[("merchant_category", "unseen_share")].verdicts == ["ok", "drifted", "ok"]
    with engine.connect() as connection:
        effect = connection.execute(sa.text(
            "SELECT effect_size FROM drift_results WHERE model_name = 'fraud' AND column_name = 'merchant_category'"
            " AND test = 'unseen_share' ORDER BY window_end"
        )).scalars().all()
    assert row[("merchant_category", "unseen_share")].effect_sizes == pytest.approx(effect, rel=1e-12)
    assert row[("merchant_category", "unseen_share")].effect_sizes[1] == pytest.approx(0.03, abs=0.01)
    assert row[("country", "null_rate")].drifted and not row[("amount", "ks")].drifted
    assert heatmap.checks[-1].column == queries.SCORE_COLUMN  # scores sort after the features
    # A window older than `days` drops out.
    assert queries.drift_heatmap(engine, "fraud", days=1, now=windows[-1]).windows == windows[1:]


def test_a_drift_check_carries_its_numbers_and_the_reference(world):
    engine, window = world["engine"], world["windows"][1]
    detail = queries.drift_check(engine, "fraud", window_end=window, column="country", test="null_rate")
    assert detail.verdict == "drifted" and detail.window_end == window and detail.model_version == world["first"]
    assert detail.details["current_rate"] == pytest.approx(0.5, abs=0.05) and detail.details["reference_rate"] < 0.05
    assert detail.p_adjusted >= detail.p_value and detail.effect_size > detail.threshold
    assert detail.n_current > 2_000 and detail.reference["nulls"] >= 0 and "frequencies" in detail.reference
    assert {sibling.test for sibling in detail.siblings} == {"chi2", "jensen_shannon", "unseen_share"}

    amount = queries.drift_check(engine, "fraud", window_end=window, column="amount", test="ks")
    assert "sample" not in amount.reference
    assert len(amount.reference["counts"]) == len(amount.reference["edges"]) + 1
    assert sum(amount.reference["counts"]) == amount.reference["rows"] - amount.reference["nulls"]
    assert amount.details["current_mean"] > 0
    with pytest.raises(queries.NotFound, match="no drift test 'ks' of column 'country'"):
        queries.drift_check(engine, "fraud", window_end=window, column="country", test="ks")


def test_prediction_volume_per_day_matches_the_runs_and_the_scores(world):
    engine = world["engine"]
    volume = queries.prediction_volume(engine, "fraud", days=30)
    assert [day.ds for day in volume] == [day.date() for day in SCORED_DAYS]
    for day, summary in zip(volume, world["summaries"], strict=True):
        assert day.rows_scored == summary["rows_scored"] and day.rows_rejected == summary["rows_rejected"]
        assert day.rows_by_role == {"champion": summary["rows_scored"]}
        assert day.positive_rate == pytest.approx(summary["positive_rate"], abs=1e-6)
        with engine.connect() as connection:
            scores = connection.execute(
                sa.text("SELECT score FROM predictions WHERE model_name = 'fraud' AND role = 'champion' AND ds = :d"), {"d": day.ds}
            ).scalars().all()
        expected = np.quantile(scores, queries.SCORE_QUANTILES)
        assert list(day.score_quantiles.values()) == pytest.approx(list(expected), rel=1e-9)
    assert [day.ds for day in queries.prediction_volume(engine, "fraud", days=2)] == [d.date() for d in SCORED_DAYS[1:]]
    assert queries.prediction_volume(engine, "nobody") == []


def test_versions_lineage_aliases_and_rollback_marks(world):
    rows = {row.version: row for row in queries.versions(world["engine"], "fraud")}
    first, candidate, third = world["first"], world["candidate"], world["third"]
    assert list(rows) == [third, candidate, first]
    assert rows[first].aliases == ["champion"] and rows[candidate].aliases == [] and rows[third].aliases == []
    assert rows[candidate].parent_version == first
    assert rows[third].rolled_back_at is not None and rows[third].rolled_back_reason == "flags too many grocery purchases"
    assert rows[first].rolled_back_at is None
    assert rows[candidate].holdout_auc == rows[candidate].metrics["validation"]["roc_auc"]


def test_the_alias_history_and_the_promotion_decision(world):
    engine = world["engine"]
    history = queries.alias_history(engine, "fraud")
    assert [(event.event, event.alias, event.version) for event in history] == [
        ("set_champion", "champion", world["first"]),
        ("rejected", None, world["candidate"]),
        ("set_champion", "champion", world["third"]),
        ("rollback", "champion", world["first"]),
    ]
    assert history[-1].actor == "cli by tester" and history[-1].previous_version == world["third"]
    assert history[-1].created_at - history[0].created_at < timedelta(minutes=10)

    [decision] = queries.promotion_decisions(engine, "fraud")
    assert (decision.decision, decision.version, decision.champion_version) == ("rejected", world["candidate"], world["first"])
    assert decision.failed_gates == world["decision"]["failed_gates"]
    assert [(gate.name, gate.passed) for gate in decision.gates] == [(gate.name, gate.passed) for gate in world["gates"]]
    auc = next(gate for gate in decision.gates if gate.name == "roc_auc_floor")
    assert auc.value == pytest.approx(next(g.value for g in world["gates"] if g.name == "roc_auc_floor")) and auc.threshold == 0.7


def test_incidents_say_what_opened_them_and_when_they_ended(world):
    [incident] = queries.incidents(world["engine"], "fraud")
    windows = world["windows"]
    assert incident.status == "resolved"
    assert (incident.opened_window_end, incident.resolved_window_end) == (windows[1], windows[2])
    assert any(check.startswith("null_rate:country") for check in incident.drifted)
    assert incident.resolved_at >= incident.opened_at
    assert incident.open_notified_at is None  # nothing announced it in this world


def test_the_cli_prints_versions_and_history_from_the_read_layer(world, capsys):
    from batchwatch.cli import main

    main(["--warehouse", world["url"], "versions", "fraud"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "alias", "created_at", "parent", "holdout_auc", "holdout_brier", "rows", "window", "sha256",
                                "rolled_back"]
    assert [line.split()[0] for line in lines[1:]] == [str(world["third"]), str(world["candidate"]), str(world["first"])]
    assert lines[-1].split()[1] == "champion" and lines[1].rstrip()[-16:-6].count("-") == 2  # v3 shows when it was rolled back

    main(["--warehouse", world["url"], "history", "fraud"])
    last = capsys.readouterr().out.splitlines()[-1]
    assert "rollback" in last and "champion" in last and "cli by tester" in last and "flags too many grocery purchases" in last
