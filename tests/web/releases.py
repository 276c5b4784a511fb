"""Releases and a chaos drill as the core records them, for the page tests (tests/web/test_release_page.py, tests/browser).

A canary starts with promotion.releases.start_canary. Each morning's look is promotion.canary.judge_step over the served
rows of the step's days so far: synthetic days of scores and labels per arm (numpy), each day's labels maturing once the
spec's label delay has passed, the challenger a little sharper than the champion and flagging the same share. The look is
applied with the functions the daily decision applies it with (releases.advance, releases.set_status to await approval)
and recorded as its release_decision event. A person's approval goes through canary.resolve_approval, which promotes and
starts the guard; the guard's look is the paired DeLong comparison it makes (stats.comparisons) on synthetic rows both
versions scored, placed against the guard margin by its always-valid interval. The drill rows have the shape
monitoring.drill writes: every fault's FaultResult.to_dict(), then the control's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from batchwatch import registry
from batchwatch.promotion import canary, releases
from batchwatch.spec import ModelSpec, get_spec, parse_spec
from batchwatch.stats.comparisons import delong_paired
from batchwatch.stats.sequential import confidence_sequence
from batchwatch.warehouse import schema

ROWS_PER_DAY = 20_000
PREVALENCE = 0.1
REJECT_RATE = 0.002  # rows quarantined, alike in both arms
ALERT_RATE = 0.05  # both models flag this share of their arm: a challenger's threshold is fitted to the same alert rate
SIGNAL = {"control": 1.6, "treatment": 1.75}  # how far positives' scores sit from negatives', in standard deviations
STEPS = [0.05, 0.25, 0.5]
MARGIN = 0.05  # wide enough that a few thousand labelled rows per arm give the power asked for
GUARD_DAYS, GUARD_MARGIN = 7, 0.02


def release_spec(model_name: str) -> ModelSpec:
    """The model's spec with the canary the page shows: 5% -> 25% -> 50% -> promote, a person's approval, a week's guard."""
    data = get_spec(model_name).model_dump(mode="json")
    data["release"] = {"canary": {**data["release"]["canary"], "steps": STEPS, "margin": MARGIN}, "approval": True,
                       "guard_days": GUARD_DAYS, "guard_margin": GUARD_MARGIN}
    return parse_spec(data)


def register_versions(engine: sa.Engine, model_name: str, versions: range) -> None:
    """Registry rows for `versions` (no artifact: nothing here scores), the first one champion."""
    created = datetime(2026, 9, 1, tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.model_versions), [
            {"model_name": model_name, "version": version, "artifact_uri": f"file:///artifacts/{model_name}/{version}.joblib",
             "sha256": f"{version:064d}", "metrics": {"validation": {"roc_auc": 0.86, "brier": 0.07}}, "params": {}, "features": [],
             "pipeline_steps": [], "trained_on": {"rows": 42_000}, "parent_version": version - 1 if version > 1 else None,
             "created_at": created + timedelta(days=7 * version), "threshold": 0.4, "threshold_policy": None, "calibration": None}
            for version in versions
        ])
    registry.set_alias(engine, model_name, "champion", versions[0], reason="test world", actor="test")


def _flagged(scores: np.ndarray) -> np.ndarray:
    return (scores >= np.quantile(scores, 1 - ALERT_RATE)).astype(int) if len(scores) else np.zeros(0, int)


@cache
def served_day(ds: date, share: float) -> pd.DataFrame:
    """One scored day's served rows: an arm per entity at `share`, scores of the model that served it, and the labels to come."""
    rng = np.random.default_rng([ds.toordinal(), 13])
    treatment = rng.random(ROWS_PER_DAY) < share
    labels = (rng.random(ROWS_PER_DAY) < PREVALENCE).astype(float)
    scores = 1 / (1 + np.exp(-(rng.normal(labels * np.where(treatment, SIGNAL["treatment"], SIGNAL["control"]), 1.0) - 2.2)))
    flagged = np.zeros(ROWS_PER_DAY, int)
    flagged[treatment], flagged[~treatment] = _flagged(scores[treatment]), _flagged(scores[~treatment])
    return pd.DataFrame({"ds": ds, "entity_id": ds.toordinal() * ROWS_PER_DAY + np.arange(ROWS_PER_DAY),
                         "role": np.where(treatment, "shadow", "champion"), "arm": np.where(treatment, "treatment", "control"),
                         "score": scores, "predicted_label": flagged, "label": labels})


