"""Escalation's SQL: every statement on ``escalation_policies``, ``escalation_steps``,
``escalation_callouts`` and ``notifications``, and the few reads of alerts and residents it needs.

Functions take an open transaction (:class:`~alarm_centre.store.base.Tx`); the engine decides, these
read and write. Values of closed sets go in as parameters (enums from :mod:`.states`), and every state
change is guarded by the states its table allows it from (:meth:`~.states.StateTable.sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alarm_centre.alerts.lifecycle import AlertState, Outcome
from alarm_centre.escalation.states import (
    CALLOUTS,
    NOTIFICATIONS,
    STEPS,
    CalloutState,
    Channel,
    NotificationState,
    PolicySource,
    Purpose,
    ResponderAction,
    StepAction,
    StepKind,
    StepState,
    marks,
)
from alarm_centre.store.tx import Row, Tx

# -- policies ------------------------------------------------------------------------------------


async def policy_sources(tx: Tx) -> list[Row]:
    return await tx.fetchall("SELECT priority, source FROM escalation_policies")


async def all_policies(tx: Tx) -> list[Row]:
    return await tx.fetchall("SELECT * FROM escalation_policies ORDER BY priority")


async def policy_steps(tx: Tx, priority: int) -> str | None:
    """The JSON text of one priority's steps, or None when it has no policy."""
    row = await tx.fetchone("SELECT steps FROM escalation_policies WHERE priority = ?", priority)
    return None if row is None else str(row["steps"])


async def put_policy(
    tx: Tx, priority: int, steps_json: str, source: PolicySource, now: float, by: str
) -> None:
    await tx.execute(
        "INSERT INTO escalation_policies (priority, steps, source, updated_at, updated_by) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (priority) DO UPDATE SET "
        "steps = excluded.steps, source = excluded.source, updated_at = excluded.updated_at, "
        "updated_by = excluded.updated_by",
        priority,
        steps_json,
        source,
        now,
        by,
    )


async def delete_policy(tx: Tx, priority: int) -> None:
    await tx.execute("DELETE FROM escalation_policies WHERE priority = ?", priority)


# -- alerts and residents (read, and an alert's escalation mark) -----------------------------------


async def alert_state(tx: Tx, alert_id: int) -> Row | None:
    return await tx.fetchone("SELECT state, acknowledged_by FROM alerts WHERE id = ?", alert_id)


async def set_alert_data(tx: Tx, alert_id: int, data_json: str, now: float) -> None:
    await tx.execute("UPDATE alerts SET data = ?, updated_at = ? WHERE id = ?", data_json, now, alert_id)


async def resident(tx: Tx, resident_id: str) -> Row | None:
    return await tx.fetchone("SELECT name, data FROM residents WHERE id = ?", resident_id)


async def sent_for_responders_without_callout(tx: Tx, since: float, ids: Sequence[int] | None) -> list[Row]:
    """Alerts resolved ``responder_sent`` since ``since`` (of ``ids``, if given) with no call-out yet."""
    sql = (
        "SELECT * FROM alerts WHERE outcome = ? AND state = ? AND test = 0 "
        "AND resolved_at >= ? AND NOT EXISTS (SELECT 1 FROM escalation_callouts c "
        "WHERE c.alert_id = alerts.id)"
    )
    args: list[Any] = [Outcome.RESPONDER_SENT, AlertState.RESOLVED, since]
    if ids is not None:
        sql += f" AND id IN ({', '.join('?' for _ in ids)})"
        args += ids
    return await tx.fetchall(sql + " ORDER BY id", *args)


# -- due steps ------------------------------------------------------------------------------------


async def add_step(
    tx: Tx,
    alert_id: int,
    kind: StepKind,
    seq: int,
    action: StepAction | ResponderAction,
    target_json: str,
    due_at: float,
    now: float,
) -> None:
    """Add a pending step (once: the same alert, kind, seq and action is never added twice)."""
    await tx.execute(
        "INSERT INTO escalation_steps (alert_id, kind, seq, action, target, due_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id, kind, seq, action) DO NOTHING",
        alert_id,
        kind,
        seq,
        action,
        target_json,
        due_at,
        now,
    )


@dataclass(frozen=True, slots=True)
class NewStep:
    """A pending step to add (:func:`add_step`'s arguments)."""

    alert_id: int
    kind: StepKind
    seq: int
    action: StepAction | ResponderAction
    target: str
    due_at: float


