"""The kinds of record the retention job deletes or anonymises, each with its default period and its SQL.

Each kind's :attr:`~alarm_centre.privacy.retention.RetentionKind.apply` handles at most ``limit``
records older than the cutoff in one transaction and says whether more may be waiting. None of them
touches anything of an open alert (raised or acknowledged): a call for help in progress keeps all of
its data, however old. A feature with records of its own (call recordings, say) declares its kind the
same way and adds it to ``bridge/feature_privacy.py``'s ``RETENTION_KINDS``.
"""

from __future__ import annotations

from alarm_centre.privacy.anonymise import (
    ECHO_KEYS,
    OPEN_ALERT_IDS,
    RESOLVED,
    SMS_KEYS,
    anonymise_alerts,
    like_any,
    scrubbed_text,
)
from alarm_centre.privacy.retention import Batch, RetentionKind
from alarm_centre.store.tx import Tx
from devices.registry import DeviceKind

#: What an SMS event's ``source`` says (the GSM modem's transport).
SMS_SOURCE = "sms"
#: An event or a child row that belongs to no open alert.
NOT_OPEN = f"(alert_id IS NULL OR alert_id NOT IN ({OPEN_ALERT_IDS}))"


async def resolved_alerts(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """Alerts resolved before the cutoff are anonymised: their timelines, notifications, call-outs and
    events deleted; what service-level statistics need is kept (:mod:`alarm_centre.privacy.anonymise`)."""
    rows = await tx.fetchall(
        "SELECT id FROM alerts WHERE state = ? AND resolved_at < ? AND anonymised_at IS NULL "
        "ORDER BY resolved_at, id LIMIT ?",
        RESOLVED,
        cutoff,
        limit,
    )
    done = await anonymise_alerts(tx, [int(r["id"]) for r in rows], now)
    return Batch(done, more=len(rows) >= limit)


async def raw_events(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """Device events (heartbeats, alarms, SMS, voice requests) received before the cutoff are deleted,
    except those of open alerts."""
    done = await tx.execute(
        "DELETE FROM events WHERE (device_id, event_id) IN (SELECT device_id, event_id FROM events "
        f"WHERE received_at < ? AND {NOT_OPEN} ORDER BY received_at LIMIT ?)",
        cutoff,
        RESOLVED,
        limit,
    )
    return Batch(done, more=done >= limit)


async def _scrub_rows(tx: Tx, select: str, update: str, args: tuple[object, ...], limit: int) -> Batch:
    """Rewrite the JSON (column ``doc``, key ``k1``/``k2``) of the rows ``select`` picks without the
    SMS keys; ``update`` takes the new text and the key."""
    rows = await tx.fetchall(select, *args, limit)
    done = 0
    for row in rows:
        text = scrubbed_text(row["doc"], SMS_KEYS)
        if text is not None:
            keys = [row[k] for k in ("k1", "k2") if k in row]
            done += await tx.execute(update, text, *keys)
    # Rows the cheap filter picked but that held nothing to remove are not counted: stop on a batch
    # that changed nothing, so they cannot keep the job busy.
    return Batch(done, more=len(rows) >= limit and done > 0)


async def message_bodies(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """The text of SMS and notifications older than the cutoff is removed: notification bodies (what was
    texted or said to supervisors and responders), and an SMS's text and sender number in its event,
    in its alert's data and on its timeline. The records themselves stay (with ``"redacted": true``)."""
    done = await tx.execute(
        "UPDATE notifications SET body = '' WHERE id IN (SELECT id FROM notifications "
        f"WHERE created_at < ? AND body <> '' AND {NOT_OPEN} ORDER BY id LIMIT ?)",
        cutoff,
        RESOLVED,
        limit,
    )
    more = done >= limit
    events = await _scrub_rows(
        tx,
        "SELECT device_id AS k1, event_id AS k2, data AS doc FROM events WHERE source = ? "
        f"AND received_at < ? AND {NOT_OPEN} AND {like_any('data', SMS_KEYS)} ORDER BY received_at LIMIT ?",
        "UPDATE events SET data = ? WHERE device_id = ? AND event_id = ?",
        (SMS_SOURCE, cutoff, RESOLVED),
        limit,
    )
    alerts = await _scrub_rows(
        tx,
        "SELECT id AS k1, data AS doc FROM alerts WHERE state = ? AND resolved_at < ? "
        f"AND {like_any('data', SMS_KEYS)} ORDER BY id LIMIT ?",
        "UPDATE alerts SET data = ? WHERE id = ?",
        (RESOLVED, cutoff),
        limit,
    )
    timeline = await _scrub_rows(
        tx,
        "SELECT id AS k1, detail AS doc FROM alert_log WHERE at < ? AND alert_id NOT IN "
        f"({OPEN_ALERT_IDS}) AND {like_any('detail', SMS_KEYS)} ORDER BY id LIMIT ?",
        "UPDATE alert_log SET detail = ? WHERE id = ?",
        (cutoff, RESOLVED),
        limit,
    )
    return Batch(
        done + events.done + alerts.done + timeline.done,
        more=more or events.more or alerts.more or timeline.more,
    )


async def voice_check_ins(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """Wellbeing check-ins said to Alexa before the cutoff are deleted (no audio is ever stored)."""
    done = await tx.execute(
        "DELETE FROM voice_checkins WHERE id IN (SELECT id FROM voice_checkins WHERE at < ? "
        "ORDER BY id LIMIT ?)",
        cutoff,
        limit,
    )
    return Batch(done, more=done >= limit)


async def read_audit(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """Rows of the audit of reads older than the cutoff are deleted."""
    done = await tx.execute(
        "DELETE FROM personal_data_reads WHERE id IN (SELECT id FROM personal_data_reads WHERE at < ? "
        "ORDER BY id LIMIT ?)",
        cutoff,
        limit,
    )
    return Batch(done, more=done >= limit)


async def echo_ids(tx: Tx, cutoff: float, now: float, limit: int) -> Batch:
    """Amazon's ids of Echos and accounts are removed where they are no longer needed: on check-ins
    older than the cutoff, on resolved alerts from unlinked Echos, and on Echo records unlinked or
    retired before it. A linked, active Echo keeps its id (the bridge needs it to know who is calling)."""
    done = await tx.execute(
        "UPDATE voice_checkins SET alexa_device_id = NULL WHERE id IN (SELECT id FROM voice_checkins "
        "WHERE at < ? AND alexa_device_id IS NOT NULL ORDER BY id LIMIT ?)",
        cutoff,
        limit,
    )
    more = done >= limit
    rows = await tx.fetchall(
        "SELECT id, data FROM alerts WHERE state = ? AND resolved_at < ? "
        f"AND {like_any('data', ECHO_KEYS)} ORDER BY id LIMIT ?",
        RESOLVED,
        cutoff,
        limit,
    )
    changed = 0
    for row in rows:
        text = scrubbed_text(row["data"], ECHO_KEYS)
        if text is not None:
            changed += await tx.execute("UPDATE alerts SET data = ? WHERE id = ?", text, row["id"])
    more = more or (len(rows) >= limit and changed > 0)
    echos = await tx.fetchall(
        "SELECT id, data, alexa_device_id FROM devices WHERE kind = ? "
        "AND ((retired_at IS NOT NULL AND retired_at < ?) OR (alexa_device_id IS NULL AND created_at < ?)) "
        f"AND (alexa_device_id IS NOT NULL OR {like_any('data', ECHO_KEYS)}) ORDER BY id LIMIT ?",
        DeviceKind.ALEXA.value,
        cutoff,
        cutoff,
        limit,
    )
    for row in echos:
        text = scrubbed_text(row["data"], ECHO_KEYS) or row["data"]
        changed += await tx.execute(
            "UPDATE devices SET alexa_device_id = NULL, data = ? WHERE id = ?", text, row["id"]
        )
    more = more or len(echos) >= limit
    return Batch(done + changed, more=more)


#: The kinds built into the bridge, with their default periods in days (``retention.days`` overrides
#: each; ``null`` keeps that kind for ever). docs/data-protection.md explains each choice.
BUILT_IN_KINDS: tuple[RetentionKind, ...] = (
    RetentionKind(
        "resolved_alerts",
        "resolved alerts and their timelines, notifications and call-outs (anonymised; statistics kept)",
        2190,
        resolved_alerts,
    ),
    RetentionKind(
        "raw_events", "device events: heartbeats, alarms, SMS, voice requests (deleted)", 90, raw_events
    ),
    RetentionKind(
        "message_bodies",
        "the text of SMS and of notifications to supervisors and responders, and SMS senders (removed)",
        90,
        message_bodies,
    ),
    RetentionKind("voice_check_ins", "wellbeing check-ins said to Alexa (deleted)", 365, voice_check_ins),
    RetentionKind("read_audit", "the audit of reads of residents' data (deleted)", 730, read_audit),
    RetentionKind(
        "echo_ids",
        "Amazon's Echo and account ids on check-ins, resolved alerts and unlinked Echos (removed)",
        90,
        echo_ids,
    ),
)
