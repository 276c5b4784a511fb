"""Incidents: one open incident per model, opened by a window with findings, extended by later ones,
resolved by the first clean window after them; each change announced once.

Announcements are claimed in the warehouse before they are sent, so two runs or a retry never send
one twice, and released when sending fails, so the retry sends it; each notifier's delivery is
recorded (`alert_deliveries`), so the retry skips the notifiers that already delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchwatch.warehouse import utc_timestamp

log = logging.getLogger(__name__)


def update_incident(
    connection: Connection, model_name: str, version: int, *, found: bool | None, window_end: datetime, drifted: list[str], run_id: str
) -> dict[str, Any] | None:
    """Open, extend or resolve the model's incident for one checked window; return the change, if any, to announce.

    `found`: True when the window has findings, False when it is clean, None when it could not be judged
    (too little data), which neither extends nor resolves anything.
    """
    now = datetime.now(timezone.utc)
    open_alert = connection.execute(
        sa.text("SELECT id, last_drifted_window_end FROM alerts WHERE model_name = :m AND status = 'open'"), {"m": model_name}
    ).mappings().first()
    summary = "; ".join(drifted)
    if found and open_alert is not None:
        connection.execute(
            sa.text(
                "UPDATE alerts SET last_drifted_window_end = CASE WHEN last_drifted_window_end < :e THEN :e ELSE last_drifted_window_end END"
                " WHERE id = :id"
            ),
            {"e": window_end, "id": open_alert["id"]},
        )
        return None
    if found:
        # A rerun of a window an earlier incident already covered does not open a new one.
        covered = connection.execute(
            sa.text("SELECT 1 FROM alerts WHERE model_name = :m AND resolved_window_end >= :e"), {"m": model_name, "e": window_end}
        ).first()
        if covered:
            return None
        connection.execute(
            sa.text(
                "INSERT INTO alerts (model_name, status, opened_window_end, last_drifted_window_end, model_version, drifted,"
                " summary, opened_at, run_id)"
                " VALUES (:m, 'open', :e, :e, :v, :d, :s, :t, :r)"
            ).bindparams(sa.bindparam("d", type_=sa.JSON)),
            {"m": model_name, "e": window_end, "v": version, "d": drifted, "s": summary, "t": now, "r": run_id},
        )
        log.warning("Drift incident opened for %s at window end %s: %s", model_name, window_end, summary)
        return {"status": "open", "model_name": model_name, "window_end": window_end.isoformat(), "summary": summary, "drifted": drifted}
    if found is False and open_alert is not None and utc_timestamp(open_alert["last_drifted_window_end"]) < window_end:
        connection.execute(
            sa.text("UPDATE alerts SET status = 'resolved', resolved_window_end = :e, resolved_at = :t WHERE id = :id"),
            {"e": window_end, "t": now, "id": open_alert["id"]},
        )
        log.info("Drift incident %s of %s resolved at window end %s", open_alert["id"], model_name, window_end)
        return {
            "status": "resolved",
            "model_name": model_name,
            "window_end": window_end.isoformat(),
            "summary": "no drift in this window",
            "drifted": [],
        }
    return None


# --- notification bookkeeping -----------------------------------------------------------------


def pending_notifications(engine: Engine, model_name: str) -> list[dict[str, Any]]:
    """Incident changes whose notifiers have not run yet (also after a failed or retried task).

    Each carries the checks with their numbers, so a message can say what drifted and by how much:
    on open the drifted checks of the opening window; on recovery the same checks (those drifted in
    the incident's last drifted window) as the resolving window measured them.
    """
    query = sa.text(
        "SELECT id, status, model_version, opened_window_end, last_drifted_window_end, resolved_window_end, summary, drifted"
        " FROM alerts WHERE model_name = :m AND"
        " (open_notified_at IS NULL OR (status = 'resolved' AND resolved_notified_at IS NULL)) ORDER BY id"
    ).columns(drifted=sa.JSON)
    pending = []
    with engine.connect() as connection:
        for row in connection.execute(query, {"m": model_name}).mappings().all():
            resolved = row["status"] == "resolved"
            stored_end = row["resolved_window_end"] if resolved else row["opened_window_end"]
            # Window ends go back into the query as read, so they match however the warehouse stores them.
            drifted = _results(connection, model_name, row["last_drifted_window_end"] if resolved else stored_end, drifted_only=True)
            checks = drifted
            if resolved:
                pairs = {(check["column_name"], check["test"]) for check in drifted}
                checks = [c for c in _results(connection, model_name, stored_end) if (c["column_name"], c["test"]) in pairs]
            window_start = next((c["window_start"] for c in checks), None)
            pending.append(
                {
                    "alert_id": row["id"],
                    "status": row["status"],
                    "model_name": model_name,
                    "model_version": row["model_version"],
                    "window_start": window_start,
                    "window_end": utc_timestamp(stored_end).isoformat(),
                    "summary": row["summary"] if not resolved else f"recovered; it was: {row['summary']}",
                    "drifted": row["drifted"],
                    "checks": [{k: v for k, v in c.items() if k != "window_start"} for c in checks],
                }
            )
    return pending


def _results(connection: Connection, model_name: str, window_end: Any, *, drifted_only: bool = False) -> list[dict[str, Any]]:
    """The stored drift results of one window, with the numbers an announcement quotes."""
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
        if not claim_notification(engine, alert["alert_id"], alert["status"]):
            continue  # another run announced it first
        log.warning("Announcing drift incident %s %s of %s: %s", alert["alert_id"], alert["status"], model_name, alert["summary"])
        try:
            done = deliveries(engine, alert["alert_id"], alert["status"])
            for name, send in notifiers.items():
                if name in done:
                    log.info("Incident %s %s already delivered by %s", alert["alert_id"], alert["status"], name)
                    continue
                send(alert)
                record_delivery(engine, alert["alert_id"], alert["status"], name, run_id)
        except BaseException:
            release_notification(engine, alert["alert_id"], alert["status"])
            raise
        announced += 1
    return announced


def deliveries(engine: Engine, alert_id: int, status: str) -> set[str]:
    """The notifiers that have delivered this incident change."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT notifier FROM alert_deliveries WHERE alert_id = :id AND status = :s"), {"id": alert_id, "s": status}
        )
        return {row.notifier for row in rows}


