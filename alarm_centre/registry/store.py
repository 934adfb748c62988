"""Every SQL statement of the registry: residents, devices, the change log, commissioning visits,
remote configuration versions, per-device credentials and heartbeat deadlines.

A repository over the store's portable ``Tx`` (``?`` placeholders, ON CONFLICT, no SQLite-only
functions): each function runs inside the read or the transaction its caller opened, so
:class:`alarm_centre.registry.service.Registry` decides what happens and this module only says how it
is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alarm_centre.store.tx import Row, Tx
from devices.registry import Device, Resident

#: Who-did-what columns of ``registry_log``.
_LOG = "INSERT INTO registry_log (at, actor, source, action, subject, detail) VALUES (?, ?, ?, ?, ?, ?)"


# -- the change log --------------------------------------------------------------------------------
async def log_change(
    tx: Tx, at: float, actor: str, source: str, action: str, subject: str, detail: str
) -> None:
    await tx.execute(_LOG, at, actor, source, action, subject, detail)


async def history(tx: Tx, subject: str, limit: int) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM registry_log WHERE subject = ? ORDER BY id DESC LIMIT ?", subject, limit
    )


# -- residents -------------------------------------------------------------------------------------
async def resident(tx: Tx, resident_id: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM residents WHERE id = ?", resident_id)


async def resident_exists(tx: Tx, resident_id: str) -> bool:
    return await tx.fetchone("SELECT id FROM residents WHERE id = ?", resident_id) is not None


async def insert_resident(tx: Tx, r: Resident, data: str, now: float) -> None:
    await tx.execute(
        "INSERT INTO residents (id, name, data, dc09_account, phone, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        r.id,
        r.name,
        data,
        r.dc09_account,
        r.phone,
        now,
    )


async def update_resident(tx: Tx, r: Resident, data: str) -> None:
    await tx.execute(
        "UPDATE residents SET name = ?, data = ?, dc09_account = ?, phone = ? WHERE id = ?",
        r.name,
        data,
        r.dc09_account,
        r.phone,
        r.id,
    )


async def resident_with_dc09_account(tx: Tx, account: str, other_than: str) -> Row | None:
    """Another resident the upstream centre knows by ``account``, or None."""
    return await tx.fetchone(
        "SELECT id FROM residents WHERE dc09_account = ? AND id <> ?", account, other_than
    )


async def residents(tx: Tx) -> list[Row]:
    return await tx.fetchall("SELECT * FROM residents ORDER BY id")


async def resident_names(tx: Tx) -> dict[str, str]:
    rows = await tx.fetchall("SELECT id, name FROM residents")
    return {str(r["id"]): str(r["name"]) for r in rows}


async def active_device_counts(tx: Tx) -> dict[str, int]:
    """How many active devices each resident has."""
    rows = await tx.fetchall(
        "SELECT resident_id, COUNT(*) AS n FROM devices WHERE status = 'active' "
        "AND resident_id IS NOT NULL GROUP BY resident_id"
    )
    return {r["resident_id"]: int(r["n"]) for r in rows}


# -- devices ---------------------------------------------------------------------------------------
#: The device columns that must be unique among devices (a unit's addresses).
ADDRESS_COLUMNS = ("phone", "imei", "alexa_device_id", "dc09_account", "scaip_cid")


async def device(tx: Tx, device_id: str) -> Row | None:
    return await tx.fetchone("SELECT * FROM devices WHERE id = ?", device_id)


async def device_with_address(tx: Tx, column: str, value: str, other_than: str) -> Row | None:
    """Another device that already uses this address (``column`` is one of :data:`ADDRESS_COLUMNS`)."""
    if column not in ADDRESS_COLUMNS:
        raise ValueError(f"{column!r} is not an address column")
    return await tx.fetchone(f"SELECT id FROM devices WHERE {column} = ? AND id <> ?", value, other_than)


async def insert_device(tx: Tx, d: Device, due: float | None, data: str, now: float) -> None:
    await tx.execute(
        "INSERT INTO devices (id, kind, resident_id, channel, phone, imei, alexa_device_id, dc09_account, "
        "dc09_key, scaip_cid, scaip_answer, scaip_password, heartbeat_interval_s, heartbeat_grace_s, "
        "heartbeat_due_at, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        d.id,
        d.kind.value,
        d.resident_id,
        d.channel,
        d.phone,
        d.imei,
        d.alexa_device_id,
        d.dc09_account,
        d.dc09_key,
        d.scaip_cid,
        d.scaip_answer,
        d.scaip_password,
        d.heartbeat_interval_s,
        d.heartbeat_grace_s,
        due,
        data,
        now,
    )


async def update_device(tx: Tx, d: Device, due: float | None, data: str) -> None:
    await tx.execute(
        "UPDATE devices SET kind = ?, resident_id = ?, channel = ?, phone = ?, imei = ?, "
        "alexa_device_id = ?, dc09_account = ?, dc09_key = ?, "
        "scaip_cid = ?, scaip_answer = ?, scaip_password = ?, "
        "heartbeat_interval_s = ?, heartbeat_grace_s = ?, heartbeat_due_at = ?, data = ? WHERE id = ?",
        d.kind.value,
        d.resident_id,
        d.channel,
        d.phone,
        d.imei,
        d.alexa_device_id,
        d.dc09_account,
        d.dc09_key,
        d.scaip_cid,
        d.scaip_answer,
        d.scaip_password,
        d.heartbeat_interval_s,
        d.heartbeat_grace_s,
        due,
        data,
        d.id,
    )


async def devices(tx: Tx, *, status: str | None, resident_id: str | None) -> list[Row]:
    """Devices by id, of one status (``None``: all) and optionally one resident's."""
    sql = "SELECT * FROM devices WHERE 1 = 1"
    args: list[Any] = []
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    if resident_id is not None:
        sql += " AND resident_id = ?"
        args.append(resident_id)
    return await tx.fetchall(sql + " ORDER BY id", *args)


