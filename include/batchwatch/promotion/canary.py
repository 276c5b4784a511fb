"""The daily release decision: ramp a canary by statistics, and guard a promotion with automatic rollback.

A canary step is judged on the days it was in force: the served predictions of each arm whose labels
have matured. The primary metric must be non-inferior (or superior, when the spec asks), each guardrail
must stay within its margin, and every interval is an always-valid confidence sequence
(stats.sequential), so looking every day does not inflate the error. A step only passes once the data
give the spec's power to pass an equal challenger; it is stopped as soon as the challenger is
significantly worse on the primary metric, or a guardrail is breached beyond its margin. Each look is
an event in model_events with every test, its interval and the power reached.

A guard compares the new champion with the previous one, which keeps scoring in shadow, on the same
rows (paired DeLong) once labels mature, and on the daily estimates before; worse beyond the margin
rolls the promotion back through the registry's rollback, and an alert says why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch import registry
from batchwatch.hashing import in_share
from batchwatch.monitoring.incidents import Finding, day_window, update_incident
from batchwatch.monitoring.performance import matured
from batchwatch.promotion import releases
from batchwatch.promotion.releases import Release
from batchwatch.promotion.retrain import roll_back
from batchwatch.serialization import json_safe
from batchwatch.spec import LOWER_IS_BETTER, ModelSpec, quote
from batchwatch.stats.comparisons import Comparison, delong_paired, delong_unpaired, two_proportions, welch
from batchwatch.stats.sequential import confidence_sequence, power_non_inferiority, projected_sample_size, required_information
from batchwatch.warehouse import lock_unit, read_frame

log = logging.getLogger(__name__)

# Verdicts of one look. insufficient_data: too few labels, or too little power to pass an equal challenger yet;
# hold: enough data, not yet decided; advance / promote: the step passed; stop: worse, or a guardrail breached, or out of time.
# A guard's look: hold, stop (roll back) or pass (the period ended well).
VERDICTS = ("insufficient_data", "hold", "advance", "promote", "stop", "pass")
TWO_SIDED = ("positive_rate",)  # guardrails that must not move either way


@dataclass(frozen=True)
class Judged:
    """One comparison with its always-valid interval and what it means for the decision."""

    comparison: Comparison
    role: str  # primary | guardrail
    margin: float
    lower: float  # always-valid confidence sequence of the difference (treatment - control)
    upper: float
    outcome: str  # superior | non_inferior | undecided | worse | breached | insufficient_data

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**self.comparison.to_dict(), "role": self.role, "margin": self.margin, "cs_lower": self.lower,
                          "cs_upper": self.upper, "outcome": self.outcome})

    def line(self) -> str:
        c = self.comparison
        return (f"{c.metric} ({c.test}): {c.treatment:.4g} vs {c.control:.4g}, difference {c.difference:+.4f} "
                f"[{self.lower:+.4f}, {self.upper:+.4f}] against margin {self.margin:g}: {self.outcome}")


@dataclass
class Look:
    """One day's decision of a release."""

    release_id: int
    kind: str
    decided_on: date
    verdict: str
    reason: str
    step: int | None = None
    share: float | None = None
    tests: list[Judged] = field(default_factory=list)
    power: float | None = None
    required_n: int | None = None
    n_treatment: int = 0
    n_control: int = 0
    applied: str | None = None  # what changed: advanced to x%, promoted, stopped, rolled back, awaiting approval

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "release_id": self.release_id, "kind": self.kind, "decided_on": self.decided_on.isoformat(), "verdict": self.verdict,
            "reason": self.reason, "step": self.step, "share": self.share, "tests": [t.to_dict() for t in self.tests], "power": self.power,
            "required_n": self.required_n, "n_treatment": self.n_treatment, "n_control": self.n_control, "applied": self.applied,
        })


# --- reading a step's rows -----------------------------------------------------------------------