def record_delivery(engine: Engine, alert_id: int, status: str, notifier: str, run_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO alert_deliveries (alert_id, status, notifier, delivered_at, run_id) VALUES (:id, :s, :n, :t, :r)"),
            {"id": alert_id, "s": status, "n": notifier, "t": datetime.now(timezone.utc), "r": run_id},
        )


def _notified_column(status: str) -> str:
    return "open_notified_at" if status == "open" else "resolved_notified_at"


def claim_notification(engine: Engine, alert_id: int, status: str) -> bool:
    """Mark the incident change as announced; False when another run already has."""
    column = _notified_column(status)
    with engine.begin() as connection:
        claimed = connection.execute(
            sa.text(f"UPDATE alerts SET {column} = :t WHERE id = :id AND {column} IS NULL"), {"t": datetime.now(timezone.utc), "id": alert_id}
        ).rowcount
        if claimed and status == "resolved":
            # An incident resolved before it was ever announced is settled by this one notification.
            connection.execute(sa.text("UPDATE alerts SET open_notified_at = COALESCE(open_notified_at, :t) WHERE id = :id"),
                               {"t": datetime.now(timezone.utc), "id": alert_id})
    return claimed == 1


def release_notification(engine: Engine, alert_id: int, status: str) -> None:
    """A notifier failed: leave the change pending so that the task's retry announces it."""
    column = _notified_column(status)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE alerts SET {column} = NULL WHERE id = :id"), {"id": alert_id})