async def link(tx: Tx, device_id: str, resident_id: str | None) -> None:
    await tx.execute("UPDATE devices SET resident_id = ? WHERE id = ?", resident_id, device_id)


async def open_alerts_of(tx: Tx, device_id: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT id, type, state FROM alerts WHERE device_id = ? AND state IN ('raised', 'acknowledged') "
        "ORDER BY id",
        device_id,
    )


async def retire(tx: Tx, device_id: str, data: str, now: float) -> None:
    """Mark a device retired: no deadline, no test mode, its addresses freed (kept in ``data``)."""
    await tx.execute(
        "UPDATE devices SET status = 'retired', retired_at = ?, heartbeat_due_at = NULL, "
        "test_mode_until = NULL, phone = NULL, imei = NULL, alexa_device_id = NULL, dc09_account = NULL, "
        "dc09_key = NULL, scaip_cid = NULL, scaip_password = NULL, data = ? "
        "WHERE id = ?",
        now,
        data,
        device_id,
    )


async def dc09_unit(tx: Tx, account: str) -> Row | None:
    """The active device reporting as DC-09 ``account`` (upper-case hex), if any."""
    return await tx.fetchone(
        "SELECT id, dc09_key FROM devices WHERE dc09_account = ? AND status = 'active'", account
    )


async def dc09_units(tx: Tx) -> list[Row]:
    """Every active device with a DC-09 account: its id, account and key."""
    return await tx.fetchall(
        "SELECT id, dc09_account, dc09_key FROM devices WHERE dc09_account IS NOT NULL AND status = 'active'"
    )


# -- credentials -----------------------------------------------------------------------------------
async def has_credential(tx: Tx, device_id: str) -> bool:
    row = await tx.fetchone(
        "SELECT issued_at FROM device_credentials WHERE device_id = ? AND revoked_at IS NULL", device_id
    )
    return row is not None


async def save_credential(tx: Tx, device_id: str, password_hash: str, actor: str, now: float) -> None:
    await tx.execute(
        "INSERT INTO device_credentials (device_id, password_hash, issued_at, issued_by) "
        "VALUES (?, ?, ?, ?) "
        "ON CONFLICT (device_id) DO UPDATE SET password_hash = excluded.password_hash, "
        "issued_at = excluded.issued_at, issued_by = excluded.issued_by, revoked_at = NULL",
        device_id,
        password_hash,
        now,
        actor,
    )


async def revoke_credential(tx: Tx, device_id: str, now: float) -> None:
    await tx.execute(
        "UPDATE device_credentials SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        now,
        device_id,
    )