def step_frame(spec: ModelSpec, first: date, today: date, share: float) -> pd.DataFrame:
    """The served rows of the scored days [first, today), labelled where the day's labels have matured by the morning of `today`."""
    frame = pd.concat([served_day(first + timedelta(days=d), share) for d in range((today - first).days)], ignore_index=True)
    frame["matured"] = [(today - ds).days > spec.label.delay_days for ds in frame["ds"]]
    frame.loc[~frame["matured"], "label"] = np.nan
    return frame


def morning_actor(spec: ModelSpec, today: date) -> str:
    return f"{spec.name}_release/scheduled__{today:%Y-%m-%d}T07:00:00+00:00"


def record_look(engine: sa.Engine, spec: ModelSpec, release: releases.Release, look: canary.Look) -> None:
    """Apply the look as the daily decision does (ramp, or await approval) and record it as its release_decision event."""
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        if look.verdict == "advance":
            share = releases.advance(connection, release, effective_from=look.decided_on)
            look.applied = f"advanced to step {release.step + 2}: {share:.0%} of entities from {look.decided_on}"
        elif look.verdict == "promote":
            releases.set_status(connection, release, "awaiting_approval")
            look.applied = "awaiting approval: the promotion waits for a person in the Airflow UI"
        registry.record_event(connection, spec.name, "release_decision", version=release.version, previous_version=release.baseline_version,
                              reason=f"{look.verdict}: {look.reason}", actor=morning_actor(spec, look.decided_on), details=look.to_dict())


@dataclass(frozen=True)
class Canary:
    release_id: int
    looks: list[canary.Look]  # oldest first
    frames: dict[date, pd.DataFrame]  # what each look judged, by its day


def run_canary(engine: sa.Engine, spec: ModelSpec, challenger: int, *, starts_on: date, reason: str) -> Canary:
    """Start a canary and look at it every morning until it awaits approval (or stops)."""
    release = releases.start_canary(engine, spec, challenger, starts_on=starts_on, actor="cli by tester", reason=reason)
    looks, frames = [], {}
    today = starts_on + timedelta(days=1)
    while True:
        with engine.connect() as connection:
            release = releases.get_release(connection, release.id)
            first = releases.steps_of(connection, release.id)[-1]["effective_from"]
        frames[today] = step_frame(spec, first, today, release.share)
        served = frames[today]["arm"].value_counts()
        rejects = {arm: round(REJECT_RATE * served.get(arm, 0)) for arm in ("control", "treatment")}
        look = canary.judge_step(spec, release, frames[today], rejects, days_in_step=(today - first).days, decided_on=today)
        record_look(engine, spec, release, look)
        looks.append(look)
        if look.verdict in ("promote", "stop"):
            return Canary(release.id, looks, frames)
        today += timedelta(days=1)


def guard_look(engine: sa.Engine, spec: ModelSpec, today: date) -> canary.Look:
    """The guard's look on `today`: the new champion against the previous one on rows both scored whose labels matured, recorded."""
    with engine.connect() as connection:
        guard = releases.active_release(connection, spec.name)
    rng = np.random.default_rng([today.toordinal(), 21])
    rows = ROWS_PER_DAY // 2
    labels = (rng.random(rows) < PREVALENCE).astype(int)
    common = rng.normal(labels * 1.6, 0.8)  # what both models see: their scores move together, as paired DeLong exploits
    previous, new = common + rng.normal(0, 0.6, rows), common + labels * 0.1 + rng.normal(0, 0.6, rows)
    comparison = delong_paired(labels, previous, new, metric="roc_auc")
    margin, alpha = spec.release.guard_margin, spec.release.canary.alpha
    lower, upper = confidence_sequence(comparison.difference, comparison.standard_error, alpha=alpha, mixture_sd=margin)
    outcome = "worse" if upper < -margin else ("non_inferior" if lower > -margin else "undecided")
    judged = canary.Judged(comparison, "primary", margin, lower, upper, outcome)
    look = canary.Look(guard.id, "guard", today, "hold", judged.line(), tests=[judged], n_treatment=rows, n_control=rows)
    with engine.begin() as connection:
        registry.record_event(connection, spec.name, "release_decision", version=guard.version, previous_version=guard.baseline_version,
                              reason=f"{look.verdict}: {look.reason}", actor=morning_actor(spec, today), details=look.to_dict())
    return look