async def add_steps(tx: Tx, steps: Sequence[NewStep], now: float) -> None:
    """Add pending steps in one statement, in order, each as :func:`add_step` would (PostgreSQL arrays:
    the set-based ingest)."""
    if not steps:
        return
    await tx.execute(
        "INSERT INTO escalation_steps (alert_id, kind, seq, action, target, due_at, created_at) "
        "SELECT s.alert_id, s.kind, s.seq, s.action, s.target, s.due_at, ? "
        "FROM unnest(?::bigint[], ?::text[], ?::int[], ?::text[], ?::text[], ?::float8[]) "
        "WITH ORDINALITY AS s(alert_id, kind, seq, action, target, due_at, n) ORDER BY s.n "
        "ON CONFLICT (alert_id, kind, seq, action) DO NOTHING",
        now,
        [s.alert_id for s in steps],
        [str(s.kind) for s in steps],
        [s.seq for s in steps],
        [str(s.action) for s in steps],
        [s.target for s in steps],
        [s.due_at for s in steps],
    )


async def due_steps(tx: Tx, at: float, limit: int, skip_locked: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM escalation_steps WHERE state = ? AND due_at <= ? ORDER BY due_at, id LIMIT ?"
        + skip_locked,
        StepState.PENDING,
        at,
        limit,
    )


async def finish_step(tx: Tx, step: Row, state: StepState, at: float, result: str) -> None:
    """Record what performing a step (taken as pending) came to. Performing it may have cancelled it
    with its policy already; the step's own result is what its timeline entry says, so it is written."""
    STEPS.check(StepState(step["state"]), state)
    await tx.execute(
        "UPDATE escalation_steps SET state = ?, done_at = ?, result = ? WHERE id = ?",
        state,
        at,
        result,
        step["id"],
    )


async def cancel_steps(
    tx: Tx, alert_id: int, kind: StepKind, reason: str, now: float, *, seq: int | None = None
) -> int:
    """Cancel an alert's pending steps of one kind (one ``seq`` only, if given); returns how many."""
    sources = STEPS.sources(StepState.CANCELLED)
    sql = (
        "UPDATE escalation_steps SET state = ?, done_at = ?, result = ? "
        f"WHERE alert_id = ? AND kind = ? AND state IN ({marks(sources)})"
    )
    args: list[Any] = [StepState.CANCELLED, now, reason, alert_id, kind, *sources]
    if seq is not None:
        sql += " AND seq = ?"
        args.append(seq)
    changed: int = await tx.execute(sql, *args)
    return changed


# -- call-outs ------------------------------------------------------------------------------------


async def add_callout(tx: Tx, alert_id: int, responders_json: str, state: CalloutState, now: float) -> None:
    await tx.execute(
        "INSERT INTO escalation_callouts (alert_id, responders, position, state, started_at, updated_at) "
        "VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING",
        alert_id,
        responders_json,
        state,
        now,
        now,
    )


