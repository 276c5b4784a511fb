"""Incidents: one open incident per model and kind, opened by a window with findings, extended by later
ones, escalated when a window brings a check new to it or more severe than before, resolved by the
first clean window after them; each change announced once.

The kinds share this machinery: `drift` (the hourly check; its findings are drift_results rows),
`performance` and `volume` (the daily check; a window is a day, its findings are lines that carry
their own numbers) and `release` (a canary stopped or a promotion rolled back by the daily release
decision; a later release's clean decision resolves it).

Announcements are claimed in the warehouse before they are sent, so two runs or a retry never send
one twice, and released when sending fails, so the retry sends it; each notifier's delivery is
recorded (`alert_deliveries`), so the retry skips the notifiers that already delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.serialization import finite_or_none
from batchwatch.warehouse import utc_timestamp

log = logging.getLogger(__name__)

# How alert_deliveries and the claims name an escalation: `escalated:<alert_escalations.id>`.
ESCALATED = "escalated:"
KINDS = ("drift", "performance", "volume", "release")


def day_window(ds: date) -> tuple[datetime, datetime]:
    """The UTC day `ds` as [start, end): the window a daily check (volume, performance) judges and its incident is dated by."""
    start = datetime.combine(ds, time(), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def day_due_by(deadline: datetime) -> date:
    """The UTC day a daily check run at `deadline` (its data interval end) judges: the one before it."""
    return (deadline.astimezone(timezone.utc) - timedelta(days=1)).date()


@dataclass(frozen=True)
class Finding:
    """One failing check of a window, as its incident remembers it: how severe, and which stored drift tests measured it."""

    band: int  # 0: over its threshold; i: at or over the i-th multiple of drift.severity_bands
    ratio: float | None  # the largest effect size / threshold among its tests; None when none is finite
    tests: tuple[tuple[str, str], ...] = ()  # (column_name, test) of its drift_results rows; none for other kinds

    def stored(self, check: str) -> dict[str, Any]:
        return {"check": check, "band": self.band, "ratio": finite_or_none(self.ratio), "tests": [list(pair) for pair in self.tests]}


def update_incident(
    connection: Connection,
    model_name: str,
    version: int,
    *,
    found: bool | None,
    window_end: datetime,
    drifted: list[str],
    findings: Mapping[str, Finding],
    run_id: str,
    unjudged: Collection[str] = (),
    kind: str = "drift",
) -> dict[str, Any] | None:
    """Open, extend, escalate or resolve the model's incident of `kind` for one checked window; return the change, if any, to announce.

    `found`: True when the window has findings, False when it is clean, None when it could not be judged
    (too little data), which neither extends nor resolves anything. `drifted`: one line per drifted
    check, for messages; `findings`: the same checks by name, with their severity; `unjudged`: the checks
    the window had too few rows to judge. A clean window resolves an incident only if it could judge every
    check the incident saw drifted: a small window that cannot see them says nothing about their recovery.
    """
    now = datetime.now(timezone.utc)
    open_alert = connection.execute(
        sa.text("SELECT id, last_drifted_window_end, checks FROM alerts WHERE model_name = :m AND kind = :k AND status = 'open'")
        .columns(checks=sa.JSON),
        {"m": model_name, "k": kind},
    ).mappings().first()
    title = f"{kind.capitalize()} incident"
    summary = "; ".join(drifted)
    if found and open_alert is not None:
        connection.execute(
            sa.text(
                "UPDATE alerts SET last_drifted_window_end = CASE WHEN last_drifted_window_end < :e THEN :e ELSE last_drifted_window_end END"
                " WHERE id = :id"
            ),
            {"e": window_end, "id": open_alert["id"]},
        )
        return _escalate(connection, model_name, open_alert, window_end=window_end, drifted=drifted, findings=findings, run_id=run_id, now=now,
                         title=title)
    if found:
        # A rerun of a window an earlier incident already covered does not open a new one.
        covered = connection.execute(
            sa.text("SELECT 1 FROM alerts WHERE model_name = :m AND kind = :k AND resolved_window_end >= :e"),
            {"m": model_name, "k": kind, "e": window_end},
        ).first()
        if covered:
            return None
        connection.execute(
            sa.text(
                "INSERT INTO alerts (model_name, status, opened_window_end, last_drifted_window_end, model_version, drifted,"
                " summary, opened_at, run_id, checks, kind)"
                " VALUES (:m, 'open', :e, :e, :v, :d, :s, :t, :r, :c, :k)"
            ).bindparams(sa.bindparam("d", type_=sa.JSON), sa.bindparam("c", type_=sa.JSON)),
            {"m": model_name, "e": window_end, "v": version, "d": drifted, "s": summary, "t": now, "r": run_id,
             "c": {check: finding.band for check, finding in findings.items()}, "k": kind},
        )
        log.warning("%s opened for %s at window end %s: %s", title, model_name, window_end, summary)
        return {"status": "open", "kind": kind, "model_name": model_name, "window_end": window_end.isoformat(), "summary": summary,
                "drifted": drifted}
    blind = sorted(set(open_alert["checks"] or {}) & set(unjudged)) if open_alert is not None else []
    if found is False and open_alert is not None and blind:
        log.info("%s %s of %s stays open at window end %s: %s could not be judged", title, open_alert["id"], model_name, window_end,
                 ", ".join(blind))
        return None
    if found is False and open_alert is not None and utc_timestamp(open_alert["last_drifted_window_end"]) < window_end:
        connection.execute(
            sa.text("UPDATE alerts SET status = 'resolved', resolved_window_end = :e, resolved_at = :t WHERE id = :id"),
            {"e": window_end, "t": now, "id": open_alert["id"]},
        )
        log.info("%s %s of %s resolved at window end %s", title, open_alert["id"], model_name, window_end)
        return {
            "status": "resolved",
            "kind": kind,
            "model_name": model_name,
            "window_end": window_end.isoformat(),
            "summary": f"no {kind} finding in this window",
            "drifted": [],
        }
    return None


def _escalate(
    connection: Connection,
    model_name: str,
    open_alert: Mapping[str, Any],
    *,
    window_end: datetime,
    drifted: list[str],
    findings: Mapping[str, Finding],
    run_id: str,
    now: datetime,
    title: str,
) -> dict[str, Any] | None:
    """Record the window's checks in the open incident; when one is new to it or in a higher band than it reached, escalate once."""
    known: dict[str, int] | None = open_alert["checks"]
    merged = {**(known or {}), **{check: max(finding.band, (known or {}).get(check, -1)) for check, finding in findings.items()}}
    if merged != known:
        connection.execute(
            sa.text("UPDATE alerts SET checks = :c WHERE id = :id").bindparams(sa.bindparam("c", type_=sa.JSON)),
            {"c": merged, "id": open_alert["id"]},
        )
    if known is None:
        return None  # opened before migration 0007: what it had seen, and announced, is unknown; this window is its baseline
    new = [finding.stored(check) for check, finding in findings.items() if check not in known]
    raised = [{**finding.stored(check), "previous_band": known[check]} for check, finding in findings.items()
              if check in known and finding.band > known[check]]
    if not new and not raised:
        return None
    # Window ends are bound as the other writers bind them, so they compare equal to drift_results' on SQLite too.
    escalated_before = connection.execute(
        sa.text("SELECT 1 FROM alert_escalations WHERE alert_id = :id AND window_end = :e"), {"id": open_alert["id"], "e": window_end}
    ).first()
    if escalated_before:
        return None  # a window grows an incident once, whatever a rerun of it finds
    escalation_id = connection.execute(
        sa.text(
            "INSERT INTO alert_escalations (alert_id, window_end, new_checks, raised, drifted, created_at, run_id)"
            " VALUES (:id, :e, :new, :raised, :d, :t, :r) RETURNING id"
        ).bindparams(*(sa.bindparam(name, type_=sa.JSON) for name in ("new", "raised", "d"))),
        {"id": open_alert["id"], "e": window_end, "new": new, "raised": raised, "d": drifted, "t": now, "r": run_id},
    ).scalar_one()
    summary = growth_summary(new, raised)
    log.warning("%s %s of %s grew at window end %s: %s", title, open_alert["id"], model_name, window_end, summary)
    return {
        "status": "escalated",
        "kind": title.split()[0].lower(),
        "alert_id": open_alert["id"],
        "escalation_id": escalation_id,
        "model_name": model_name,
        "window_end": window_end.isoformat(),
        "summary": summary,
        "drifted": drifted,
        "new_checks": [check["check"] for check in new],
        "raised": {check["check"]: [check["previous_band"], check["band"]] for check in raised},
    }