async def active_credentials(tx: Tx) -> list[Row]:
    return await tx.fetchall(
        "SELECT c.device_id, c.password_hash FROM device_credentials c "
        "JOIN devices d ON d.id = c.device_id "
        "WHERE c.revoked_at IS NULL AND d.status = 'active' ORDER BY c.device_id"
    )


# -- commissioning ---------------------------------------------------------------------------------
async def visit_in_progress(tx: Tx, device_id: str) -> Row | None:
    return await tx.fetchone(
        "SELECT * FROM commissioning_visits WHERE device_id = ? AND finished_at IS NULL", device_id
    )


async def visits_in_progress(tx: Tx, device_id: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM commissioning_visits WHERE device_id = ? AND finished_at IS NULL", device_id
    )


async def insert_visit(
    tx: Tx, device_id: str, installer: str, started_at: float, ends_at: float, checklist: str
) -> int:
    row = await tx.fetchone(
        "INSERT INTO commissioning_visits (device_id, installer, started_at, ends_at, checklist) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        device_id,
        installer,
        started_at,
        ends_at,
        checklist,
    )
    assert row is not None
    return int(row["id"])


async def set_test_mode(tx: Tx, device_id: str, until: float) -> None:
    await tx.execute("UPDATE devices SET test_mode_until = ? WHERE id = ?", until, device_id)


async def end_test_mode(tx: Tx, device_id: str, visit_ends_at: float) -> None:
    """End test mode, unless a later visit has set a later deadline since."""
    await tx.execute(
        "UPDATE devices SET test_mode_until = NULL WHERE id = ? AND test_mode_until <= ?",
        device_id,
        visit_ends_at,
    )


async def visit(tx: Tx, device_id: str, visit_id: int | None) -> Row | None:
    """One visit of a device (its latest when ``visit_id`` is None)."""
    if visit_id is None:
        return await tx.fetchone(
            "SELECT * FROM commissioning_visits WHERE device_id = ? ORDER BY id DESC LIMIT 1", device_id
        )
    return await tx.fetchone(
        "SELECT * FROM commissioning_visits WHERE id = ? AND device_id = ?", visit_id, device_id
    )


async def visit_checks(tx: Tx, visit_id: int) -> list[Row]:
    return await tx.fetchall("SELECT * FROM commissioning_checks WHERE visit_id = ? ORDER BY at", visit_id)


async def any_visit_timed_out(tx: Tx, now: float) -> bool:
    row = await tx.fetchone(
        "SELECT id FROM commissioning_visits WHERE finished_at IS NULL AND ends_at <= ? LIMIT 1", now
    )
    return row is not None


async def visits_timed_out(tx: Tx, now: float, limit: int) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM commissioning_visits WHERE finished_at IS NULL AND ends_at <= ? "
        "ORDER BY ends_at LIMIT ?",
        now,
        limit,
    )


async def close_visit(tx: Tx, visit_id: int, now: float, reason: str, note: str | None, summary: str) -> None:
    await tx.execute(
        "UPDATE commissioning_visits SET finished_at = ?, finish_reason = ?, note = ?, summary = ? "
        "WHERE id = ? AND finished_at IS NULL",
        now,
        reason,
        note,
        summary,
        visit_id,
    )


async def raised_test_alerts(tx: Tx, device_id: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT * FROM alerts WHERE device_id = ? AND test = 1 AND state = 'raised'", device_id
    )


async def save_checklist(tx: Tx, visit_id: int, checklist: str) -> None:
    await tx.execute("UPDATE commissioning_visits SET checklist = ? WHERE id = ?", checklist, visit_id)


async def record_check(
    tx: Tx,
    visit_id: int,
    event_id: str,
    event_type: str,
    peripheral_id: Any,
    alert_id: int | None,
    at: float,
) -> None:
    """Store one test press of a visit; a redelivered event is stored once."""
    await tx.execute(
        "INSERT INTO commissioning_checks (visit_id, event_id, type, peripheral_id, alert_id, at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (visit_id, event_id) DO NOTHING",
        visit_id,
        event_id,
        event_type,
        peripheral_id,
        alert_id,
        at,
    )


# -- remote configuration --------------------------------------------------------------------------
async def pending_configs(tx: Tx, device_id: str) -> list[Row]:
    return await tx.fetchall(
        "SELECT version, cmd_id FROM device_configs WHERE device_id = ? "
        "AND applied_at IS NULL AND superseded_at IS NULL",
        device_id,
    )


