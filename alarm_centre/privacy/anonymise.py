"""Stripping personal data out of records while keeping what the service must keep: one home for how an
alert is anonymised (used by retention and by erasure) and for scrubbing keys out of stored JSON.

An anonymised alert keeps what service-level statistics are made of -- its type, priority, when it was
raised, acknowledged (and by which member of staff) and resolved, its outcome, whether it was a test --
and loses everything that could lead back to a person: the resident and the unit, the note, the
event data, its timeline, its notifications and call-outs, the device events it joined.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from alarm_centre.alerts.lifecycle import AlertState
from alarm_centre.escalation.states import marks
from alarm_centre.store.tx import Tx, dumps

#: What an anonymised alert shows as its device.
ANONYMISED_DEVICE = "anonymised"
#: Tables whose rows belong to one alert (``alert_id``) and go when it is anonymised.
ALERT_CHILDREN = (
    "alert_log",
    "notifications",
    "escalation_steps",
    "escalation_callouts",
    "events",
    "dc09_forwards",
)
#: Keys that carry an SMS's text or sender, in events' data, alerts' event data and timeline details.
SMS_KEYS = frozenset({"text", "sender"})
#: Keys that carry an Echo's or an Amazon account's id.
ECHO_KEYS = frozenset({"alexa_device_id", "alexa_user_id"})
#: Marks a JSON document from which keys were removed.
REDACTED = "redacted"


RESOLVED = AlertState.RESOLVED.value
#: A subquery of the ids of open alerts (bind :data:`RESOLVED` to its ``?``): nothing of theirs is touched.
OPEN_ALERT_IDS = "SELECT id FROM alerts WHERE state <> ?"


async def anonymise_alerts(tx: Tx, alert_ids: Sequence[int], now: float) -> int:
    """Anonymise these (resolved) alerts and delete what belongs to them; returns how many alerts.

    Callers pick resolved alerts only; the ``state`` condition below is the last guard.
    """
    if not alert_ids:
        return 0
    ids = tuple(alert_ids)
    resolved = await tx.fetchall(
        f"SELECT id FROM alerts WHERE id IN ({marks(ids)}) AND state = ?", *ids, RESOLVED
    )
    ids = tuple(int(r["id"]) for r in resolved)
    if not ids:
        return 0
    for table in ALERT_CHILDREN:
        await tx.execute(f"DELETE FROM {table} WHERE alert_id IN ({marks(ids)})", *ids)
    return await tx.execute(
        "UPDATE alerts SET resident_id = NULL, device_id = ?, note = NULL, data = '{}', open_key = NULL, "
        f"anonymised_at = ? WHERE id IN ({marks(ids)})",
        ANONYMISED_DEVICE,
        now,
        *ids,
    )


def scrub(document: Any, keys: Collection[str]) -> tuple[Any, bool]:
    """``document`` (decoded JSON) without ``keys`` at any depth, and whether anything was removed."""
    if isinstance(document, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, value in document.items():
            if key in keys:
                changed = True
                continue
            value, inner = scrub(value, keys)
            changed = changed or inner
            out[key] = value
        return out, changed
    if isinstance(document, list):
        items = [scrub(v, keys) for v in document]
        return [v for v, _ in items], any(c for _, c in items)
    return document, False


def scrubbed_text(text: str | None, keys: Collection[str]) -> str | None:
    """A JSON column's text without ``keys`` (marked ``"redacted": true``), or None when nothing in it
    needed removing (or it is not JSON)."""
    if not text:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    cleaned, changed = scrub(document, keys)
    if not changed:
        return None
    if isinstance(cleaned, dict):
        cleaned[REDACTED] = True
    return dumps(cleaned)


def like_any(column: str, keys: Collection[str]) -> str:
    """An SQL condition that picks rows whose JSON ``column`` may hold one of ``keys`` (a cheap filter
    before :func:`scrubbed_text` decides)."""
    return "(" + " OR ".join(f"{column} LIKE '%\"{key}\"%'" for key in sorted(keys)) + ")"