def growth_summary(new: list[dict[str, Any]], raised: list[dict[str, Any]]) -> str:
    """`new: null_rate:country; more severe: distribution:amount (band 1 -> 2)`: what made an incident grow."""
    parts = []
    if new:
        parts.append("new: " + ", ".join(check["check"] for check in new))
    if raised:
        parts.append("more severe: " + ", ".join(f"{c['check']} (band {c['previous_band']} -> {c['band']})" for c in raised))
    return "; ".join(parts)


# --- notification bookkeeping -----------------------------------------------------------------


def pending_notifications(engine: Engine, model_name: str) -> list[dict[str, Any]]:
    """Incident changes whose notifiers have not run yet (also after a failed or retried task), in the order they happened.

    Each carries the checks with their numbers, so a message can say what drifted and by how much:
    on open the drifted checks of the opening window; on escalation the checks new to the incident or
    more severe, as the window that grew it measured them; on recovery the checks drifted in the
    incident's last drifted window, as the resolving window measured them. An incident that
    recovered before it was ever announced is announced once, by its recovery.
    """
    query = sa.text(
        "SELECT id, kind, status, model_version, opened_window_end, last_drifted_window_end, resolved_window_end, summary, drifted,"
        " open_notified_at, resolved_notified_at FROM alerts WHERE model_name = :m AND"
        " (open_notified_at IS NULL OR (status = 'resolved' AND resolved_notified_at IS NULL)"
        " OR EXISTS (SELECT 1 FROM alert_escalations e WHERE e.alert_id = alerts.id AND e.notified_at IS NULL)) ORDER BY id"
    ).columns(drifted=sa.JSON)
    escalations = sa.text(
        "SELECT id, window_end, new_checks, raised, drifted FROM alert_escalations WHERE alert_id = :id AND notified_at IS NULL ORDER BY id"
    ).columns(new_checks=sa.JSON, raised=sa.JSON, drifted=sa.JSON)
    pending = []
    with engine.connect() as connection:
        for row in connection.execute(query, {"m": model_name}).mappings().all():
            resolved = row["status"] == "resolved"
            change = {"alert_id": row["id"], "kind": row["kind"], "model_name": model_name, "model_version": row["model_version"]}
            if row["open_notified_at"] is None and not resolved:
                pending.append({**change, **_opened(connection, model_name, row)})
            if row["open_notified_at"] is not None or not resolved:
                for escalation in connection.execute(escalations, {"id": row["id"]}).mappings().all():
                    pending.append({**change, **_grown(connection, model_name, escalation, row["kind"])})
            if resolved and row["resolved_notified_at"] is None:
                pending.append({**change, **_recovered(connection, model_name, row)})
    return pending


