"""Versions, aliases and the audit log of every alias change, in the warehouse.

An artifact is the whole fitted sklearn Pipeline dumped with joblib. Its sha256 is recorded at
registration and checked before every load: a file that does not match is never unpickled. With an
artifact key configured, its HMAC signature is recorded and checked too (registry.artifacts).
Registering the same training again (same window and, by the bytes or by the training data's
fingerprint and the estimator's parameters, the same model) returns the version it already has and
says so in model_events, so rerunning a job does not grow the registry.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.registry.artifacts import (
    ARTIFACT_KEY_VARIABLE,
    RegistryError,
    artifact_key,
    artifact_path,
    artifact_root,
    dump_artifact,
    read_artifact,
    sign_artifact,
    write_artifact,
)
from batchwatch.serialization import json_safe
from batchwatch.spec import ModelSpec
from batchwatch.warehouse import lock_unit, utc_timestamp

log = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")
# The events that move the champion alias (point_alias with alias "champion"): together, who was champion when.
CHAMPION_EVENTS = ("set_champion", "promoted", "forced", "rollback")
# The keys of `trained_on` that make two trainings the same: the window and when its labels were read.
TRAINING_WINDOW_KEYS = ("start", "end", "labels_as_of")
# The key of `trained_on` holding a fingerprint of the training rows (retrain.data_fingerprint).
DATA_FINGERPRINT = "data_sha256"
JSON_COLUMNS = ("metrics", "params", "features", "pipeline_steps", "trained_on", "threshold_policy", "calibration")
NULLABLE_JSON_COLUMNS = ("threshold_policy", "calibration")
# What a version registered before thresholds were stored (0008) labels at when its spec names a policy, not a number.
LEGACY_THRESHOLD = 0.5


@dataclass(frozen=True)
class LoadedModel:
    model_name: str
    version: int
    pipeline: Any
    sha256: str
    features: list[str]
    threshold: float  # predicted_label = score >= threshold, chosen for this version when it was trained
    calibration: dict[str, Any] | None  # stats.calibration.Calibration.to_json(); None: raw scores


def _now() -> datetime:
    return datetime.now(timezone.utc)


def lock_model(connection: Connection, model_name: str) -> None:
    """Serialise registry writes of one model (version numbers, alias swaps) until commit."""
    lock_unit(connection, "registry", model_name)


def pipeline_steps(pipeline: Any) -> list[dict[str, str]]:
    steps = getattr(pipeline, "steps", [("model", pipeline)])
    return [{"name": name, "class": f"{type(step).__module__}.{type(step).__qualname__}"} for name, step in steps]


def register(
    engine: Engine,
    spec: ModelSpec,
    pipeline: Any,
    *,
    metrics: dict[str, Any],
    trained_on: dict[str, Any],
    parent_version: int | None,
    reference: Any = None,
    threshold_policy: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    root: Path | None = None,
) -> int:
    """Dump the fitted pipeline, record it with its sha256 and metadata, return the new version.

    `reference` (a drift.ReferenceProfile) is stored with the version, in the same transaction, and so
    are `threshold_policy` (modeling.decision.fit_threshold: its "threshold" fills the threshold column)
    and `calibration` (Calibration.to_json()). When a version of the model is the same training (see
    _same_training), that version is returned instead, with the threshold and calibration it already
    has, and a `registered_again` event records it.
    """
    root = root or artifact_root()
    blob, sha256 = dump_artifact(pipeline)
    signature = sign_artifact(blob)
    params = {"factory": spec.estimator.factory, **_jsonable_params(pipeline)}
    with engine.begin() as connection:
        lock_model(connection, spec.name)
        same = _same_training(connection, spec, sha256, params, trained_on)
        if same is not None:
            version, how, path = same
            reason = f"the same training as v{version} ({how}): no new version"
            record_event(connection, spec.name, "registered_again", version=version, previous_version=None, reason=reason,
                         actor="registry", details={"trained_on": json_safe(trained_on), "sha256": sha256})
            if how == "same bytes" and not path.exists():  # the registry's record outlived its file: the same bytes restore it
                write_artifact(path, blob)
            if how == "same bytes" and signature is not None:  # registering again signs a version registered unsigned
                connection.execute(
                    sa.text("UPDATE model_versions SET signature = :s WHERE model_name = :m AND version = :v AND signature IS NULL"),
                    {"s": signature, "m": spec.name, "v": version},
                )
            log.info("%s: %s", spec.name, reason)
            return version
        version = 1 + (
            connection.execute(
                sa.text("SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE model_name = :m"), {"m": spec.name}
            ).scalar_one()
        )
        # The checksum in the path: two warehouses sharing an artifact root never overwrite each other.
        path = root / spec.name / f"v{version}-{sha256[:16]}" / "pipeline.joblib"
        connection.execute(
            sa.text(
                "INSERT INTO model_versions (model_name, version, artifact_uri, sha256, signature, metrics, params, features,"
                " pipeline_steps, trained_on, parent_version, created_at, threshold, threshold_policy, calibration)"
                " VALUES (:model_name, :version, :artifact_uri, :sha256, :signature, :metrics, :params, :features,"
                " :pipeline_steps, :trained_on, :parent_version, :created_at, :threshold, :threshold_policy, :calibration)"
            ).bindparams(
                *(sa.bindparam(name, type_=sa.JSON) for name in JSON_COLUMNS if name not in NULLABLE_JSON_COLUMNS),
                # SQL NULL, not JSON null, when a version has none: "IS NULL" finds the versions registered without one.
                *(sa.bindparam(name, type_=sa.JSON(none_as_null=True)) for name in NULLABLE_JSON_COLUMNS),
            ),
            {
                "model_name": spec.name,
                "version": version,
                "artifact_uri": path.as_uri(),
                "sha256": sha256,
                "signature": signature,
                "metrics": json_safe(metrics),
                "params": params,
                "features": spec.model_features,
                "pipeline_steps": pipeline_steps(pipeline),
                "trained_on": trained_on,
                "parent_version": parent_version,
                "created_at": _now(),
                "threshold": None if threshold_policy is None else float(threshold_policy["threshold"]),
                "threshold_policy": json_safe(threshold_policy),
                "calibration": json_safe(calibration),
            },
        )
        if reference is not None:
            connection.execute(
                sa.text(
                    "INSERT INTO reference_profiles (model_name, model_version, column_name, kind, profile)"
                    " VALUES (:m, :v, :column_name, :kind, :profile)"
                ).bindparams(sa.bindparam("profile", type_=sa.JSON)),
                [{"m": spec.name, "v": version, **row} for row in reference.to_rows()],
            )
        # Written last, inside the transaction: a failed insert leaves no file behind.
        if not path.exists():  # same path, same checksum: the bytes are already there
            write_artifact(path, blob)
    return version


def _same_training(
    connection: Connection, spec: ModelSpec, sha256: str, params: dict[str, Any], trained_on: dict[str, Any]
) -> tuple[int, str, Path] | None:
    """The version that is this training, how it matched, and its artifact path; None if there is none.

    Same window, and either the same bytes or the same training rows (their fingerprint), estimator
    parameters and features. Bytes alone do not suffice: joblib pickles shared objects by identity,
    so one fit dumped in processes with different histories gives equal models with unequal bytes.
    """
    query = sa.text(
        "SELECT version, sha256, artifact_uri, trained_on, params, features FROM model_versions WHERE model_name = :m ORDER BY version"
    ).columns(trained_on=sa.JSON, params=sa.JSON, features=sa.JSON)
    window = [json_safe(trained_on.get(key)) for key in TRAINING_WINDOW_KEYS]
    fingerprint = trained_on.get(DATA_FINGERPRINT)
    for row in connection.execute(query, {"m": spec.name}).mappings():
        if [row["trained_on"].get(key) for key in TRAINING_WINDOW_KEYS] != window:
            continue
        if row["sha256"] == sha256:
            return row["version"], "same bytes", artifact_path(row["artifact_uri"])
        if (
            fingerprint is not None and row["trained_on"].get(DATA_FINGERPRINT) == fingerprint
            and row["params"] == json_safe(params) and row["features"] == spec.model_features
        ):
            return row["version"], f"same window, training rows {fingerprint[:12]}, estimator and features", artifact_path(row["artifact_uri"])
    return None


def _jsonable_params(pipeline: Any) -> dict[str, Any]:
    """The estimator's own hyper-parameters, as JSON-able values."""
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    return {
        key: value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
        for key, value in estimator.get_params(deep=False).items()
    }


