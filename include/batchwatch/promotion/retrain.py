"""Retrain -> validate -> promote, and the registry operations people need when something goes wrong.

The three steps are separate functions so that each is one Airflow task with its own log and
retry, and they pass a small JSON `Candidate` between them. Promotion is atomic and serialised
per model: it only swaps the champion it was validated against, so of two concurrent promotions
one wins and the other is refused with the reason.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchwatch import registry
from batchwatch.data.features import build_features
from batchwatch.errors import InvalidArgument
from batchwatch.modeling.training import LABEL, holdout_start, read_labelled, train, valid_rows
from batchwatch.promotion import gates, releases
from batchwatch.registry import RegistryError
from batchwatch.scoring import score
from batchwatch.serialization import json_safe
from batchwatch.spec import ModelSpec
from batchwatch.warehouse import read_frame, utc_timestamp


class PromotionRefused(RegistryError):
    """A promotion or rollback that must not happen as asked; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """What the train step hands to validate and promote (an XCom, so plain JSON)."""

    model_name: str
    version: int | None  # None in a dry run: nothing was registered
    artifact_uri: str
    sha256: str
    champion_version: int | None  # the champion when training started: the one to beat and to replace
    window_start: str  # the labelled window: the holdout is its most recent slice
    window_end: str
    labels_as_of: str
    dry_run: bool
    metrics: dict[str, Any]
    threshold: float  # the candidate's decision threshold: the one it is judged at
    signature: str | None = None  # a dry run's artifact signature (registry.sign_artifact); a version's is in the registry

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)


def training_window(spec: ModelSpec, as_of: datetime, window_days: int | None) -> tuple[datetime, datetime]:
    days = spec.retrain.training_window_days if window_days is None else window_days
    if days < 1:
        raise InvalidArgument(f"training_window_days must be at least 1, got {days}")
    return as_of - timedelta(days=days), as_of


def check_force(force_promote: bool, force_reason: str | None) -> None:
    """A forced promotion overrides the gates, so it must say why; the reason goes in the audit log."""
    if force_promote and not (force_reason or "").strip():
        raise PromotionRefused("force_promote needs a force_reason: it overrides the validation gates and is audited")


def train_candidate(engine: Engine, spec: ModelSpec, *, as_of: datetime, window_days: int | None, dry_run: bool, run_id: str) -> Candidate:
    """Train on the trailing window's matured labels; register the result unless this is a dry run."""
    start, end = training_window(spec, as_of, window_days)
    champion = registry.alias_version(engine, spec.name, "champion")
    labelled = read_labelled(engine, spec, start, end, as_of)
    trained = train(spec, labelled)
    trained_on = {"start": start.isoformat(), "end": end.isoformat(), "labels_as_of": as_of.isoformat(), "rows": len(labelled),
                  "holdout_from": trained.holdout_from, "run_id": run_id, registry.DATA_FINGERPRINT: data_fingerprint(labelled)}
    metrics = {**trained.metrics, "trained_on": trained_on}
    common = {"model_name": spec.name, "champion_version": champion, "window_start": start.isoformat(), "window_end": end.isoformat(),
              "labels_as_of": as_of.isoformat(), "dry_run": dry_run, "metrics": json_safe(metrics)}
    if dry_run:
        uri, sha256, signature = _scratch_artifact(spec.name, run_id, trained.pipeline)
        return Candidate(version=None, artifact_uri=uri, sha256=sha256, threshold=trained.threshold, signature=signature, **common)
    version = registry.register(
        engine, spec, trained.pipeline, metrics=trained.metrics, trained_on=trained_on, parent_version=champion, reference=trained.reference,
        threshold_policy=trained.threshold_policy, calibration=trained.calibration.to_json(),
    )
    row = registry.get_version(engine, spec.name, version)
    # The registered version's threshold: a retrain recognised as an earlier training keeps that version's.
    threshold, _ = registry.decision_of(engine, spec.name, version, spec=spec)
    return Candidate(version=version, artifact_uri=row["artifact_uri"], sha256=row["sha256"], threshold=threshold, **common)


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the rows as read, the same in every process (pandas hashes values with a fixed key).

    With the estimator's parameters it identifies a training, so a rerun of the same week is
    recognised as the version it already produced even when its pickled bytes differ.
    """
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def existing_candidate(engine: Engine, spec: ModelSpec, version: int, *, as_of: datetime, window_days: int | None, dry_run: bool) -> Candidate:
    """A version registered earlier (typically a challenger that has been shadowing) as the candidate."""
    row = registry.get_version(engine, spec.name, version)
    champion = registry.alias_version(engine, spec.name, "champion")
    if champion == version:
        raise PromotionRefused(f"{spec.name} v{version} is already the champion")
    start, end = training_window(spec, as_of, window_days)
    threshold, _ = registry.decision_of(engine, spec.name, version, spec=spec)
    return Candidate(spec.name, version, row["artifact_uri"], row["sha256"], champion, start.isoformat(), end.isoformat(),
                     as_of.isoformat(), dry_run, json_safe({**row["metrics"], "trained_on": row["trained_on"]}), threshold)


def _scratch_artifact(model_name: str, run_id: str, pipeline: Any) -> tuple[str, str, str | None]:
    """A dry run's pipeline, outside the registry: validate needs it, the warehouse must not see it."""
    blob, sha256 = registry.dump_artifact(pipeline)
    path = registry.artifact_root() / model_name / "dry-runs" / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) / "pipeline.joblib"
    registry.write_artifact(path, blob)
    return path.as_uri(), sha256, registry.sign_artifact(blob)