def _opened(connection: Connection, model_name: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    # Window ends go back into the query as read, so they match however the warehouse stores them.
    checks = _results(connection, model_name, alert["kind"], alert["opened_window_end"], drifted_only=True)
    return {"status": "open", "change": "open", **_window_of(checks, alert["opened_window_end"]), "summary": alert["summary"],
            "drifted": alert["drifted"]}


def _grown(connection: Connection, model_name: str, escalation: Mapping[str, Any], kind: str) -> dict[str, Any]:
    grown = [*escalation["new_checks"], *escalation["raised"]]
    tests = {tuple(pair) for check in grown for pair in check["tests"]}
    checks = [c for c in _results(connection, model_name, kind, escalation["window_end"]) if (c["column_name"], c["test"]) in tests]
    return {
        "status": "escalated",
        "change": f"{ESCALATED}{escalation['id']}",
        "escalation_id": escalation["id"],
        **_window_of(checks, escalation["window_end"]),
        "summary": growth_summary(escalation["new_checks"], escalation["raised"]),
        "drifted": escalation["drifted"],
        "new_checks": [{k: v for k, v in check.items() if k != "tests"} for check in escalation["new_checks"]],
        "raised": [{k: v for k, v in check.items() if k != "tests"} for check in escalation["raised"]],
    }


def _recovered(connection: Connection, model_name: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    kind = alert["kind"]
    pairs = {(c["column_name"], c["test"]) for c in _results(connection, model_name, kind, alert["last_drifted_window_end"], drifted_only=True)}
    checks = [c for c in _results(connection, model_name, kind, alert["resolved_window_end"]) if (c["column_name"], c["test"]) in pairs]
    return {"status": "resolved", "change": "resolved", **_window_of(checks, alert["resolved_window_end"]),
            "summary": f"recovered; it was: {alert['summary']}", "drifted": alert["drifted"]}


def _window_of(checks: list[dict[str, Any]], window_end: Any) -> dict[str, Any]:
    """The change's window and its checks' numbers (the window's start is on its stored results, when there are any)."""
    return {
        "window_start": next((c["window_start"] for c in checks), None),
        "window_end": utc_timestamp(window_end).isoformat(),
        "checks": [{k: v for k, v in c.items() if k != "window_start"} for c in checks],
    }


def _results(connection: Connection, model_name: str, kind: str, window_end: Any, *, drifted_only: bool = False) -> list[dict[str, Any]]:
    """The stored drift results of one window, with the numbers an announcement quotes; none for other kinds, whose lines carry their numbers."""
    if kind != "drift":
        return []
    rows = connection.execute(
        sa.text(
            "SELECT window_start, column_name, test, statistic, p_value, p_adjusted, effect_size, threshold, n_current, verdict"
            " FROM drift_results WHERE model_name = :m AND window_end = :e" + (" AND verdict = 'drifted'" if drifted_only else "")
            + " ORDER BY column_name, test"
        ),
        {"m": model_name, "e": window_end},
    ).mappings().all()
    return [{**row, "window_start": utc_timestamp(row["window_start"]).isoformat()} for row in rows]


def announce(engine: Engine, model_name: str, notifiers: Mapping[str, Callable[[dict[str, Any]], None]], *, run_id: str) -> int:
    """Send each incident change not yet announced to each of `notifiers` (by name) once; return how many changes.

    A change is claimed before it is sent, so two runs or a retry never announce it twice. Each
    notifier's delivery is recorded as it succeeds; when one raises, the claim is released so the
    task's retry announces the change again, to the notifiers that have not delivered it only.
    """
    announced = 0
    for alert in pending_notifications(engine, model_name):
        alert_id, change = alert["alert_id"], alert["change"]
        if not claim_notification(engine, alert_id, change):
            continue  # another run announced it first
        log.warning("Announcing drift incident %s %s of %s: %s", alert_id, change, model_name, alert["summary"])
        try:
            done = deliveries(engine, alert_id, change)
            for name, send in notifiers.items():
                if name in done:
                    log.info("Incident %s %s already delivered by %s", alert_id, change, name)
                    continue
                send(alert)
                record_delivery(engine, alert_id, change, name, run_id)
        except BaseException:
            release_notification(engine, alert_id, change)
            raise
        announced += 1
    return announced


def deliveries(engine: Engine, alert_id: int, change: str) -> set[str]:
    """The notifiers that have delivered this incident change ('open', 'resolved' or 'escalated:<id>')."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT notifier FROM alert_deliveries WHERE alert_id = :id AND status = :s"), {"id": alert_id, "s": change}
        )
        return {row.notifier for row in rows}


def record_delivery(engine: Engine, alert_id: int, change: str, notifier: str, run_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO alert_deliveries (alert_id, status, notifier, delivered_at, run_id) VALUES (:id, :s, :n, :t, :r)"),
            {"id": alert_id, "s": change, "n": notifier, "t": datetime.now(timezone.utc), "r": run_id},
        )


def _stamp(alert_id: int, change: str) -> tuple[str, str, str, dict[str, int]]:
    """Where a change's announcement is stamped: table, column, the row's condition and its parameters."""
    if change.startswith(ESCALATED):
        return "alert_escalations", "notified_at", "id = :row AND alert_id = :id", {"row": int(change.removeprefix(ESCALATED)), "id": alert_id}
    column = {"open": "open_notified_at", "resolved": "resolved_notified_at"}[change]
    return "alerts", column, "id = :id", {"id": alert_id}


def claim_notification(engine: Engine, alert_id: int, change: str) -> bool:
    """Mark the incident change ('open', 'resolved' or 'escalated:<id>') as announced; False when another run already has."""
    table, column, where, key = _stamp(alert_id, change)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        claimed = connection.execute(sa.text(f"UPDATE {table} SET {column} = :t WHERE {where} AND {column} IS NULL"), {"t": now, **key}).rowcount
        if claimed and change == "resolved":
            # An incident resolved before it was ever announced is settled by this one notification, growth included.
            unannounced = connection.execute(
                sa.text("UPDATE alerts SET open_notified_at = :t WHERE id = :id AND open_notified_at IS NULL"), {"t": now, "id": alert_id}
            ).rowcount
            if unannounced:
                connection.execute(
                    sa.text("UPDATE alert_escalations SET notified_at = :t WHERE alert_id = :id AND notified_at IS NULL"), {"t": now, "id": alert_id}
                )
    return claimed == 1


def release_notification(engine: Engine, alert_id: int, change: str) -> None:
    """A notifier failed: leave the change pending so that the task's retry announces it."""
    table, column, where, key = _stamp(alert_id, change)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {table} SET {column} = NULL WHERE {where}"), key)