def get_version(engine: Engine, model_name: str, version: int) -> dict[str, Any]:
    with engine.connect() as connection:
        query = sa.text("SELECT * FROM model_versions WHERE model_name = :m AND version = :v").columns(
            **{name: sa.JSON for name in JSON_COLUMNS}
        )
        row = connection.execute(query, {"m": model_name, "v": version}).mappings().first()
    if row is None:
        raise RegistryError(f"model {model_name!r} has no version {version}")
    return dict(row)


def alias_version_in(connection: Connection, model_name: str, alias: str) -> int | None:
    return connection.execute(
        sa.text("SELECT version FROM model_aliases WHERE model_name = :m AND alias = :a"), {"m": model_name, "a": alias}
    ).scalar_one_or_none()


def alias_version(engine: Engine, model_name: str, alias: str) -> int | None:
    with engine.connect() as connection:
        return alias_version_in(connection, model_name, alias)


def set_alias(engine: Engine, model_name: str, alias: str, version: int, *, reason: str, actor: str, details: dict | None = None) -> None:
    """Point `alias` at `version` and audit it, in one transaction."""
    with engine.begin() as connection:
        lock_model(connection, model_name)
        point_alias(connection, model_name, alias, version, event=f"set_{alias}", reason=reason, actor=actor, details=details or {})


