"""A batch of device events started set-based on PostgreSQL: a constant number of round trips per batch.

Each statement of a write transaction waits for PostgreSQL's answer. Storing events one by one costs
several statements per event (claim the unit, record the event, read the unit, mark it seen, link the
alert). Here the batch's start -- the units claimed, the events recorded, the units read and marked
seen, the open alerts locked -- is one call of a server-side function (migration 95), and the links,
the new alerts, their timeline entries and the call-backs of a batch of raises are one statement over
arrays each (:mod:`alarm_centre.store.ingest_sets`).
"""

from __future__ import annotations

from collections.abc import Sequence

from alarm_centre.alerts.model import AlertChange
from alarm_centre.store.ingest_sets import BatchStart, EventKey, Repeat
from alarm_centre.store.raising import NewAlert
from alarm_centre.store.tx import LogEntry, PostCommit, Row, Tx
from alarm_centre.store.tx import dumps as _j
from devices.events import DeviceEvent
from devices.registry import UNIT_KINDS


async def start(
    tx: Tx,
    events: Sequence[DeviceEvent],
    *,
    wait: bool,
    lock_space: int,
    busy_error: str,
    open_keys: Sequence[str] = (),
) -> BatchStart:
    """Claim the batch's units, record its events (learning which are duplicates), read its units, mark
    the registered ones seen, and lock the open alerts of ``open_keys``: one statement, a server-side
    function (migration 95, ``telecare_start_batch_v1``)."""
    first: dict[EventKey, int] = {}
    for n, ev in enumerate(events):
        first.setdefault((ev.device_id, ev.event_id), n)
    recorded = [events[n] for n in first.values()]
    row = await tx.fetchone(
        "SELECT * FROM telecare_start_batch_v1(?, ?, ?::text[], ?::text[], ?::text[], ?::text[], "
        "?::float8[], ?::float8[], ?::text[], ?::int[], ?::text[], ?::text[])",
        lock_space,
        wait,
        sorted({ev.device_id for ev in events}),
        [ev.device_id for ev in recorded],
        [ev.event_id for ev in recorded],
        [ev.type.value for ev in recorded],
        [ev.ts.timestamp() if ev.ts else None for ev in recorded],
        [ev.received_at.timestamp() for ev in recorded],
        [ev.source for ev in recorded],
        [int(ev.test) for ev in recorded],
        [_j(ev.data) for ev in recorded],
        list(open_keys),
    )
    assert row is not None, "the function answers one row"
    busy_units = set(row["busy"])
    busy = frozenset(n for n, ev in enumerate(events) if ev.device_id in busy_units)
    inserted = set(zip(row["new_dev"], row["new_id"], strict=True))
    new = frozenset(n for key, n in first.items() if key in inserted)
    earlier = {
        (d, e): a for d, e, a in zip(row["earlier_dev"], row["earlier_id"], row["earlier_alert"], strict=True)
    }
    devices: dict[str, Row] = {r["id"]: dict(r.items()) for r in row["units_read"]}
    opened = [dict(r.items()) for r in row["open_alerts"]]
    return BatchStart(
        busy=busy,
        busy_error=busy_error,
        new=new,
        devices=devices,
        earlier=earlier,
        open_alerts={r["open_key"]: r for r in opened if r["open_key"] is not None},
        locked_keys=frozenset(open_keys),
    )


async def link_events(tx: Tx, links: Sequence[tuple[str, str, int]]) -> None:
    """Note on each event the alert it joined, in one statement."""
    await tx.execute(
        "UPDATE events AS e SET alert_id = l.alert_id "
        "FROM unnest(?::text[], ?::text[], ?::bigint[]) AS l(device_id, event_id, alert_id) "
        "WHERE e.device_id = l.device_id AND e.event_id = l.event_id",
        [d for d, _, _ in links],
        [e for _, e, _ in links],
        [a for _, _, a in links],
    )


async def lock_open_alerts(tx: Tx, keys: Sequence[str]) -> dict[str, Row]:
    """The open alerts of ``keys``, row-locked until the commit (a repeat's UPDATE would lock it too)."""
    if not keys:
        return {}
    rows = await tx.fetchall(
        "SELECT * FROM alerts WHERE open_key = ANY(?::text[]) ORDER BY id FOR UPDATE", list(keys)
    )
    return {r["open_key"]: r for r in rows if r["open_key"] is not None}