def _load_candidate(engine: Engine, spec: ModelSpec, candidate: Candidate) -> Any:
    if candidate.version is not None:
        return registry.load_version(engine, candidate.model_name, candidate.version, spec=spec).pipeline
    return registry.read_artifact(
        registry.artifact_path(candidate.artifact_uri), candidate.sha256, f"the dry run of {candidate.model_name}", candidate.signature
    )


# --- validation ---------------------------------------------------------------------------------


def validate_candidate(engine: Engine, spec: ModelSpec, candidate: Candidate) -> list[gates.GateResult]:
    """Every gate of the spec on the window's out-of-time holdout, champion and candidate scored on the same rows."""
    settings = spec.retrain.gates
    as_of = datetime.fromisoformat(candidate.labels_as_of)
    labelled = valid_rows(
        spec, read_labelled(engine, spec, datetime.fromisoformat(candidate.window_start), datetime.fromisoformat(candidate.window_end), as_of)
    )
    holdout = labelled.iloc[holdout_start(spec, labelled):].reset_index(drop=True)
    labels = holdout[LABEL].to_numpy(dtype=int)
    features = build_features(holdout, spec)
    challenger_scores = score(_load_candidate(engine, spec, candidate), features)

    results = [_unseen_holdout(spec, candidate, holdout)]
    rolled_back = registry.rolled_back_from(engine, spec.name, version=candidate.version, sha256=candidate.sha256)
    results.append(gates.not_rolled_back(rolled_back, version=candidate.version, sha256=candidate.sha256))
    results.append(gates.roc_auc_floor(labels, challenger_scores, settings.min_roc_auc))
    results.append(gates.brier_ceiling(labels, challenger_scores, settings.max_brier))
    results += gates.output_sanity(
        challenger_scores,
        threshold=candidate.threshold,
        positive_rate_min=settings.positive_rate_min,
        positive_rate_max=settings.positive_rate_max,
    )
    if candidate.champion_version is None:
        results.append(gates.GateResult("auc_non_inferiority", None, None, None, "no champion yet: nothing to be inferior to"))
    else:
        champion = registry.load_version(engine, spec.name, candidate.champion_version, spec=spec)
        champion_scores = score(champion.pipeline, features)
        results.append(
            gates.auc_non_inferiority(
                labels, challenger_scores, champion_scores, margin=settings.non_inferiority_margin, n_boot=settings.bootstrap_samples
            )
        )
        results += gates.slice_checks(
            features[spec.categorical_features], labels, challenger_scores, champion_scores,
            margin=settings.slice_margin, min_rows=settings.slice_min_rows, min_positives=settings.slice_min_positives,
        )
    results.append(_shadow_gate(engine, spec, candidate))
    return results


def _unseen_holdout(spec: ModelSpec, candidate: Candidate, holdout: pd.DataFrame) -> gates.GateResult:
    """The candidate must not have trained on the holdout it is judged on (a concern for older versions)."""
    if holdout.empty:
        return gates.GateResult("holdout_out_of_time", False, 0.0, None, "the window has no labelled holdout rows")
    first = utc_timestamp(holdout[spec.source.event_time].iloc[0])
    trained_on = candidate.metrics.get("trained_on") or {}
    seen_until = trained_on.get("holdout_from") or trained_on.get("end")
    if seen_until is None:
        return gates.GateResult("holdout_out_of_time", None, None, None, "the candidate's training window is not recorded")
    seen = utc_timestamp(seen_until)
    passed = seen <= first
    return gates.GateResult(
        "holdout_out_of_time", passed, float(len(holdout)), None,
        f"candidate fitted on rows before {seen.isoformat()}; holdout of {len(holdout)} rows starts {first.isoformat()}",
    )