# --- the chaos drill ----------------------------------------------------------------------------------------------


def fault_result(fault: str, start: datetime | None, injected: dict[str, Any], expected: tuple[str, ...],
                 fired: list[tuple[str, float]], runs: dict[str, int], incidents: list[str] = ()) -> dict[str, Any]:
    """FaultResult.to_dict() of a sandbox where each detector in `fired` fired that many hours after `start` (the control: None)."""
    origin = start or datetime(2026, 10, 1, tzinfo=timezone.utc)
    detections = [{"detector": name, "at": (origin + timedelta(hours=hours)).isoformat(), "delay_hours": None if start is None else hours}
                  for name, hours in fired]
    return {
        "fault": fault, "start": None if start is None else start.isoformat(), "injected": injected, "expected": list(expected),
        "caught": bool(detections), "caught_by": list(dict.fromkeys(d["detector"] for d in detections)),
        "first_detection": detections[0]["at"] if detections else None, "delay_hours": detections[0]["delay_hours"] if detections else None,
        "detections": detections,
        "missed_expected": [name for name in expected if not any(d["detector"].startswith(name) for d in detections)],
        "incidents": [{"kind": kind, "window_end": origin.isoformat(), "summary": f"{kind} finding"} for kind in incidents], "runs": runs,
    }


def drill_faults(window_end: date, *, flipped_labels_caught: bool) -> list[dict[str, Any]]:
    """A week's drill of the fraud monitors: each fault caught as the monitors would catch it, flipped labels seen or not."""
    last = datetime.combine(window_end - timedelta(days=1), time(), timezone.utc)
    noon, ripe = last + timedelta(hours=12), last - timedelta(days=5)
    runs = {"nightly": 1, "drift": 12, "daily": 1}
    return [
        fault_result("shifted_feature", noon, {"what": "a numeric feature moved by one reference standard deviation from noon of the last day on",
                                               "column": "amount", "shift": 61.3, "rows": 1_504}, ("drift:distribution:amount",),
                     [("drift:distribution:amount", 1.08), ("prediction_drift:ks", 3.08)], runs, ["drift"]),
        fault_result("null_burst", noon, {"what": "a feature left empty for three hours from noon of the last day", "column": "country",
                                          "rows": 371}, ("drift:null_rate:country",), [("drift:null_rate:country", 1.08)], runs, ["drift"]),
        fault_result("corrupted_scores", last, {"what": "the champion's stored scores of the last day replaced by uniform noise", "rows": 3_000},
                     ("performance:estimated",), [("performance:estimated:roc_auc", 30.0), ("performance:estimated:brier", 30.0)],
                     {"daily": 1}, ["performance"]),
        fault_result("flipped_labels", ripe, {"what": "a fifth of the labels of the newest day whose labels have matured flipped", "rows": 602},
                     ("performance:realized",), [("performance:realized:roc_auc", 150.0)] if flipped_labels_caught else [],
                     {"daily": 6}, ["performance"] if flipped_labels_caught else []),
        fault_result("missing_day", last, {"what": "the last day's source rows never arrive, so the nightly run scores nothing", "rows": 3_000},
                     ("volume:missing",), [("volume:missing", 30.0)], {"nightly": 1, "daily": 1}, ["volume"]),
        fault_result("control", None, {}, (), [], {"nightly": 3, "drift": 24, "daily": 6}),
    ]


def insert_drill(engine: sa.Engine, model_name: str, window_end: date, *, days: int, finished_at: datetime, flipped_labels_caught: bool) -> None:
    """A drill_reports row as run_drill writes it: failed when a fault went unseen."""
    faults = drill_faults(window_end, flipped_labels_caught=flipped_labels_caught)
    with engine.begin() as connection:
        connection.execute(sa.insert(schema.drill_reports).values(
            model_name=model_name, run_id=f"manual__{finished_at:%Y-%m-%dT%H:%M:%S}+00:00", window_start=window_end - timedelta(days=days),
            window_end=window_end, status="passed" if all(f["caught"] for f in faults[:-1]) else "failed", faults=faults,
            started_at=finished_at - timedelta(minutes=6), finished_at=finished_at,
        ))