def read_release_rows(connection: Connection, spec: ModelSpec, release: Release, first: date, until: date, as_of: datetime) -> pd.DataFrame:
    """Both models' rows of the days [first, until) with each entity's arm and its label observed by `as_of` (NaN if none)."""
    label = spec.label
    outcomes = ".".join(map(quote, label.table.split(".")))
    query = (
        f"SELECT p.ds, p.entity_id, p.role, p.arm, p.score, p.predicted_label, o.{quote(label.column)} AS label"
        f" FROM predictions p LEFT JOIN {outcomes} o ON o.{quote(label.entity_key)} = p.entity_id AND o.{quote(label.observed_at)} <= :as_of"
        " WHERE p.model_name = :m AND p.ds >= :first AND p.ds < :until"
        " AND ((p.role = 'champion' AND p.model_version = :champion) OR (p.role = 'shadow' AND p.model_version = :shadow))"
    )
    # A canary's challenger scores as the shadow; a guard's new champion as the champion, the previous one in shadow.
    champion, shadow = (release.baseline_version, release.version) if release.kind == "canary" else (release.version, release.baseline_version)
    params = {"m": spec.name, "first": first, "until": until, "as_of": as_of, "champion": champion, "shadow": shadow}
    columns = ["ds", "entity_id", "role", "arm", "score", "predicted_label", "label"]
    frame = read_frame(connection.engine, query, params, columns, ["entity_id", "role", "arm"])
    frame["ds"] = pd.to_datetime(frame["ds"]).dt.date
    frame["matured"] = [matured(spec, ds, as_of) for ds in frame["ds"]] if len(frame) else []
    return frame


def _rejects_by_arm(connection: Connection, spec: ModelSpec, release: Release, first: date, until: date, share: float) -> dict[str, int]:
    """Quarantined rows of the step's days by the arm their key hashes to (rows with no key belong to no arm)."""
    keys = connection.execute(
        sa.text("SELECT entity_id FROM rejected_rows WHERE model_name = :m AND ds >= :a AND ds < :b AND entity_id IS NOT NULL"),
        {"m": spec.name, "a": first, "b": until},
    ).scalars().all()
    treatment = int(in_share(list(keys), release.salt, share).sum()) if keys else 0
    return {"treatment": treatment, "control": len(keys) - treatment}


# --- judging ---------------------------------------------------------------------------------------


def _judge(comparison: Comparison, *, role: str, margin: float, alpha: float, superiority: bool = False) -> Judged:
    """Place the always-valid interval of the difference against the margin, in the metric's good direction."""
    standard_error = comparison.standard_error
    if comparison.test == "two_proportion_z" and not standard_error > 0 and min(comparison.n_control, comparison.n_treatment) > 0:
        standard_error = _agresti_caffo_se(comparison)
    if not math.isfinite(standard_error) or standard_error <= 0:
        return Judged(comparison, role, margin, math.nan, math.nan, "insufficient_data")
    lower, upper = confidence_sequence(comparison.difference, standard_error, alpha=alpha, mixture_sd=margin)
    if comparison.metric in TWO_SIDED:
        if lower > margin or upper < -margin:
            outcome = "breached"
        else:
            outcome = "non_inferior" if -margin < lower and upper < margin else "undecided"
        return Judged(comparison, role, margin, lower, upper, outcome)
    # gain: how much better the challenger is, whatever the metric's direction
    sign = -1.0 if comparison.metric in (*LOWER_IS_BETTER, "reject_rate") else 1.0
    gain_lower, gain_upper = sorted((sign * lower, sign * upper))
    if role == "primary":
        if gain_upper < 0:
            outcome = "worse"
        elif gain_lower > 0:
            outcome = "superior"
        elif gain_lower > -margin and not superiority:
            outcome = "non_inferior"
        else:
            outcome = "undecided"
    else:
        outcome = "breached" if gain_upper < -margin else ("non_inferior" if gain_lower > -margin else "undecided")
    return Judged(comparison, role, margin, lower, upper, outcome)


def _squared_errors(rows: pd.DataFrame) -> np.ndarray:
    """Each labelled row's Brier term: the Brier score is their mean, so Welch's t compares two arms' Brier scores."""
    return ((rows["score"] - rows["label"]) ** 2).to_numpy(dtype=float)


