"""Every SQL statement of the voice feature: Echo links, check-ins and check-in schedules.

A repository over the store's portable ``Tx`` (``?`` placeholders, ON CONFLICT, no SQLite-only
functions): each function runs inside the read or the transaction its caller opened, so
:class:`skills.voice.VoiceService` decides what happens and this module only says how it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alarm_centre.registry.store import device as device
from alarm_centre.registry.store import resident_exists as resident_exists
from alarm_centre.store.tx import Row, Tx

#: The device kind of an Echo (its Alexa id is in ``devices.alexa_device_id``).
ALEXA_KIND = "alexa"


# -- Echo links ------------------------------------------------------------------------------------
async def echo_by_alexa_id(tx: Tx, alexa_device_id: str) -> Row | None:
    """The active Echo with this Alexa device id."""
    return await tx.fetchone(
        "SELECT id, resident_id, alexa_device_id FROM devices "
        "WHERE alexa_device_id = ? AND kind = ? AND status = 'active'",
        alexa_device_id,
        ALEXA_KIND,
    )


async def resident_has_unit(tx: Tx, resident_id: str, unit_kinds: Iterable[str]) -> bool:
    """Whether the resident has an active unit of one of ``unit_kinds`` (to call back through)."""
    kinds = tuple(unit_kinds)
    unit = await tx.fetchone(
        "SELECT id FROM devices WHERE resident_id = ? AND status = 'active' "
        f"AND kind IN ({', '.join('?' for _ in kinds)}) LIMIT 1",
        resident_id,
        *kinds,
    )
    return unit is not None


async def device_with_alexa_id(tx: Tx, alexa_device_id: str, other_than: str) -> Row | None:
    """Another device that already carries this Alexa device id."""
    return await tx.fetchone(
        "SELECT id FROM devices WHERE alexa_device_id = ? AND id <> ?", alexa_device_id, other_than
    )


async def save_echo(
    tx: Tx, device_id: str, resident_id: str, alexa_device_id: str, data: str, now: float
) -> None:
    """Create the Echo's device row, or relink it (active again, new resident and Alexa id)."""
    await tx.execute(
        "INSERT INTO devices "
        "(id, kind, resident_id, channel, alexa_device_id, status, data, created_at) "
        "VALUES (?, ?, ?, 'mqtt', ?, 'active', ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "resident_id = excluded.resident_id, alexa_device_id = excluded.alexa_device_id, "
        "status = 'active', data = excluded.data",
        device_id,
        ALEXA_KIND,
        resident_id,
        alexa_device_id,
        data,
        now,
    )


async def clear_echo(tx: Tx, device_id: str) -> int:
    """Clear an Echo's Alexa id and resident (the row stays, for the history); rows changed."""
    return await tx.execute(
        "UPDATE devices SET alexa_device_id = NULL, resident_id = NULL "
        "WHERE id = ? AND kind = ? AND alexa_device_id IS NOT NULL",
        device_id,
        ALEXA_KIND,
    )


async def echo_links(tx: Tx) -> list[Row]:
    return await tx.fetchall(
        "SELECT id, alexa_device_id, resident_id, data, last_seen_at FROM devices "
        "WHERE kind = ? AND alexa_device_id IS NOT NULL "
        "ORDER BY id",
        ALEXA_KIND,
    )


async def resident_first_device(tx: Tx, resident_id: str) -> Row | None:
    """The device a missed check-in is raised on: the resident's Echo first, else their oldest device."""
    return await tx.fetchone(
        "SELECT id FROM devices WHERE resident_id = ? AND status = 'active' "
        "ORDER BY CASE WHEN kind = ? THEN 0 ELSE 1 END, created_at LIMIT 1",
        resident_id,
        ALEXA_KIND,
    )


# -- check-ins -------------------------------------------------------------------------------------
async def record_check_in(
    tx: Tx,
    resident_id: str | None,
    device_id: str | None,
    alexa_device_id: str,
    request_id: str,
    at: float,
) -> None:
    """Store one check-in; a replayed request (same id) is stored once."""
    await tx.execute(
        "INSERT INTO voice_checkins (resident_id, device_id, alexa_device_id, request_id, at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
        resident_id,
        device_id,
        alexa_device_id,
        request_id,
        at,
    )


async def checked_in_between(tx: Tx, resident_id: str, start: float, end: float) -> bool:
    row = await tx.fetchone(
        "SELECT id FROM voice_checkins WHERE resident_id = ? AND at >= ? AND at <= ? LIMIT 1",
        resident_id,
        start,
        end,
    )
    return row is not None


# -- check-in schedules ----------------------------------------------------------------------------
async def schedule(tx: Tx, resident_id: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM checkin_schedules WHERE resident_id = ?", resident_id)


async def set_next_due(tx: Tx, resident_id: str, next_due_at: float) -> None:
    await tx.execute(
        "UPDATE checkin_schedules SET next_due_at = ? WHERE resident_id = ?", next_due_at, resident_id
    )


async def save_schedule(
    tx: Tx, resident_id: str, deadline: str, timezone: str, next_due_at: float, now: float
) -> None:
    await tx.execute(
        "INSERT INTO checkin_schedules (resident_id, deadline, timezone, next_due_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (resident_id) DO UPDATE SET "
        "deadline = excluded.deadline, timezone = excluded.timezone, "
        "next_due_at = excluded.next_due_at, updated_at = excluded.updated_at",
        resident_id,
        deadline,
        timezone,
        next_due_at,
        now,
    )


async def delete_schedule(tx: Tx, resident_id: str) -> int:
    return await tx.execute("DELETE FROM checkin_schedules WHERE resident_id = ?", resident_id)


async def schedules(tx: Tx) -> list[dict[str, Any]]:
    rows = await tx.fetchall(
        "SELECT resident_id, deadline, timezone, next_due_at, last_missed_at "
        "FROM checkin_schedules ORDER BY resident_id"
    )
    return [dict(r) for r in rows]


async def due_schedules(tx: Tx, at: float, limit: int) -> list[Row]:
    """Schedules whose deadline has passed, oldest first (the ``checkin_schedules_due`` index)."""
    return await tx.fetchall(
        "SELECT * FROM checkin_schedules WHERE next_due_at <= ? ORDER BY next_due_at LIMIT ?", at, limit
    )


async def advance_schedule(tx: Tx, resident_id: str, old: float, new: float, *, missed: bool) -> None:
    """Move a schedule from deadline ``old`` to ``new`` (only if no other pass moved it already)."""
    await tx.execute(
        "UPDATE checkin_schedules SET next_due_at = ?, last_missed_at = CASE WHEN ? = 1 THEN ? "
        "ELSE last_missed_at END WHERE resident_id = ? AND next_due_at = ?",
        new,
        int(missed),
        old,
        resident_id,
        old,
    )
