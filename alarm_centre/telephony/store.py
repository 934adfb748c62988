"""Telephony's SQL: every statement on ``calls``, ``call_legs``, ``call_recordings``,
``operator_presence`` and ``call_reviews``, and the few reads of devices, residents and alerts it needs.

Functions take an open transaction; the engine decides, these read and write. Every state change is
guarded by the states its table allows it from (:meth:`~alarm_centre.escalation.states.StateTable.sources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from alarm_centre.escalation.states import marks
from alarm_centre.store.tx import Row, Tx
from alarm_centre.telephony.states import (
    CALLS,
    LEGS,
    CallState,
    Direction,
    LegRole,
    LegState,
)

# -- matching a caller ---------------------------------------------------------------------------


async def unit_with_sim(tx: Tx, number: str) -> Row | None:
    """The active unit whose SIM number is ``number``."""
    return await tx.fetchone(
        "SELECT id, resident_id, kind FROM devices WHERE phone = ? AND status = 'active'", number
    )


async def residents_with_phone(tx: Tx, number: str) -> list[Row]:
    return await tx.fetchall("SELECT id, name FROM residents WHERE phone = ? ORDER BY id LIMIT 5", number)


async def first_unit_of(tx: Tx, resident_id: str, kinds: Sequence[str]) -> Row | None:
    return await tx.fetchone(
        "SELECT id FROM devices WHERE resident_id = ? AND status = 'active' "
        f"AND kind IN ({marks(tuple(kinds))}) ORDER BY created_at LIMIT 1",
        resident_id,
        *kinds,
    )


async def open_alert_by_key(tx: Tx, key: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM alerts WHERE open_key = ?", key)


async def resident(tx: Tx, resident_id: str) -> Row | None:
    return await tx.fetchone("SELECT id, name, phone, data FROM residents WHERE id = ?", resident_id)


# -- calls ---------------------------------------------------------------------------------------


async def insert_call(
    tx: Tx,
    *,
    alert_id: int,
    direction: Direction,
    state: CallState,
    conference: str,
    now: float,
    caller: str = "",
    called: str = "",
    call_sid: str | None = None,
    matched: str = "",
    started_by: str | None = None,
    signal_at: float | None = None,
    overflow_at: float | None = None,
) -> Row:
    row = await tx.fetchone(
        "INSERT INTO calls (alert_id, direction, state, caller, called, call_sid, conference, matched, "
        "started_by, signal_at, started_at, overflow_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        alert_id,
        direction,
        state,
        caller,
        called,
        call_sid,
        conference,
        matched,
        started_by,
        signal_at,
        now,
        overflow_at,
        now,
    )
    assert row is not None
    return row


async def call(tx: Tx, call_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM calls WHERE id = ?", call_id)


async def call_by_sid(tx: Tx, sid: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM calls WHERE call_sid = ?", sid)


async def calls_of_alert(tx: Tx, alert_id: int) -> list[Row]:
    return await tx.fetchall("SELECT * FROM calls WHERE alert_id = ? ORDER BY id", alert_id)


async def live_calls(tx: Tx, limit: int = 500) -> list[Row]:
    """Calls not yet ended, oldest first."""
    return await tx.fetchall(
        "SELECT * FROM calls WHERE state <> ? ORDER BY started_at, id LIMIT ?", CallState.ENDED, limit
    )


async def waiting_calls(tx: Tx) -> list[Row]:
    """Calls nobody has answered yet (the overflow centre may be ringing too), oldest first."""
    return await tx.fetchall(
        "SELECT * FROM calls WHERE state IN (?, ?) ORDER BY started_at, id",
        CallState.WAITING,
        CallState.OVERFLOW,
    )


async def move_call(tx: Tx, call_id: int, target: CallState, now: float, **fields: Any) -> int:
    """Move a call to ``target`` if its table allows it from where it is; returns rows changed (0 or 1)."""
    sources = CALLS.sources(target)
    sets = "".join(f", {name} = ?" for name in fields)
    return await tx.execute(
        f"UPDATE calls SET state = ?, updated_at = ?{sets} WHERE id = ? AND state IN ({marks(sources)})",
        target,
        now,
        *fields.values(),
        call_id,
        *sources,
    )


async def set_call(tx: Tx, call_id: int, now: float, **fields: Any) -> None:
    """Fields that are no state (the conference sid, who handles it, when speech began)."""
    sets = ", ".join(f"{name} = ?" for name in fields)
    await tx.execute(f"UPDATE calls SET {sets}, updated_at = ? WHERE id = ?", *fields.values(), now, call_id)


async def due_overflows(tx: Tx, now: float, limit: int, skip_locked: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM calls WHERE state = ? AND overflow_at <= ? ORDER BY overflow_at LIMIT ?" + skip_locked,
        CallState.WAITING,
        now,
        limit,
    )


# -- legs ----------------------------------------------------------------------------------------


async def add_leg(
    tx: Tx,
    *,
    call_id: int,
    role: LegRole,
    party: str,
    address: str,
    state: LegState,
    now: float,
    due_at: float | None = None,
    sid: str | None = None,
    emergency: bool = False,
    transfer_from: str | None = None,
) -> int:
    row = await tx.fetchone(
        "INSERT INTO call_legs (call_id, role, party, address, state, sid, emergency, transfer_from, "
        "offered_at, due_at, answered_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        call_id,
        role,
        party,
        address,
        state,
        sid,
        int(emergency),
        transfer_from,
        now,
        due_at,
        now if state is LegState.ANSWERED else None,
        now,
    )
    assert row is not None
    return int(row["id"])


async def leg(tx: Tx, leg_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM call_legs WHERE id = ?", leg_id)


async def leg_by_sid(tx: Tx, sid: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM call_legs WHERE sid = ?", sid)


async def legs_of(tx: Tx, call_id: int) -> list[Row]:
    return await tx.fetchall("SELECT * FROM call_legs WHERE call_id = ? ORDER BY id", call_id)


async def legs_of_calls(tx: Tx, call_ids: Sequence[int]) -> list[Row]:
    if not call_ids:
        return []
    return await tx.fetchall(
        f"SELECT * FROM call_legs WHERE call_id IN ({marks(tuple(call_ids))}) ORDER BY id", *call_ids
    )


async def move_leg(tx: Tx, leg_id: int, target: LegState, now: float, **fields: Any) -> int:
    """Move a leg to ``target`` if its table allows it from where it is; returns rows changed (0 or 1)."""
    sources = LEGS.sources(target)
    sets = "".join(f", {name} = ?" for name in fields)
    return await tx.execute(
        f"UPDATE call_legs SET state = ?, updated_at = ?{sets} WHERE id = ? AND state IN ({marks(sources)})",
        target,
        now,
        *fields.values(),
        leg_id,
        *sources,
    )


async def set_leg(tx: Tx, leg_id: int, now: float, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ?" for name in fields)
    await tx.execute(
        f"UPDATE call_legs SET {sets}, updated_at = ? WHERE id = ?", *fields.values(), now, leg_id
    )


#: Legs the runner acts on at Twilio: to place, to stop ringing, to hang up.
WORK_STATES: tuple[LegState, ...] = (LegState.QUEUED, LegState.CANCELLING, LegState.HANGING_UP)


async def legs_to_work(tx: Tx, now: float, limit: int, skip_locked: str) -> list[Row]:
    """Legs waiting for a REST call (not leased by another node), oldest first."""
    return await tx.fetchall(
        f"SELECT * FROM call_legs WHERE state IN ({marks(WORK_STATES)}) "
        "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?" + skip_locked,
        *WORK_STATES,
        now,
        limit,
    )


async def lease_leg(tx: Tx, leg_id: int, until: float, now: float) -> int:
    return await tx.execute(
        "UPDATE call_legs SET lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? "
        "AND (lease_until IS NULL OR lease_until <= ?)",
        until,
        now,
        leg_id,
        now,
    )


async def release_leg(tx: Tx, leg_id: int, retry_at: float | None) -> None:
    await tx.execute("UPDATE call_legs SET lease_until = ? WHERE id = ?", retry_at, leg_id)


async def rung_out(tx: Tx, now: float, limit: int, skip_locked: str) -> list[Row]:
    """Ringing legs whose time is up (an offer nobody picked up)."""
    return await tx.fetchall(
        "SELECT * FROM call_legs WHERE state = ? AND due_at <= ? ORDER BY due_at LIMIT ?" + skip_locked,
        LegState.RINGING,
        now,
        limit,
    )


async def engaged_operators(tx: Tx) -> set[str]:
    """Operators with a leg ringing or connected on a call that has not ended: not free for another."""
    busy = (LegState.QUEUED, LegState.RINGING, LegState.ANSWERED, LegState.HANGING_UP)
    rows = await tx.fetchall(
        f"SELECT DISTINCT l.party FROM call_legs l JOIN calls c ON c.id = l.call_id "
        f"WHERE l.role = ? AND l.state IN ({marks(busy)}) AND c.state <> ?",
        LegRole.OPERATOR,
        *busy,
        CallState.ENDED,
    )
    return {str(r["party"]) for r in rows}


async def next_due(tx: Tx) -> float | None:
    """The earliest offer deadline, overflow or recording deletion."""
    row = await tx.fetchone(
        "SELECT MIN(t) AS due FROM ("
        "SELECT MIN(due_at) AS t FROM call_legs WHERE state = ? "
        "UNION ALL SELECT MIN(overflow_at) AS t FROM calls WHERE state = ? "
        "UNION ALL SELECT MIN(lease_until) AS t FROM call_legs WHERE state IN (?, ?, ?) "
        "UNION ALL SELECT MIN(delete_due_at) AS t FROM call_recordings WHERE deleted_at IS NULL) d",
        LegState.RINGING,
        CallState.WAITING,
        *WORK_STATES,
    )
    return None if row is None or row["due"] is None else float(row["due"])


# -- recordings ----------------------------------------------------------------------------------


async def add_recording(
    tx: Tx,
    *,
    sid: str,
    call_id: int,
    alert_id: int,
    duration_s: int,
    channels: int,
    status: str,
    media_url: str,
    now: float,
    delete_due_at: float,
) -> Row | None:
    """The recording, once: None when it was already recorded (Twilio may report it again)."""
    return await tx.fetchone(
        "INSERT INTO call_recordings (sid, call_id, alert_id, duration_s, channels, status, media_url, "
        "created_at, delete_due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (sid) DO NOTHING RETURNING *",
        sid,
        call_id,
        alert_id,
        duration_s,
        channels,
        status,
        media_url,
        now,
        delete_due_at,
    )


async def recording(tx: Tx, recording_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM call_recordings WHERE id = ?", recording_id)


async def recordings_of_calls(tx: Tx, call_ids: Sequence[int]) -> list[Row]:
    if not call_ids:
        return []
    return await tx.fetchall(
        f"SELECT * FROM call_recordings WHERE call_id IN ({marks(tuple(call_ids))}) ORDER BY id", *call_ids
    )


async def recordings_due(tx: Tx, now: float, limit: int, skip_locked: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM call_recordings WHERE deleted_at IS NULL AND delete_due_at <= ? "
        "AND (lease_until IS NULL OR lease_until <= ?) ORDER BY delete_due_at LIMIT ?" + skip_locked,
        now,
        now,
        limit,
    )


async def lease_recording(tx: Tx, recording_id: int, until: float) -> None:
    await tx.execute(
        "UPDATE call_recordings SET lease_until = ?, delete_attempts = delete_attempts + 1 WHERE id = ?",
        until,
        recording_id,
    )


async def recording_deleted(tx: Tx, recording_id: int, now: float) -> int:
    """The audio is gone at Twilio: forget where it was (the row stays, for the timeline and the audit)."""
    return await tx.execute(
        "UPDATE call_recordings SET deleted_at = ?, media_url = NULL, status = 'deleted', lease_until = NULL "
        "WHERE id = ? AND deleted_at IS NULL",
        now,
        recording_id,
    )


# -- presence ------------------------------------------------------------------------------------


async def presence(tx: Tx) -> list[Row]:
    return await tx.fetchall("SELECT * FROM operator_presence ORDER BY idle_since, name")


async def set_presence(tx: Tx, name: str, available: bool, now: float) -> None:
    """Available or not; becoming available starts the idle clock only if it was not already running."""
    await tx.execute(
        "INSERT INTO operator_presence (name, available, idle_since, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET available = excluded.available, updated_at = excluded.updated_at, "
        "idle_since = CASE WHEN operator_presence.available = 1 THEN operator_presence.idle_since "
        "ELSE excluded.idle_since END",
        name,
        int(available),
        now,
        now,
    )


async def idle_from(tx: Tx, names: Iterable[str], now: float) -> None:
    """These operators just finished a call: their idle time starts again."""
    for name in names:
        await tx.execute("UPDATE operator_presence SET idle_since = ? WHERE name = ?", now, name)


# -- service levels and the audit ----------------------------------------------------------------


async def calls_between(tx: Tx, lo: float, hi: float) -> list[Row]:
    """Calls started in ``[lo, hi)``, with their alert's priority and test flag."""
    return await tx.fetchall(
        "SELECT c.id, c.alert_id, c.direction, c.state, c.result, c.operator, c.started_at, c.answered_at, "
        "c.speech_at, c.ended_at, c.signal_at, c.emergency, c.caller, c.started_by, a.priority, a.test, "
        "a.raised_at, a.resolved_at, a.type, a.outcome "
        "FROM calls c JOIN alerts a ON a.id = c.alert_id WHERE c.started_at >= ? AND c.started_at < ? "
        "ORDER BY c.started_at, c.id",
        lo,
        hi,
    )


async def add_review(
    tx: Tx, *, month: str, handler: str, call_id: int, reason: str, drawn_by: str, now: float
) -> int:
    return await tx.execute(
        "INSERT INTO call_reviews (month, handler, call_id, reason, drawn_at, drawn_by) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (month, handler, call_id) DO NOTHING",
        month,
        handler,
        call_id,
        reason,
        now,
        drawn_by,
    )


async def reviews_of_month(tx: Tx, month: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT r.*, c.alert_id, c.direction, c.started_at, c.answered_at, c.ended_at, c.emergency, "
        "c.caller, c.operator FROM call_reviews r JOIN calls c ON c.id = r.call_id "
        "WHERE r.month = ? ORDER BY r.handler, r.id",
        month,
    )


async def review(tx: Tx, review_id: int) -> Row | None:
    return await tx.fetchone("SELECT * FROM call_reviews WHERE id = ?", review_id)


async def set_review(
    tx: Tx, review_id: int, *, verdict: str, findings: str, reviewer: str, now: float
) -> None:
    await tx.execute(
        "UPDATE call_reviews SET verdict = ?, findings = ?, reviewer = ?, reviewed_at = ? WHERE id = ?",
        verdict,
        findings,
        reviewer,
        now,
        review_id,
    )