def _shadow_gate(engine: Engine, spec: ModelSpec, candidate: Candidate) -> gates.GateResult:
    """Agreement with the champion on the nightly rows where the candidate scored in shadow.

    Each side's label is the one the nightly run wrote, at that model's own threshold: the decisions each made.
    """
    settings = spec.retrain.gates
    if candidate.version is None:
        return gates.GateResult("shadow_agreement", None, None, None, "a dry-run candidate never shadowed")
    query = (
        "SELECT c.score AS champion_score, s.score AS shadow_score, c.predicted_label AS champion_label, s.predicted_label AS shadow_label"
        " FROM predictions s JOIN predictions c"
        " ON c.model_name = s.model_name AND c.entity_id = s.entity_id AND c.ds = s.ds AND c.role = 'champion'"
        " WHERE s.model_name = :m AND s.role = 'shadow' AND s.model_version = :v"
    )
    columns = ["champion_score", "shadow_score", "champion_label", "shadow_label"]
    rows = read_frame(engine, query, {"m": spec.name, "v": candidate.version}, columns, [])
    return gates.shadow_agreement(
        rows["champion_score"].to_numpy(dtype=float), rows["shadow_score"].to_numpy(dtype=float),
        champion_labels=rows["champion_label"].to_numpy(dtype=int), challenger_labels=rows["shadow_label"].to_numpy(dtype=int),
        min_agreement=settings.shadow_min_agreement, min_rows=settings.shadow_min_rows,
    )


# --- promotion, rollback, history ---------------------------------------------------------------


# The decisions of promote_candidate that make the candidate champion.
CHAMPION_CHANGED = ("promoted", "forced")


def promote_candidate(
    engine: Engine, spec: ModelSpec, candidate: Candidate, results: list[gates.GateResult], *, force_reason: str | None, actor: str,
    today: date | None = None,
) -> dict[str, Any]:
    """Make the candidate champion if every gate passed (or the promotion is forced), else record the rejection.

    With `release.canary.enabled` and a champion to compare with, a candidate that passed every gate starts a
    canary from the scored day `today` (default: today, UTC) instead: real traffic decides its promotion. A
    promotion starts the spec's guard period; a forced one cancels any release under way first.

    Refused when the champion is no longer the one the candidate was validated against. A retrain
    that reproduced the champion itself (same bytes, same window: registry.register returned it)
    changes nothing and says so (`unchanged`).
    """
    failed = gates.failed_gates(results)
    decision = "promoted" if not failed else ("forced" if force_reason else "rejected")
    outcome = {"model_name": spec.name, "version": candidate.version, "previous_champion": candidate.champion_version,
               "decision": decision, "failed_gates": failed, "dry_run": candidate.dry_run}
    if candidate.dry_run:
        return {**outcome, "decision": f"would be {decision}"}
    if candidate.version == candidate.champion_version:
        return {**outcome, "decision": "unchanged", "reason": f"the retrain reproduced the champion v{candidate.version}; nothing to promote"}
    today = today or datetime.now(timezone.utc).date()
    if decision == "promoted" and spec.release.canary.enabled and candidate.champion_version is not None:
        with engine.connect() as connection:
            under_way = releases.active_release(connection, spec.name)
        if under_way is not None:
            reason = f"every validation gate passed, but release #{under_way.id} ({under_way.kind} of v{under_way.version}) is under way"
            return {**outcome, "decision": "deferred", "reason": reason}
        release = releases.start_canary(engine, spec, candidate.version, starts_on=today, actor=actor, reason="every validation gate passed")
        return {**outcome, "decision": "canary_started", "release_id": release.id, "share": release.share,
                "reason": f"every validation gate passed; v{candidate.version} serves {release.share:.0%} of entities from {today}"}
    details = {"gates": [r.to_dict() for r in results], "failed_gates": failed, "forced": decision == "forced", "candidate": candidate.to_dict()}
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        current = registry.alias_version_in(connection, spec.name, "champion")
        if current == candidate.version and decision != "rejected":
            # A retry of a promotion that committed before its task could report it.
            return {**outcome, "reason": f"v{candidate.version} is already the champion"}
        if current != candidate.champion_version:
            raise PromotionRefused(
                f"{spec.name}: the champion changed from v{candidate.champion_version} to v{current} while v{candidate.version} "
                "was being validated against it; nothing was changed. Validate again against the new champion."
            )
        if decision == "rejected":
            reason = "validation gates failed: " + ", ".join(failed)
            registry.record_event(connection, spec.name, "rejected", version=candidate.version, previous_version=current,
                                  reason=reason, actor=actor, details=details)
        else:
            reason = "every validation gate passed" if decision == "promoted" else f"forced past failed gates {failed}: {force_reason}"
            under_way = releases.active_release(connection, spec.name)
            if under_way is not None:
                releases.set_status(connection, under_way, "cancelled", reason=f"v{candidate.version} was {decision} champion", effective_until=today)
            registry.point_alias(connection, spec.name, "champion", candidate.version, event=decision, reason=reason, actor=actor, details=details)
            if current is not None:
                releases.start_guard(connection, spec, new_version=candidate.version, previous_version=current, starts_on=today, actor=actor)
    return {**outcome, "reason": reason}