async def add_repeats(tx: Tx, repeats: Sequence[Repeat]) -> None:
    """Count each repeat on its alert and log it on the alert's timeline: one statement (the count's
    UPDATE in a ``WITH``: it writes another table than the log's INSERT)."""
    counts: dict[int, tuple[int, float]] = {}
    for r in repeats:
        n, _ = counts.get(r.alert_id, (0, r.at))
        counts[r.alert_id] = (n + 1, r.at)
    await tx.execute(
        "WITH counted AS (UPDATE alerts AS a SET repeat_count = a.repeat_count + j.n, updated_at = j.at "
        "FROM unnest(?::bigint[], ?::int[], ?::float8[]) AS j(id, n, at) WHERE a.id = j.id) "
        "INSERT INTO alert_log (alert_id, at, action, actor, source, detail) "
        "SELECT j.alert_id, j.at, 'repeat', j.actor, j.source, j.detail "
        "FROM unnest(?::bigint[], ?::float8[], ?::text[], ?::text[], ?::text[]) "
        "WITH ORDINALITY AS j(alert_id, at, actor, source, detail, n) ORDER BY j.n",
        list(counts),
        [n for n, _ in counts.values()],
        [at for _, at in counts.values()],
        [r.alert_id for r in repeats],
        [r.at for r in repeats],
        [r.actor for r in repeats],
        [r.source for r in repeats],
        [r.detail for r in repeats],
    )


async def insert_alerts(tx: Tx, alerts: Sequence[NewAlert], now: float) -> dict[str, Row]:
    """Insert new alerts in one statement, in order (their ids follow it); one whose key is open already
    (raised a moment ago by another node) is left out. Returns the rows inserted, by key."""
    if not alerts:
        return {}
    rows = await tx.fetchall(
        "INSERT INTO alerts (device_id, resident_id, type, priority, state, open_key, raised_at, "
        "repeat_count, test, unregistered, clock_skew, data, updated_at) "
        "SELECT a.device_id, a.resident_id, a.type, a.priority, 'raised', a.open_key, a.raised_at, 0, "
        "a.test, a.unregistered, a.clock_skew, a.data, ? "
        "FROM unnest(?::text[], ?::text[], ?::text[], ?::int[], ?::text[], ?::float8[], ?::int[], "
        "?::int[], ?::int[], ?::text[]) WITH ORDINALITY AS a(device_id, resident_id, type, priority, "
        "open_key, raised_at, test, unregistered, clock_skew, data, n) ORDER BY a.n "
        "ON CONFLICT (open_key) DO NOTHING RETURNING *",
        now,
        [a.device_id for a in alerts],
        [a.resident_id for a in alerts],
        [a.type for a in alerts],
        [a.priority for a in alerts],
        [a.open_key for a in alerts],
        [a.raised_at for a in alerts],
        [a.test for a in alerts],
        [a.unregistered for a in alerts],
        [a.clock_skew for a in alerts],
        [_j(a.data) for a in alerts],
    )
    return {r["open_key"]: r for r in rows}


async def log_actions(tx: Tx, post: PostCommit, entries: Sequence[LogEntry]) -> None:
    """Write timeline entries in one statement, in order, and tell listeners of each change after the
    commit (as :func:`alarm_centre.store.tx.log_action` does for one)."""
    if not entries:
        return
    await tx.execute(
        "INSERT INTO alert_log (alert_id, at, action, actor, source, detail) "
        "SELECT e.alert_id, e.at, e.action, e.actor, e.source, e.detail "
        "FROM unnest(?::bigint[], ?::float8[], ?::text[], ?::text[], ?::text[], ?::text[]) "
        "WITH ORDINALITY AS e(alert_id, at, action, actor, source, detail, n) ORDER BY e.n",
        [int(e.alert["id"]) for e in entries],
        [e.at for e in entries],
        [e.action.value for e in entries],
        [e.actor for e in entries],
        [str(e.source) for e in entries],
        [_j(e.detail) for e in entries],
    )
    post.changes.extend(
        AlertChange(str(e.alert["id"]), e.action, int(e.alert["priority"]), e.state or e.alert["state"])
        for e in entries
    )


async def resident_units(tx: Tx, resident_ids: Sequence[str]) -> dict[str, Row]:
    """Each resident's first active unit (by when it was registered), in one statement."""
    rows = await tx.fetchall(
        "SELECT DISTINCT ON (resident_id) * FROM devices WHERE resident_id = ANY(?::text[]) "
        "AND status = 'active' AND kind = ANY(?::text[]) ORDER BY resident_id, created_at",
        list(resident_ids),
        list(UNIT_KINDS),
    )
    return {r["resident_id"]: r for r in rows}
