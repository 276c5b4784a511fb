"""Releases under way: a canary's ramp and a guard period after a promotion, kept in `releases` and `release_steps`.

A model has at most one release under way (a unique index), so the challenger alias has one meaning at
a time: during a canary it is the version under test, during a guard the previous champion scoring in
shadow. Every start, step, decision and end is also an event in `model_events`, the registry's audit log.
A step takes effect from a scored day on (`effective_from`), so the nightly run of any day, rerun or
not, serves the arms that day had (scoring.routing.arms_on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch import registry
from batchwatch.hashing import canary_salt
from batchwatch.spec import ModelSpec
from batchwatch.warehouse import utc_timestamp
from batchwatch.warehouse.schema import release_steps, releases

ACTIVE = ("running", "awaiting_approval")


class ReleaseRefused(registry.RegistryError):
    """A release that cannot start or change as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Release:
    id: int
    model_name: str
    kind: str  # canary | guard
    version: int  # the challenger under test, or the new champion under guard
    baseline_version: int  # the champion it is compared with, or the previous champion
    status: str
    plan: dict[str, Any]  # the spec's release settings when it started
    salt: str | None
    step: int | None
    started_on: date
    ends_on: date | None
    started_at: datetime
    reason: str | None
    actor: str

    @property
    def steps(self) -> list[float]:
        return list(self.plan["canary"]["steps"])

    @property
    def share(self) -> float:
        """The challenger's share of entities now: 0 once the canary ended other than by promotion."""
        if self.kind != "canary" or self.step is None or self.status not in (*ACTIVE, "promoted"):
            return 0.0
        return self.steps[self.step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model_name": self.model_name, "kind": self.kind, "version": self.version, "baseline_version": self.baseline_version,
            "status": self.status, "step": self.step, "share": self.share, "steps": self.steps if self.kind == "canary" else None,
            "started_on": self.started_on.isoformat(), "ends_on": self.ends_on.isoformat() if self.ends_on else None,
            "started_at": self.started_at.isoformat(), "reason": self.reason, "actor": self.actor,
        }


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _release(row: Any) -> Release:
    return Release(
        id=row.id, model_name=row.model_name, kind=row.kind, version=row.version, baseline_version=row.baseline_version, status=row.status,
        plan=row.plan, salt=row.salt, step=row.step, started_on=as_date(row.started_on), ends_on=as_date(row.ends_on) if row.ends_on else None,
        started_at=utc_timestamp(row.started_at).to_pydatetime(), reason=row.reason, actor=row.actor,
    )


def active_release(connection: Connection, model_name: str) -> Release | None:
    row = connection.execute(
        sa.select(releases).where(releases.c.model_name == model_name, releases.c.status.in_(ACTIVE))
    ).first()
    return None if row is None else _release(row)


def get_release(connection: Connection, release_id: int) -> Release:
    return _release(connection.execute(sa.select(releases).where(releases.c.id == release_id)).one())


def release_history(engine: Engine, model_name: str, limit: int = 10) -> list[Release]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(releases).where(releases.c.model_name == model_name).order_by(releases.c.id.desc()).limit(limit)
        ).all()
    return [_release(row) for row in rows]