def _agresti_caffo_se(comparison: Comparison) -> float:
    """The risk difference's standard error with one success and one failure added to each arm (Agresti & Caffo 2000).

    When neither arm has an event (no row rejected, say) the Wald error is 0 (or undefined) and no interval forms; this one
    stays honest about what n rows can show, so a clean feed passes its guardrail once the arms are large enough.
    """
    def term(rate: float, n: int) -> float:
        adjusted = (rate * n + 1) / (n + 2)
        return adjusted * (1 - adjusted) / (n + 2)

    return math.sqrt(term(comparison.control, comparison.n_control) + term(comparison.treatment, comparison.n_treatment))


def _served(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[((frame["role"] == "champion") & (frame["arm"] == "control")) | ((frame["role"] == "shadow") & (frame["arm"] == "treatment"))]


def _primary(spec: ModelSpec, frame: pd.DataFrame, served: pd.DataFrame) -> Comparison | str:
    """The primary metric's comparison on matured labels, or why it cannot be made yet."""
    settings = spec.release.canary
    metric = settings.primary_metric
    labelled = served[served["matured"] & served["label"].notna()]
    arms = {arm: labelled[labelled["arm"] == arm] for arm in ("control", "treatment")}
    for arm, rows in arms.items():
        positives = int(rows["label"].sum())
        if min(positives, len(rows) - positives) < settings.min_positives:
            return f"the {arm} arm has {positives} labelled positives and {len(rows) - positives} negatives; each needs {settings.min_positives}"
    control, treatment = arms["control"], arms["treatment"]
    if metric == "roc_auc" and settings.design == "paired":
        both = frame[frame["matured"] & frame["label"].notna()].pivot_table(index=["ds", "entity_id"], columns="role", values="score").dropna()
        labels = frame.drop_duplicates(["ds", "entity_id"]).set_index(["ds", "entity_id"])["label"].reindex(both.index)
        return delong_paired(labels.to_numpy(int), both["champion"].to_numpy(), both["shadow"].to_numpy(), metric=metric)
    if metric == "roc_auc":
        return delong_unpaired(control["label"].to_numpy(int), control["score"].to_numpy(), treatment["label"].to_numpy(int),
                               treatment["score"].to_numpy(), metric=metric)
    if metric == "brier":
        return welch(_squared_errors(control), _squared_errors(treatment), metric=metric)
    if metric == "precision":
        flagged = {arm: rows[rows["predicted_label"] == 1] for arm, rows in arms.items()}
        return two_proportions(int(flagged["control"]["label"].sum()), len(flagged["control"]), int(flagged["treatment"]["label"].sum()),
                               len(flagged["treatment"]), metric=metric)
    positives = {arm: rows[rows["label"] == 1] for arm, rows in arms.items()}  # recall
    return two_proportions(int(positives["control"]["predicted_label"].sum()), len(positives["control"]),
                           int(positives["treatment"]["predicted_label"].sum()), len(positives["treatment"]), metric=metric)


def _guardrails(spec: ModelSpec, served: pd.DataFrame, rejects: dict[str, int]) -> list[Comparison]:
    limits = spec.release.canary.guardrails
    arms = {arm: served[served["arm"] == arm] for arm in ("control", "treatment")}
    found = []
    if "positive_rate" in limits:
        found.append(two_proportions(int(arms["control"]["predicted_label"].sum()), len(arms["control"]),
                                     int(arms["treatment"]["predicted_label"].sum()), len(arms["treatment"]), metric="positive_rate"))
    if "brier" in limits:
        labelled = {arm: rows[rows["matured"] & rows["label"].notna()] for arm, rows in arms.items()}
        if all(len(rows) > 1 for rows in labelled.values()):
            found.append(welch(_squared_errors(labelled["control"]), _squared_errors(labelled["treatment"]), metric="brier"))
    if "reject_rate" in limits:
        found.append(two_proportions(rejects["control"], rejects["control"] + len(arms["control"]),
                                     rejects["treatment"], rejects["treatment"] + len(arms["treatment"]), metric="reject_rate"))
    return found


def judge_step(spec: ModelSpec, release: Release, frame: pd.DataFrame, rejects: dict[str, int], *, days_in_step: int, decided_on: date) -> Look:
    """The verdict of one look at a canary step, from its rows; changes nothing."""
    settings = spec.release.canary
    alpha = settings.alpha
    served = _served(frame)
    look = Look(release.id, "canary", decided_on, "hold", "", step=release.step, share=release.share,
                n_treatment=int((served["arm"] == "treatment").sum()), n_control=int((served["arm"] == "control").sum()))
    guardrails = [_judge(c, role="guardrail", margin=settings.guardrails[c.metric], alpha=alpha) for c in _guardrails(spec, served, rejects)]
    primary = _primary(spec, frame, served)
    if isinstance(primary, str):
        look.tests = guardrails
        breached = [g for g in guardrails if g.outcome == "breached"]
        if breached:
            return _stop(look, breached)
        look.verdict, look.reason = "insufficient_data", f"no verdict on {settings.primary_metric} yet: {primary}"
        return _out_of_time(look, days_in_step, settings.max_days_per_step)
    judged = _judge(primary, role="primary", margin=settings.margin, alpha=alpha, superiority=settings.require_superiority)
    look.tests = [judged, *guardrails]
    look.power = power_non_inferiority(primary.standard_error, margin=settings.margin, alpha=alpha, mixture_sd=settings.margin)
    se_required = required_information(settings.margin, alpha=alpha, power=settings.power, mixture_sd=settings.margin)
    look.required_n = projected_sample_size(min(look.n_treatment, look.n_control), primary.standard_error, se_required)
    bad = [t for t in look.tests if t.outcome in ("worse", "breached")]
    if bad:
        return _stop(look, bad)
    passing = ("superior",) if settings.require_superiority else ("superior", "non_inferior")
    # Harm stops at once (above); a step passes only once the sample could pass an equal challenger, so that an early lucky
    # interval on a few dozen positives never ramps.
    if look.power < settings.power:
        look.verdict = "insufficient_data"
        look.reason = (f"power {look.power:.0%} to pass an equal challenger, below {settings.power:.0%}: about {look.required_n:,} served rows "
                       f"per arm needed, {min(look.n_treatment, look.n_control):,} so far")
        return _out_of_time(look, days_in_step, settings.max_days_per_step)
    if judged.outcome in passing and all(g.outcome == "non_inferior" for g in guardrails):
        last = release.step == len(release.steps) - 1
        look.verdict = "promote" if last else "advance"
        look.reason = f"{judged.line()}; every guardrail within its margin"
        return look
    waiting = [t.line() for t in look.tests if t.outcome in ("undecided", "insufficient_data") or (t is judged and t.outcome not in passing)]
    look.verdict, look.reason = "hold", "not decided yet: " + "; ".join(waiting)
    return _out_of_time(look, days_in_step, settings.max_days_per_step)


def _stop(look: Look, bad: list[Judged]) -> Look:
    look.verdict = "stop"
    look.reason = "; ".join(t.line() for t in bad)
    return look


def _out_of_time(look: Look, days_in_step: int, max_days: int) -> Look:
    if days_in_step >= max_days:
        look.verdict = "stop"
        look.reason = f"step {look.step + 1} reached no verdict in {days_in_step} days (release.canary.max_days_per_step {max_days}): {look.reason}"
    return look


# --- the daily decision ------------------------------------------------------------------------------


def earlier_look(connection: Connection, model_name: str, release_id: int, decided_on: date) -> dict[str, Any] | None:
    """The look already recorded for this release and day, if any: a rerun of a day returns it instead of deciding twice."""
    day = decided_on.isoformat()
    return next((d for d in _decisions(connection, model_name) if d.get("release_id") == release_id and d.get("decided_on") == day), None)


def _decisions(connection: Connection, model_name: str) -> list[dict[str, Any]]:
    """Every recorded look of the model's releases, newest first."""
    query = sa.text("SELECT details FROM model_events WHERE model_name = :m AND event = 'release_decision' ORDER BY id DESC")
    return list(connection.execute(query.columns(details=sa.JSON), {"m": model_name}).scalars())


def decide(engine: Engine, spec: ModelSpec, *, today: date, as_of: datetime, run_id: str, actor: str) -> dict[str, Any]:
    """The day's look at the model's release under way, applied: ramp, promote (or ask for approval), stop, roll back, or wait.

    `today` is the first scored day a change applies to; the look sees the scored days before it and the labels observed by `as_of`.
    """
    with engine.connect() as connection:
        release = releases.active_release(connection, spec.name)
        if release is None:
            return {"model_name": spec.name, "release": None, "verdict": None, "reason": "no release under way"}
        if release.status == "awaiting_approval":
            return {"model_name": spec.name, "release": release.to_dict(), "verdict": "awaiting_approval",
                    "reason": "the canary passed its last step and waits for a person's approval"}
        done = earlier_look(connection, spec.name, release.id, today)
    if done is not None:
        return {"model_name": spec.name, "release": release.to_dict(), **done, "rerun": True}
    look = _canary_look(engine, spec, release, today, as_of) if release.kind == "canary" else _guard_look(engine, spec, release, today, as_of)
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        lock_unit(connection, "release", spec.name)
        current = releases.active_release(connection, spec.name)
        if current is None or current.id != release.id or current.step != release.step:
            raise releases.ReleaseRefused(f"{spec.name}: release #{release.id} changed while it was being judged; run the decision again")
        incident = _apply(connection, spec, release, look, today=today, actor=actor, run_id=run_id)
        registry.record_event(connection, spec.name, "release_decision", version=release.version, previous_version=release.baseline_version,
                              reason=f"{look.verdict}: {look.reason}", actor=actor, details=look.to_dict())
    return {"model_name": spec.name, "release": release.to_dict(), **look.to_dict(), "incident": incident}


def _canary_look(engine: Engine, spec: ModelSpec, release: Release, today: date, as_of: datetime) -> Look:
    with engine.connect() as connection:
        step = releases.steps_of(connection, release.id)[-1]
        first = step["effective_from"]
        frame = read_release_rows(connection, spec, release, first, today, as_of)
        rejects = _rejects_by_arm(connection, spec, release, first, today, step["share"])
    return judge_step(spec, release, frame, rejects, days_in_step=(today - first).days, decided_on=today)


def _apply(connection: Connection, spec: ModelSpec, release: Release, look: Look, *, today: date, actor: str, run_id: str) -> dict[str, Any] | None:
    """Carry out the look's verdict inside the locked transaction; open or resolve the release incident."""
    found: bool | None = None
    if look.verdict == "advance":
        share = releases.advance(connection, release, effective_from=today)
        look.applied = f"advanced to step {release.step + 2}: {share:.0%} of entities from {today}"
        found = False
    elif look.verdict == "promote" and spec.release.approval:
        releases.set_status(connection, release, "awaiting_approval")
        look.applied = "awaiting approval: the promotion waits for a person in the Airflow UI"
        found = False
    elif look.verdict == "promote":
        look.applied = promote(connection, spec, release, today=today, actor=actor, reason=f"the canary passed every step: {look.reason}")
        found = False
    elif look.verdict == "stop" and release.kind == "canary":
        releases.set_status(connection, release, "stopped", reason=look.reason, effective_until=today)
        look.applied = f"stopped: v{release.version} serves no entity from {today}; it keeps scoring in shadow"
        found = True
    elif look.verdict == "stop":  # a guard that found the new champion worse
        reason = f"guard of release #{release.id}: {look.reason}"
        roll_back(connection, spec.name, to_version=release.baseline_version, reason=reason, actor=actor)  # ends the guard too
        look.applied = f"rolled back: v{release.baseline_version} is champion again, v{release.version} is marked rolled back"
        found = True
    elif look.verdict == "pass":
        releases.set_status(connection, release, "passed", reason=look.reason)
        releases.drop_challenger(connection, spec.name, release.baseline_version)
        look.applied = f"guard passed: v{release.version} stays champion; v{release.baseline_version} stops shadowing"
        found = False
    elif look.verdict == "hold":
        found = False
    if found is None:
        return None
    lines = [t.line() for t in look.tests if t.outcome in ("worse", "breached")] or [look.reason]
    return update_incident(
        connection, spec.name, release.version, kind="release", found=found, window_end=day_window(today - timedelta(days=1))[1],
        drifted=[f"release #{release.id} ({release.kind} of v{release.version}): {look.applied}", *lines] if found else [],
        findings={f"{release.kind}:{release.id}": Finding(band=0, ratio=None)} if found else {}, run_id=run_id,
    )


def promote(connection: Connection, spec: ModelSpec, release: Release, *, today: date, actor: str, reason: str) -> str:
    """Make the canary's challenger champion from the scored day `today`, end the canary, and start the guard."""
    champion = registry.alias_version_in(connection, spec.name, "champion")
    if champion != release.baseline_version:
        raise releases.ReleaseRefused(
            f"{spec.name}: the champion changed from v{release.baseline_version} to v{champion} during the canary of v{release.version}; "
            "nothing was promoted. Start a new canary against the new champion."
        )
    registry.point_alias(connection, spec.name, "champion", release.version, event="promoted", reason=reason, actor=actor,
                         details={"release_id": release.id, "via": "canary"})
    releases.set_status(connection, release, "promoted", reason=reason, effective_until=today)
    guard = releases.start_guard(connection, spec, new_version=release.version, previous_version=champion, starts_on=today, actor=actor)
    return f"promoted v{release.version} to champion" + (f"; guard until {guard.ends_on}" if guard else "")


def resolve_approval(engine: Engine, spec: ModelSpec, *, approved: bool, reason: str, actor: str, today: date) -> dict[str, Any]:
    """A person's answer to a canary waiting for approval: promote it, or end it as rejected; audited with who and why."""
    if not (reason or "").strip():
        raise releases.ReleaseRefused("an approval or a rejection needs a reason; it is recorded in model_events")
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        release = releases.active_release(connection, spec.name)
        if release is None or release.status != "awaiting_approval":
            raise releases.ReleaseRefused(f"{spec.name} has no canary waiting for approval")
        if approved:
            applied = promote(connection, spec, release, today=today, actor=actor, reason=f"approved by {actor}: {reason}")
        else:
            releases.set_status(connection, release, "rejected", reason=f"rejected by {actor}: {reason}", effective_until=today)
            applied = f"rejected by {actor}: v{release.version} serves no entity from {today}"
        registry.record_event(connection, spec.name, "approval", version=release.version, previous_version=release.baseline_version,
                              reason=f"{'approved' if approved else 'rejected'} by {actor}: {reason}", actor=actor,
                              details={"release_id": release.id, "approved": approved, "applied": applied})
    return {"model_name": spec.name, "release_id": release.id, "approved": approved, "applied": applied, "actor": actor, "reason": reason}


def approval_body(engine: Engine, spec: ModelSpec, release: Release) -> str:
    """Markdown for the person asked to approve: the canary's plan and the tests of the look that earned the promotion."""
    with engine.connect() as connection:
        look = next((d for d in _decisions(connection, spec.name) if d.get("release_id") == release.id and d.get("verdict") == "promote"), None)
    lines = [
        f"**{spec.name}**: canary #{release.id} of **v{release.version}** against the champion v{release.baseline_version} passed its last "
        f"step ({', '.join(f'{share:.0%}' for share in release.steps)} of entities). Approve to make v{release.version} champion from the next "
        f"scored day (a guard of {spec.release.guard_days} days follows), or reject to end the canary. Give a reason either way: it is audited.",
        "",
        "| test | role | challenger | champion | difference | always-valid interval | margin | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for test in (look or {}).get("tests", []):
        lines.append(
            f"| {test['metric']} ({test['test']}) | {test['role']} | {_number(test['treatment'])} | {_number(test['control'])} | "
            f"{_number(test['difference'], signed=True)} | [{_number(test['cs_lower'], signed=True)}, {_number(test['cs_upper'], signed=True)}] | "
            f"{test['margin']:g} | {test['outcome']} |"
        )
    if look is not None:
        lines += ["", f"Decided on {look['decided_on']}: power {look['power']:.0%}, {look['n_treatment']:,} treatment and {look['n_control']:,} "
                      "control rows served."]
    return "\n".join(lines)


def _number(value: float | None, *, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def stop_canary(engine: Engine, spec: ModelSpec, *, reason: str, actor: str, today: date) -> dict[str, Any]:
    """A person stops the canary under way: its share goes back to 0 from the scored day `today`."""
    if not (reason or "").strip():
        raise releases.ReleaseRefused("stopping a canary needs a reason; it is recorded in model_events")
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        release = releases.active_release(connection, spec.name)
        if release is None or release.kind != "canary":
            raise releases.ReleaseRefused(f"{spec.name} has no canary under way")
        releases.set_status(connection, release, "cancelled", reason=f"stopped by {actor}: {reason}", effective_until=today)
        registry.record_event(connection, spec.name, "canary_stopped", version=release.version, previous_version=release.baseline_version,
                              reason=reason, actor=actor, details={"release_id": release.id, "effective_from": today.isoformat()})
    return {"model_name": spec.name, "release_id": release.id, "status": "cancelled", "reason": reason}


# --- the guard after a promotion --------------------------------------------------------------------------


def _guard_look(engine: Engine, spec: ModelSpec, release: Release, today: date, as_of: datetime) -> Look:
    """Paired comparison of the new champion with the previous one on the same rows since the promotion; a rollback when worse
    beyond the margin (on matured labels, else on the daily estimates)."""
    margin, alpha = spec.release.guard_margin, spec.release.canary.alpha
    look = Look(release.id, "guard", today, "hold", "")
    with engine.connect() as connection:
        frame = read_release_rows(connection, spec, release, release.started_on, today, as_of)
        estimates = _estimates(connection, spec, release, today)
    both = frame[frame["matured"] & frame["label"].notna()].pivot_table(index=["ds", "entity_id"], columns="role", values="score").dropna()
    labels = frame.drop_duplicates(["ds", "entity_id"]).set_index(["ds", "entity_id"])["label"].reindex(both.index) if len(both) else pd.Series()
    positives = int(labels.sum()) if len(labels) else 0
    look.n_treatment = look.n_control = len(both)
    if len(both) and min(positives, len(both) - positives) >= spec.release.canary.min_positives:
        comparison = delong_paired(labels.to_numpy(int), both["shadow"].to_numpy(), both["champion"].to_numpy(), metric="roc_auc")
        lower, upper = confidence_sequence(comparison.difference, comparison.standard_error, alpha=alpha, mixture_sd=margin)
        outcome = "worse" if upper < -margin else ("non_inferior" if lower > -margin else "undecided")
        look.tests = [Judged(comparison, "primary", margin, lower, upper, outcome)]
        if outcome == "worse":
            look.verdict, look.reason = "stop", f"realized: {look.tests[0].line()}"
    elif estimates is not None:
        new, previous = estimates
        if new["upper"] < previous["lower"] - margin:
            look.verdict = "stop"
            look.reason = (
                f"estimated (labels not matured): roc_auc of v{release.version} {new['value']:.4f} [{new['lower']:.4f}, {new['upper']:.4f}] "
                f"below v{release.baseline_version}'s {previous['value']:.4f} [{previous['lower']:.4f}, {previous['upper']:.4f}] "
                f"by more than {margin:g} on {new['ds']}"
            )
    if look.verdict == "stop":
        return look
    if today > release.ends_on:
        look.verdict = "pass"
        look.reason = f"no evidence that v{release.version} is worse than v{release.baseline_version} by {margin:g} in the guard period"
    else:
        look.reason = look.tests[0].line() if look.tests else f"guard until {release.ends_on}: too few matured labels to compare yet"
    return look


def _estimates(connection: Connection, spec: ModelSpec, release: Release, today: date) -> tuple[dict, dict] | None:
    """The newest day's estimated roc_auc of the new champion and of the previous one scoring in shadow."""
    rows = connection.execute(
        sa.text(
            "SELECT ds, model_version, value, lower, upper FROM performance_daily WHERE model_name = :m AND source = 'estimated'"
            " AND metric = 'roc_auc' AND ds >= :a AND ds < :b AND model_version IN (:v, :p) AND value IS NOT NULL ORDER BY ds DESC"
        ),
        {"m": spec.name, "a": release.started_on, "b": today, "v": release.version, "p": release.baseline_version},
    ).mappings().all()
    by_day: dict[Any, dict[int, dict]] = {}
    for row in rows:
        by_day.setdefault(str(row["ds"])[:10], {})[row["model_version"]] = {**row, "ds": str(row["ds"])[:10]}
    for figures in by_day.values():
        if release.version in figures and release.baseline_version in figures:
            return figures[release.version], figures[release.baseline_version]
    return None