def point_alias(
    connection: Connection, model_name: str, alias: str, version: int, *, event: str, reason: str, actor: str, details: dict[str, Any]
) -> None:
    """Move `alias` to `version` and record `event` (with the version it replaces), inside the caller's locked transaction."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; expected one of {ALIASES}")
    registered = connection.execute(
        sa.text("SELECT 1 FROM model_versions WHERE model_name = :m AND version = :v"), {"m": model_name, "v": version}
    ).first()
    if registered is None:
        raise RegistryError(f"model {model_name!r} has no version {version}")
    previous = alias_version_in(connection, model_name, alias)
    if alias == "challenger" and alias_version_in(connection, model_name, "champion") == version:
        raise RegistryError(f"version {version} of {model_name!r} is already the champion; it cannot also be the challenger")
    connection.execute(sa.text("DELETE FROM model_aliases WHERE model_name = :m AND alias = :a"), {"m": model_name, "a": alias})
    connection.execute(
        sa.text("INSERT INTO model_aliases (model_name, alias, version, updated_at) VALUES (:m, :a, :v, :t)"),
        {"m": model_name, "a": alias, "v": version, "t": _now()},
    )
    if alias == "champion":
        # A promoted challenger stops shadowing.
        connection.execute(
            sa.text("DELETE FROM model_aliases WHERE model_name = :m AND alias = 'challenger' AND version = :v"),
            {"m": model_name, "v": version},
        )
        reinstated = _reinstate(connection, model_name, version)
        if reinstated:
            details = {**details, "reinstated": reinstated}
    record_event(connection, model_name, event, version=version, previous_version=previous, reason=reason, actor=actor, details=details)


def _reinstate(connection: Connection, model_name: str, version: int) -> list[int]:
    """Clear the rolled-back mark of `version` and of every version holding its bytes; return which were marked.

    Only a deliberate act makes a rolled-back artifact champion again (the gates refuse it, a plain
    rollback skips it), so that act lifts the mark; the event that records it lists these versions.
    """
    same_bytes = (
        "model_name = :m AND rolled_back_at IS NOT NULL"
        " AND sha256 = (SELECT sha256 FROM model_versions WHERE model_name = :m AND version = :v)"
    )
    params = {"m": model_name, "v": version}
    marked = connection.execute(sa.text(f"SELECT version FROM model_versions WHERE {same_bytes} ORDER BY version"), params).scalars().all()
    if marked:
        connection.execute(sa.text(f"UPDATE model_versions SET rolled_back_at = NULL, rolled_back_reason = NULL WHERE {same_bytes}"), params)
    return list(marked)


def mark_rolled_back(connection: Connection, model_name: str, version: int, *, reason: str) -> None:
    """Record on the version that a rollback took it out of service, inside the rollback's locked transaction."""
    connection.execute(
        sa.text("UPDATE model_versions SET rolled_back_at = :t, rolled_back_reason = :r WHERE model_name = :m AND version = :v"),
        {"t": _now(), "r": reason, "m": model_name, "v": version},
    )


def rolled_back_from(engine: Engine, model_name: str, *, version: int | None, sha256: str) -> list[dict[str, Any]]:
    """Versions rolled back from (and not reinstated since) that are `version` or hold the same artifact bytes."""
    query = sa.text(
        "SELECT version, sha256, rolled_back_at, rolled_back_reason FROM model_versions WHERE model_name = :m"
        " AND rolled_back_at IS NOT NULL AND (version = :v OR sha256 = :s) ORDER BY version"
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name, "v": version, "s": sha256}).mappings().all()
    return [{**row, "rolled_back_at": utc_timestamp(row["rolled_back_at"]).isoformat()} for row in rows]


def record_event(
    connection: Connection,
    model_name: str,
    event: str,
    *,
    version: int | None,
    previous_version: int | None,
    reason: str,
    actor: str,
    details: dict[str, Any],
) -> None:
    connection.execute(
        sa.text(
            "INSERT INTO model_events (model_name, event, version, previous_version, reason, details, actor, created_at)"
            " VALUES (:m, :e, :v, :p, :r, :d, :a, :t)"
        ).bindparams(sa.bindparam("d", type_=sa.JSON)),
        {"m": model_name, "e": event, "v": version, "p": previous_version, "r": reason, "d": details, "a": actor, "t": _now()},
    )