async def supersede_config(tx: Tx, device_id: str, version: int, cmd_id: str, why: str, now: float) -> None:
    """Mark a pending version superseded and take its command out of the outbox."""
    await tx.execute(
        "UPDATE device_configs SET superseded_at = ? WHERE device_id = ? AND version = ?",
        now,
        device_id,
        version,
    )
    await tx.execute(
        "UPDATE outbox SET done_at = ?, last_error = ? WHERE cmd_id = ? AND done_at IS NULL",
        now,
        why,
        cmd_id,
    )


async def insert_config(
    tx: Tx, device_id: str, version: int, settings: str, actor: str, now: float, cmd_id: str
) -> None:
    await tx.execute(
        "INSERT INTO device_configs (device_id, version, settings, requested_by, requested_at, "
        "cmd_id) VALUES (?, ?, ?, ?, ?, ?)",
        device_id,
        version,
        settings,
        actor,
        now,
        cmd_id,
    )
    await tx.execute("UPDATE devices SET config_version = ? WHERE id = ?", version, device_id)


async def config_history(tx: Tx, device_id: str, limit: int) -> list[Row]:
    """A device's latest configuration versions with their outbox delivery, newest first."""
    return await tx.fetchall(
        "SELECT c.*, o.attempts, o.last_error, o.done_at AS outbox_done_at FROM device_configs c "
        "LEFT JOIN outbox o ON o.cmd_id = c.cmd_id WHERE c.device_id = ? "
        "ORDER BY c.version DESC LIMIT ?",
        device_id,
        limit,
    )


async def config_by_command(tx: Tx, device_id: str, cmd_id: str) -> Row | None:
    return await tx.fetchone(
        "SELECT * FROM device_configs WHERE cmd_id = ? AND device_id = ?", cmd_id, device_id
    )


async def apply_config(
    tx: Tx, device_id: str, version: int, interval: Any, due: float | None, now: float
) -> None:
    """Record a version as applied, on the version and on the device (never going back to an older one)."""
    await tx.execute(
        "UPDATE device_configs SET applied_at = ? WHERE device_id = ? AND version = ?",
        now,
        device_id,
        version,
    )
    await tx.execute(
        "UPDATE devices SET config_applied_version = ?, heartbeat_interval_s = ?, heartbeat_due_at = ? "
        "WHERE id = ? AND config_applied_version < ?",
        version,
        interval,
        due,
        device_id,
        version,
    )


# -- heartbeat supervision -------------------------------------------------------------------------
async def due_heartbeats(tx: Tx, now: float, limit: int) -> list[Row]:
    """Units whose heartbeat deadline has passed, oldest first (an index range scan)."""
    return await tx.fetchall(
        "SELECT id, heartbeat_due_at, last_seen_at FROM devices WHERE heartbeat_due_at <= ? "
        "ORDER BY heartbeat_due_at LIMIT ?",
        now,
        limit,
    )


async def set_heartbeat_due(tx: Tx, device_id: str, due: float | None) -> None:
    await tx.execute("UPDATE devices SET heartbeat_due_at = ? WHERE id = ?", due, device_id)


async def set_heartbeats_due(tx: Tx, due: Mapping[str, float | None]) -> None:
    """:func:`set_heartbeat_due` of several units in one statement (PostgreSQL arrays: the set-based
    ingest)."""
    if not due:
        return
    await tx.execute(
        "UPDATE devices AS d SET heartbeat_due_at = u.due FROM unnest(?::text[], ?::float8[]) AS u(id, due) "
        "WHERE d.id = u.id",
        list(due),
        list(due.values()),
    )


async def unsee(tx: Tx, device_id: str, last_seen_at: Any, online: Any) -> None:
    """Put back what the core's "seen" marking changed, and clear the deadline (a silent unit)."""
    await tx.execute(
        "UPDATE devices SET last_seen_at = ?, online = ?, heartbeat_due_at = NULL WHERE id = ?",
        last_seen_at,
        online,
        device_id,
    )


async def scaip_unit(tx: Tx, cid: str) -> Row | None:
    """The active device reporting as SCAIP caller id ``cid``, if any: its id, answer mode, password and
    the end of its test mode."""
    return await tx.fetchone(
        "SELECT id, scaip_answer, scaip_password, test_mode_until FROM devices "
        "WHERE scaip_cid = ? AND status = 'active'",
        cid,
    )