def steps_of(connection: Connection, release_id: int) -> list[dict[str, Any]]:
    """The ramp so far: each step's share and the scored days it was in force, [from, until)."""
    rows = connection.execute(
        sa.select(release_steps).where(release_steps.c.release_id == release_id).order_by(release_steps.c.step)
    ).all()
    return [{"step": row.step, "share": row.share, "effective_from": as_date(row.effective_from),
             "effective_until": as_date(row.effective_until) if row.effective_until else None} for row in rows]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def start_canary(engine: Engine, spec: ModelSpec, version: int, *, starts_on: date, actor: str, reason: str) -> Release:
    """Make `version` the challenger and let it serve the first step's share of entities from the scored day `starts_on`."""
    plan = spec.release.model_dump(mode="json")
    with engine.begin() as connection:
        registry.lock_model(connection, spec.name)
        current = active_release(connection, spec.name)
        if current is not None:
            raise ReleaseRefused(
                f"{spec.name}: release #{current.id} ({current.kind} of v{current.version}) is {current.status}; a model has one release at a "
                f"time. Wait for it to end, or stop it (bin/batchwatch canary stop {spec.name} --reason ...)."
            )
        champion = registry.alias_version_in(connection, spec.name, "champion")
        if champion is None:
            raise ReleaseRefused(f"{spec.name} has no champion: a canary compares a challenger with one. Register a champion first.")
        if champion == version:
            raise ReleaseRefused(f"{spec.name} v{version} is already the champion")
        if registry.alias_version_in(connection, spec.name, "challenger") != version:
            registry.point_alias(connection, spec.name, "challenger", version, event="set_challenger", reason=f"canary: {reason}", actor=actor,
                                 details={})
        now = _now()
        release_id = connection.execute(
            sa.insert(releases).values(
                model_name=spec.name, kind="canary", version=version, baseline_version=champion, status="running", plan=plan, step=0,
                started_on=starts_on, started_at=now, updated_at=now, actor=actor,
            ).returning(releases.c.id)
        ).scalar_one()
        salt = canary_salt(spec.name, release_id)
        connection.execute(sa.update(releases).where(releases.c.id == release_id).values(salt=salt))
        share = plan["canary"]["steps"][0]
        connection.execute(sa.insert(release_steps).values(release_id=release_id, step=0, share=share, effective_from=starts_on))
        registry.record_event(
            connection, spec.name, "canary_started", version=version, previous_version=champion, actor=actor,
            reason=f"canary of v{version} against v{champion}: {share:.0%} of entities from {starts_on}; {reason}",
            details={"release_id": release_id, "share": share, "effective_from": starts_on.isoformat(), "plan": plan},
        )
        return get_release(connection, release_id)


def advance(connection: Connection, release: Release, *, effective_from: date) -> float:
    """The next step's share, in force from the scored day `effective_from`; returns it."""
    step = release.step + 1
    share = release.steps[step]
    _close_step(connection, release.id, effective_from)
    connection.execute(sa.insert(release_steps).values(release_id=release.id, step=step, share=share, effective_from=effective_from))
    connection.execute(sa.update(releases).where(releases.c.id == release.id).values(step=step, updated_at=_now()))
    return share


def _close_step(connection: Connection, release_id: int, effective_until: date) -> None:
    connection.execute(
        sa.update(release_steps)
        .where(release_steps.c.release_id == release_id, release_steps.c.effective_until.is_(None))
        .values(effective_until=effective_until)
    )


def set_status(connection: Connection, release: Release, status: str, *, reason: str | None = None, effective_until: date | None = None) -> None:
    """Move the release to `status`; an ended canary stops serving its arm from the scored day `effective_until` on."""
    ended = status not in ACTIVE
    if ended and release.kind == "canary" and effective_until is not None:
        _close_step(connection, release.id, effective_until)
    connection.execute(
        sa.update(releases).where(releases.c.id == release.id).values(
            status=status, updated_at=_now(), **({"ended_at": _now(), "reason": reason} if ended else {})
        )
    )


def start_guard(connection: Connection, spec: ModelSpec, *, new_version: int, previous_version: int, starts_on: date, actor: str) -> Release | None:
    """After a promotion: the previous champion becomes the challenger, scoring in shadow for `release.guard_days`, so the new
    champion can be compared with it on the same rows. Inside the promotion's locked transaction. None when the spec has no guard."""
    days = spec.release.guard_days
    if days == 0 or previous_version == new_version:
        return None
    registry.point_alias(connection, spec.name, "challenger", previous_version, event="set_challenger", actor=actor, details={},
                         reason=f"guard: the previous champion scores in shadow for {days} days after v{new_version}'s promotion")
    now = _now()
    ends_on = starts_on + timedelta(days=days - 1)
    release_id = connection.execute(
        sa.insert(releases).values(
            model_name=spec.name, kind="guard", version=new_version, baseline_version=previous_version, status="running",
            plan=spec.release.model_dump(mode="json"), started_on=starts_on, ends_on=ends_on, started_at=now, updated_at=now, actor=actor,
        ).returning(releases.c.id)
    ).scalar_one()
    registry.record_event(
        connection, spec.name, "guard_started", version=new_version, previous_version=previous_version, actor=actor,
        reason=f"guard until {ends_on}: v{new_version} is rolled back if worse than v{previous_version} by more than {spec.release.guard_margin:g}",
        details={"release_id": release_id, "ends_on": ends_on.isoformat()},
    )
    return get_release(connection, release_id)


def drop_challenger(connection: Connection, model_name: str, version: int) -> None:
    """A release that ends takes its shadow with it, if the challenger alias still points at it."""
    connection.execute(
        sa.text("DELETE FROM model_aliases WHERE model_name = :m AND alias = 'challenger' AND version = :v"), {"m": model_name, "v": version}
    )