@dataclass(frozen=True)
class ChampionTerm:
    version: int
    since: datetime  # UTC: when the event that made it champion was recorded
    event: str


def champion_terms(engine: Engine, model_name: str) -> list[ChampionTerm]:
    """Every move of the champion alias, oldest first: which version was champion from when (model_events)."""
    query = sa.text("SELECT id, version, event, created_at FROM model_events WHERE model_name = :m AND event IN :events").bindparams(
        sa.bindparam("events", expanding=True)
    )
    with engine.connect() as connection:
        rows = connection.execute(query, {"m": model_name, "events": list(CHAMPION_EVENTS)}).all()
    moves = sorted((utc_timestamp(row.created_at).to_pydatetime(), row.id, row.version, row.event) for row in rows)
    return [ChampionTerm(version, since, event) for since, _, version, event in moves]


def champion_at(engine: Engine, model_name: str, when: datetime) -> int | None:
    """The version that was champion at `when` (timezone-aware): that of the last champion move at or before it, None before the first.

    A backfill asks this rather than for the alias, which only knows today's champion.
    """
    serving = [term.version for term in champion_terms(engine, model_name) if term.since <= when]
    return serving[-1] if serving else None


def threshold_of(row: Mapping[str, Any], spec: ModelSpec | None) -> float:
    """The version's stored threshold; for one registered before thresholds were stored, the spec's number if it
    names one (what such versions always scored at), else LEGACY_THRESHOLD with a warning."""
    if row["threshold"] is not None:
        return float(row["threshold"])
    policy = None if spec is None else spec.scoring.threshold
    if isinstance(policy, float):
        return policy
    log.warning(
        "%s v%d was registered before decision thresholds were stored: it labels at %g. Retrain it (or register a new "
        "version) for a threshold chosen by scoring.threshold on its validation set",
        row["model_name"], row["version"], LEGACY_THRESHOLD,
    )
    return LEGACY_THRESHOLD


def decision_of(engine: Engine, model_name: str, version: int, *, spec: ModelSpec | None = None) -> tuple[float, dict[str, Any] | None]:
    """The threshold a version labels at and its calibration (Calibration JSON, None for raw scores), without loading its artifact.

    Pass the model's spec so a version registered before thresholds were stored gets the spec's fixed threshold.
    """
    row = get_version(engine, model_name, version)
    return threshold_of(row, spec), row["calibration"]


def load_version(engine: Engine, model_name: str, version: int, *, spec: ModelSpec | None = None) -> LoadedModel:
    """Load a registered pipeline, refusing any artifact whose bytes are not the registered ones.

    Pass the model's spec so a version registered before thresholds were stored gets the spec's fixed threshold.
    """
    row = get_version(engine, model_name, version)
    pipeline = read_artifact(artifact_path(row["artifact_uri"]), row["sha256"], f"{model_name} v{version}", row["signature"])
    return LoadedModel(model_name, version, pipeline, row["sha256"], list(row["features"]), threshold_of(row, spec), row["calibration"])


def load_alias(engine: Engine, model_name: str, alias: str, *, spec: ModelSpec | None = None) -> LoadedModel | None:
    version = alias_version(engine, model_name, alias)
    return None if version is None else load_version(engine, model_name, version, spec=spec)


def sign_versions(engine: Engine, model_name: str) -> list[int]:
    """Sign, with the configured key, every unsigned version of a model whose file still has its recorded sha256.

    For the day a key is introduced: it trusts the sha256 the warehouse holds now, so run it when that is known
    to be untampered. Versions already signed are left alone. Returns the versions signed.
    """
    key = artifact_key()
    if key is None:
        raise RegistryError(f"{ARTIFACT_KEY_VARIABLE} is not set: there is no key to sign {model_name}'s artifacts with")
    signed = []
    with engine.begin() as connection:
        lock_model(connection, model_name)
        rows = connection.execute(
            sa.text("SELECT version, artifact_uri, sha256 FROM model_versions WHERE model_name = :m AND signature IS NULL ORDER BY version"),
            {"m": model_name},
        ).mappings().all()
        for row in rows:
            path = artifact_path(row["artifact_uri"])
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                log.warning("%s v%s: artifact missing at %s; not signed", model_name, row["version"], path)
                continue
            if hashlib.sha256(blob).hexdigest() != row["sha256"]:
                log.warning("%s v%s: artifact at %s does not have its recorded sha256; not signed", model_name, row["version"], path)
                continue
            connection.execute(
                sa.text("UPDATE model_versions SET signature = :s WHERE model_name = :m AND version = :v"),
                {"s": sign_artifact(blob, key), "m": model_name, "v": row["version"]},
            )
            signed.append(row["version"])
    return signed