async def callout(tx: Tx, alert_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM escalation_callouts WHERE alert_id = ?", alert_id)


async def set_callout_position(tx: Tx, alert_id: int, position: int, now: float) -> None:
    await tx.execute(
        "UPDATE escalation_callouts SET position = ?, updated_at = ? WHERE alert_id = ?",
        position,
        now,
        alert_id,
    )


async def move_callout(
    tx: Tx,
    alert_id: int,
    target: CalloutState,
    now: float,
    *,
    position: int | None = None,
    accepted_by: str | None = None,
) -> int:
    """Move a call-out to ``target`` if its table allows it from the state it is in."""
    sources = CALLOUTS.sources(target)
    sets = ["state = ?", "updated_at = ?"]
    args: list[Any] = [target, now]
    if position is not None:
        sets.append("position = ?")
        args.append(position)
    if accepted_by is not None:
        sets.append("accepted_by = ?")
        args.append(accepted_by)
    changed: int = await tx.execute(
        f"UPDATE escalation_callouts SET {', '.join(sets)} "
        f"WHERE alert_id = ? AND state IN ({marks(sources)})",
        *args,
        alert_id,
        *sources,
    )
    return changed


# -- notifications --------------------------------------------------------------------------------


async def add_notification(
    tx: Tx,
    alert_id: int,
    step_id: int | None,
    purpose: Purpose,
    index: int | None,
    name: str,
    channel: Channel,
    number: str,
    body: str,
    now: float,
) -> None:
    await tx.execute(
        "INSERT INTO notifications (alert_id, step_id, purpose, responder_index, name, channel, "
        "to_number, body, due_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        alert_id,
        step_id,
        purpose,
        index,
        name,
        channel,
        number,
        body,
        now,
        now,
        now,
    )


async def notification(tx: Tx, note_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM notifications WHERE id = ?", note_id)


async def notification_by_sid(tx: Tx, sid: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM notifications WHERE sid = ?", sid)


async def last_contact_of(tx: Tx, number: str) -> Row | None:
    """The newest notification that went (or was tried) to ``number``."""
    return await tx.fetchone(
        "SELECT * FROM notifications WHERE to_number = ? AND state <> ? ORDER BY id DESC LIMIT 1",
        number,
        NotificationState.PENDING,
    )


async def due_notifications(tx: Tx, now: float, limit: int, skip_locked: str) -> list[Row]:
    """Pending notifications that are due and under no live lease."""
    return await tx.fetchall(
        "SELECT * FROM notifications WHERE state = ? AND due_at <= ? "
        "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at, id LIMIT ?" + skip_locked,
        NotificationState.PENDING,
        now,
        now,
        limit,
    )


async def lease_notification(tx: Tx, note_id: int, until: float, node: str, now: float) -> int:
    """Claim a pending notification for ``node`` until ``until`` (one more attempt); 1 if taken."""
    changed: int = await tx.execute(
        "UPDATE notifications SET attempts = attempts + 1, lease_until = ?, claimed_by = ?, "
        "updated_at = ? WHERE id = ? AND state = ? AND (lease_until IS NULL OR lease_until <= ?)",
        until,
        node,
        now,
        note_id,
        NotificationState.PENDING,
        now,
    )
    return changed


async def give_back(tx: Tx, note_id: int) -> None:
    """Undo a claim that was never tried."""
    await tx.execute(
        "UPDATE notifications SET lease_until = NULL, attempts = attempts - 1 WHERE id = ? AND state = ?",
        note_id,
        NotificationState.PENDING,
    )


async def record_sent(tx: Tx, note_id: int, sid: str, status: str, now: float) -> int:
    sources = NOTIFICATIONS.sources(NotificationState.SENT)
    changed: int = await tx.execute(
        "UPDATE notifications SET state = ?, sid = ?, status = ?, lease_until = NULL, "
        f"last_error = NULL, updated_at = ? WHERE id = ? AND state IN ({marks(sources)})",
        NotificationState.SENT,
        sid,
        status,
        now,
        note_id,
        *sources,
    )
    return changed


async def retry_later(tx: Tx, note_id: int, retry_at: float, error: str, now: float) -> None:
    """A failed attempt of a still-pending notification: free its lease and try again at ``retry_at``."""
    await tx.execute(
        "UPDATE notifications SET due_at = ?, lease_until = NULL, last_error = ?, updated_at = ? "
        "WHERE id = ?",
        retry_at,
        error,
        now,
        note_id,
    )


async def set_status(tx: Tx, note_id: int, status: str, now: float) -> None:
    """Twilio's latest word on a notification (``queued``, ``delivered``, ``busy``, ...)."""
    await tx.execute("UPDATE notifications SET status = ?, updated_at = ? WHERE id = ?", status, now, note_id)


async def move_notification(
    tx: Tx,
    note_id: int,
    target: NotificationState,
    now: float | None,
    *,
    last_error: str | None = None,
    release: bool = False,
    due_at: float | None = None,
) -> int:
    """Move one notification to ``target`` if its table allows it from the state it is in."""
    sources = NOTIFICATIONS.sources(target)
    sets = ["state = ?"]
    args: list[Any] = [target]
    for column, value in (("updated_at", now), ("last_error", last_error), ("due_at", due_at)):
        if value is not None:
            sets.append(f"{column} = ?")
            args.append(value)
    if release:
        sets.append("lease_until = NULL")
    changed: int = await tx.execute(
        f"UPDATE notifications SET {', '.join(sets)} WHERE id = ? AND state IN ({marks(sources)})",
        *args,
        note_id,
        *sources,
    )
    return changed


async def cancel_notifications(
    tx: Tx,
    alert_id: int,
    purpose: Purpose,
    reason: str,
    now: float,
    *,
    responder_index: int | None = None,
    unclaimed_at: float | None = None,
) -> int:
    """Cancel an alert's pending notifications for ``purpose`` (of one responder, or only those under
    no live lease at ``unclaimed_at``, if given); returns how many."""
    sources = NOTIFICATIONS.sources(NotificationState.CANCELLED)
    sql = (
        "UPDATE notifications SET state = ?, updated_at = ?, last_error = ? "
        f"WHERE alert_id = ? AND purpose = ? AND state IN ({marks(sources)})"
    )
    args: list[Any] = [NotificationState.CANCELLED, now, reason, alert_id, purpose, *sources]
    if responder_index is not None:
        sql += " AND responder_index = ?"
        args.append(responder_index)
    if unclaimed_at is not None:
        sql += " AND (lease_until IS NULL OR lease_until <= ?)"
        args.append(unclaimed_at)
    changed: int = await tx.execute(sql, *args)
    return changed


# -- for metrics and the loop ---------------------------------------------------------------------


#: A placed call's last status that may still change into ringing or answered (None: no callback yet).
MAYBE_RINGING = ("queued", "initiated", "ringing")


async def calls_maybe_ringing(tx: Tx, alert_ids: Sequence[int]) -> list[str]:
    rows = await tx.fetchall(
        f"SELECT sid FROM notifications WHERE alert_id IN ({marks(tuple(alert_ids))}) AND channel = ? "
        f"AND state = ? AND sid IS NOT NULL AND (status IS NULL OR status IN ({marks(MAYBE_RINGING)}))",
        *alert_ids,
        Channel.CALL,
        NotificationState.SENT,
        *MAYBE_RINGING,
    )
    return [str(r["sid"]) for r in rows]


async def pending_counts(tx: Tx) -> dict[str, int]:
    steps = await tx.fetchone("SELECT COUNT(*) AS n FROM escalation_steps WHERE state = ?", StepState.PENDING)
    notes = await tx.fetchone(
        "SELECT COUNT(*) AS n FROM notifications WHERE state = ?", NotificationState.PENDING
    )
    return {"steps": int(steps["n"]) if steps else 0, "notifications": int(notes["n"]) if notes else 0}


async def next_due(tx: Tx) -> float | None:
    a = await tx.fetchone("SELECT MIN(due_at) AS t FROM escalation_steps WHERE state = ?", StepState.PENDING)
    b = await tx.fetchone(
        "SELECT MIN(due_at) AS t FROM notifications WHERE state = ?", NotificationState.PENDING
    )
    times = [float(r["t"]) for r in (a, b) if r is not None and r["t"] is not None]
    return min(times) if times else None


# -- service levels -------------------------------------------------------------------------------


async def raised_between(tx: Tx, lo: float, hi: float, priorities: Sequence[int]) -> list[Row]:
    """Alerts (tests left out) of ``priorities`` raised from ``lo`` up to ``hi``, oldest first."""
    return await tx.fetchall(
        "SELECT priority, raised_at, acknowledged_at, acknowledged_by, resolved_at FROM alerts "
        f"WHERE raised_at >= ? AND raised_at < ? AND test = 0 AND priority IN ({marks(tuple(priorities))}) "
        "ORDER BY raised_at",
        lo,
        hi,
        *priorities,
    )


async def acknowledgements(tx: Tx, alert_ids: Sequence[int]) -> list[Row]:
    return await tx.fetchall(
        "SELECT priority, raised_at, acknowledged_at, test FROM alerts "
        f"WHERE id IN ({marks(tuple(alert_ids))})",
        *alert_ids,
    )


# -- Twilio webhook replays -----------------------------------------------------------------------


async def claim_replay(tx: Tx, key: str, now: float, expires_at: float) -> int:
    """Drop expired replay keys and record ``key``; 1 if it is new, 0 if it was already there."""
    await tx.execute("DELETE FROM webhook_replays WHERE expires_at <= ?", now)
    claimed: int = await tx.execute(
        "INSERT INTO webhook_replays (replay_key, expires_at) VALUES (?, ?) "
        "ON CONFLICT (replay_key) DO NOTHING",
        key,
        expires_at,
    )
    return claimed


async def forget_replay(tx: Tx, key: str) -> None:
    await tx.execute("DELETE FROM webhook_replays WHERE replay_key = ?", key)