def rollback(engine: Engine, model_name: str, *, to_version: int | None, reason: str, actor: str) -> dict[str, Any]:
    """Take the champion out of service and restore an earlier one (or `to_version`), audited. Returns what changed.

    The version rolled back from is marked on its row, so a retrain does not promote it (or the
    same bytes under a new number) again, and a further rollback does not return to it: each one
    goes one step further back in the champion history (v3 -> v2 -> v1). `to_version` restores a
    named version, also one rolled back from earlier, which lifts its mark.
    """
    if not (reason or "").strip():
        raise PromotionRefused("a rollback needs a reason; it is recorded in model_events")
    with engine.begin() as connection:
        registry.lock_model(connection, model_name)
        return roll_back(connection, model_name, to_version=to_version, reason=reason, actor=actor)


def roll_back(connection: sa.Connection, model_name: str, *, to_version: int | None, reason: str, actor: str) -> dict[str, Any]:
    """rollback() inside the caller's transaction, which holds the model's registry lock (the release guard's too)."""
    current = registry.alias_version_in(connection, model_name, "champion")
    if current is None:
        raise PromotionRefused(f"{model_name} has no champion to roll back")
    target = _previous_champion(connection, model_name, current) if to_version is None else to_version
    if target == current:
        raise PromotionRefused(f"{model_name} v{target} is already the champion")
    if _sha256(connection, model_name, target) == _sha256(connection, model_name, current):
        raise PromotionRefused(
            f"{model_name} v{target} holds the same artifact as the champion v{current}; rolling back to it would change "
            "nothing. Name another version."
        )
    registry.mark_rolled_back(connection, model_name, current, reason=reason)
    under_way = releases.active_release(connection, model_name)
    if under_way is not None:  # the champion it was about is gone
        releases.set_status(connection, under_way, "rolled_back" if under_way.kind == "guard" else "cancelled", reason=reason,
                            effective_until=datetime.now(timezone.utc).date())
    registry.point_alias(connection, model_name, "champion", target, event="rollback", reason=reason, actor=actor,
                         details={"from_version": current})
    return {"model_name": model_name, "version": target, "previous_champion": current, "reason": reason}


def _sha256(connection: sa.Connection, model_name: str, version: int) -> str:
    sha256 = connection.execute(
        sa.text("SELECT sha256 FROM model_versions WHERE model_name = :m AND version = :v"), {"m": model_name, "v": version}
    ).scalar_one_or_none()
    if sha256 is None:
        raise PromotionRefused(f"model {model_name!r} has no version {version}; `bin/batchwatch versions {model_name}` lists them")
    return sha256


def _previous_champion(connection: sa.Connection, model_name: str, current: int) -> int:
    """The latest earlier champion that was not rolled back from and does not hold the champion's bytes."""
    history = connection.execute(
        sa.text(
            "SELECT e.version, v.sha256 FROM model_events e JOIN model_versions v ON v.model_name = e.model_name AND v.version = e.version"
            f" WHERE e.model_name = :m AND e.event IN ({', '.join(repr(event) for event in registry.CHAMPION_EVENTS)}) ORDER BY e.id DESC"
        ),
        {"m": model_name},
    ).all()
    excluded = set(
        connection.execute(
            sa.text("SELECT sha256 FROM model_versions WHERE model_name = :m AND rolled_back_at IS NOT NULL"), {"m": model_name}
        ).scalars()
    )
    excluded.add(_sha256(connection, model_name, current))
    for version, sha256 in history:
        if sha256 not in excluded:
            return version
    raise PromotionRefused(
        f"{model_name} v{current} has no earlier champion to roll back to: every earlier one was rolled back from or holds "
        f"the same artifact. Name a version to restore (rollback --to VERSION); `bin/batchwatch versions {model_name}` lists them."
    )
